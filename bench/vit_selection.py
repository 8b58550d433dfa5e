"""vit eval program: run-time subnet selection by ``lax.switch`` over static-shape variants (what
the vit space's supernet_apply does: per layer a switch over (embed, heads, mlp) plus an identity
branch for depth, inside one ``lax.scan``, the tokens zero-padded to the largest embed between layers) against masking (the largest width with the
inactive embed channels, heads and hidden units zeroed; LayerNorm over the active channels).
Prints JSON: compile seconds and median forward ms of the smallest, middle and largest subnet, per
formulation, and the largest logit difference between the two.

    .venv/bin/python bench/vit_selection.py --space vit --batch 64 --resolution 32
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from search_spaces import get_space
from search_spaces.plan import LN_EPS, attention
from search_spaces.vit import hidden_units, resized_pos


def patch_embed(cfg, w, b, x):
    """(B, R, R, C) -> (B, grid * grid, D) with a VALID stride-``patch`` conv."""
    z = lax.conv_general_dilated(x, w, (cfg.patch,) * 2, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    z = z + b
    return z.reshape(z.shape[0], -1, z.shape[-1])


def mask_arrays(space, arch) -> np.ndarray:
    """(1 + max_depth, 2) int32 for :func:`masked_apply`: row 0 is (embed index, depth), row 1 + i
    layer i's (heads index, mlp index), zeros beyond the depth."""
    g = space.to_genome(arch)
    out = np.zeros((1 + space.config.max_depth, 2), np.int32)
    out[0] = (g[1], arch.depth)
    out[1:, 0], out[1:, 1] = g[3::2], g[4::2]
    return out


def _masked_layer_norm(x, scale, bias, mask, d):
    """LayerNorm over the ``d`` active channels of ``x`` (zero elsewhere); zero outside them."""
    mean = jnp.sum(x, -1, keepdims=True) / d
    xc = (x - mean) * mask
    var = jnp.sum(jnp.square(xc), -1, keepdims=True) / d
    return (xc * (lax.rsqrt(var + LN_EPS) * scale) + bias) * mask


def _masked_layer(cfg, p, x, emask, d, hmask, mmask):
    """A layer at the largest width with inactive embed channels, heads and hidden units zeroed."""
    D, H, hd = cfg.max_embed, cfg.max_heads, cfg.head_dim
    y = _masked_layer_norm(x, p["ln1"]["scale"], p["ln1"]["bias"], emask, d)
    qkv = (y @ p["qkv"]["w"].reshape(D, 3 * H * hd) + p["qkv"]["b"].reshape(-1)).reshape(*y.shape[:-1], 3, H, hd)
    a = attention(qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :]) * hmask[:, None]
    o = a.reshape(*a.shape[:-2], H * hd) @ p["proj"]["w"].reshape(H * hd, D) + p["proj"]["b"]
    x = x + o * emask
    y = _masked_layer_norm(x, p["ln2"]["scale"], p["ln2"]["bias"], emask, d)
    y = jax.nn.gelu(y @ p["fc1"]["w"] + p["fc1"]["b"]) * mmask
    return x + (y @ p["fc2"]["w"] + p["fc2"]["b"]) * emask


def masked_apply(cfg, params, x, arch_arr):
    """The same function as vit.supernet_apply(mode="eval"), selected by masks (exact)."""
    assert x.shape[1] % cfg.patch == 0, (x.shape, cfg.patch)
    D, M = cfg.max_embed, cfg.max_hidden
    embeds = jnp.asarray(cfg.embed_choices, jnp.int32)
    hidden = jnp.asarray([[hidden_units(r, e) for r in cfg.mlp_choices] for e in cfg.embed_choices], jnp.int32)
    heads = jnp.asarray(cfg.heads_choices, jnp.int32)
    e_idx, depth = arch_arr[0, 0], arch_arr[0, 1]
    d = embeds[e_idx]
    emask = (jnp.arange(D) < d).astype(jnp.float32)
    df = d.astype(jnp.float32)

    z = patch_embed(cfg, params["patch"]["w"], params["patch"]["b"], x)
    cls = jnp.broadcast_to(params["cls"], (z.shape[0], 1, D))
    z = (jnp.concatenate([cls, z], axis=1) + resized_pos(cfg, params["pos"], x.shape[1] // cfg.patch)) * emask

    def body(z, inputs):
        p, i, genes = inputs
        hmask = (jnp.arange(cfg.max_heads) < heads[genes[0]]).astype(jnp.float32)
        mmask = (jnp.arange(M) < hidden[e_idx, genes[1]]).astype(jnp.float32)
        z = lax.cond(i < depth, lambda z: _masked_layer(cfg, p, z, emask, df, hmask, mmask), lambda z: z, z)
        return z, None

    z, _ = lax.scan(body, z, (params["layers"], jnp.arange(cfg.max_depth), arch_arr[1:]))
    cls = _masked_layer_norm(z[:, 0], params["norm"]["scale"], params["norm"]["bias"], emask, df)
    logits = cls @ params["classifier"]["w"] + params["classifier"]["b"]
    return logits


def _time(fn, *args, repeats):
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--space", default="vit")
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--resolution", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()
    opts = dict(in_channels=3, num_classes=10, resolutions=(args.resolution,))
    if args.width_mult != 1.0:
        opts["width_mult"] = args.width_mult
    space = get_space(args.space, **opts)
    params = space.init_supernet(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (args.batch, args.resolution, args.resolution, 3))
    middle = space.from_genome([len(g.choices) // 2 for g in space.genes])
    archs = {"smallest": space.smallest(), "middle": middle, "largest": space.largest()}
    out = {"space": args.space, "batch": args.batch, "resolution": args.resolution, "device": jax.devices()[0].device_kind}
    forms = {"mask": lambda p, x, a: masked_apply(space.config, p, x, a),
             "switch": lambda p, x, a: space.supernet_apply(p, None, x, a, mode="eval")}
    arrays = {"mask": lambda arch: mask_arrays(space, arch), "switch": space.arch_arrays}
    ref = {}
    for name, fn in forms.items():
        arr = jnp.asarray(arrays[name](archs["largest"]))
        t = time.perf_counter()
        compiled = jax.jit(fn).lower(params, x, arr).compile()
        out[f"{name}_compile_s"] = round(time.perf_counter() - t, 2)
        for which, arch in archs.items():
            arr = jnp.asarray(arrays[name](arch))
            out[f"{name}_{which}_ms"] = round(_time(compiled, params, x, arr, repeats=args.repeats), 2)
            logits = np.asarray(compiled(params, x, arr))
            if which in ref:
                out[f"max_diff_{which}"] = float(np.max(np.abs(logits - ref[which])))
            ref[which] = logits
    print(json.dumps(out))


if __name__ == "__main__":
    main()
