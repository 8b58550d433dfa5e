"""The vit supernet's math: parameter init, the static-width pieces, the run-time selection and
channel sorting.

The supernet (AutoFormer's weight entanglement): a patch-embedding conv, one embed dim ``d`` shared
by every layer (all weights sliced to their first ``d`` embed channels, LayerNorm over those ``d``),
per layer ``heads`` attention heads of a fixed head dim (q/k/v width ``heads * head_dim``, the
first heads' slices) and an MLP of ``round(ratio * d)`` hidden units (the first ones), the first
``depth`` layers, pre-norm blocks, a class token and a linear classifier on it.

Position embeddings are learned for the largest grid (``max(resolutions) // patch`` per side, plus
the class token's). A smaller resolution resizes the grid part bilinearly (no antialiasing, like
the image itself in :func:`search_spaces.layers.preprocess`), so each token keeps the embedding of
the same relative image position.

Run-time selection in :func:`supernet_apply` is a ``lax.switch`` over the static-shape pieces
(embed dim outside, (heads, mlp ratio) per layer inside one ``lax.scan``, an identity branch for
depth). Masking (the largest width with inactive channels, heads and hidden units zeroed, exact
LayerNorm over the active channels) compiled 3-4x faster (about 1 s against 3-4 s for vit at 32 px)
but ran every subnet at nearly the largest one's cost: per batch of 64, smallest subnet 65 ms
(switch) against 201 ms (masking), middle 171 against 248, largest 297 against 284 (2-core CPU under
load; bench/vit_selection.py, bench/RESULTS.md). Search evaluates many subnets, so the switch wins.

There is no BatchNorm: "calib" mode returns ``(logits, {})``.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from search_spaces.vit.config import ViTConfig, hidden_units

LN_EPS = 1e-6


# ----------------------------------------------------------------------------------------------
# Supernet parameters
# ----------------------------------------------------------------------------------------------
def _normal(key, shape, std):
    return jax.random.normal(key, shape, jnp.float32) * std


def init_supernet(cfg: ViTConfig, key: jax.Array) -> dict:
    """Parameters of the largest network; every subnet's weights are slices of these.

    Layers are stacked on a leading ``max_depth`` axis (one ``lax.scan`` body in the supernet).
    qkv is (embed, 3, heads, head_dim) and proj (heads, head_dim, embed), so a subnet's heads are
    plain leading slices.
    """
    D, H, hd, M, L = cfg.max_embed, cfg.max_heads, cfg.head_dim, cfg.max_hidden, cfg.max_depth
    p, g = cfg.patch, cfg.max_grid
    keys = jax.random.split(key, 8)
    lk = jax.random.split(keys[7], 4)
    return {
        "patch": {"w": _normal(keys[0], (p, p, cfg.in_channels, D), (p * p * cfg.in_channels) ** -0.5),
                  "b": jnp.zeros((D,), jnp.float32)},
        "cls": _normal(keys[1], (D,), 0.02),
        "pos": _normal(keys[2], (g * g + 1, D), 0.02),
        "layers": {
            "ln1": {"scale": jnp.ones((L, D)), "bias": jnp.zeros((L, D))},
            "qkv": {"w": _normal(lk[0], (L, D, 3, H, hd), D ** -0.5), "b": jnp.zeros((L, 3, H, hd))},
            "proj": {"w": _normal(lk[1], (L, H, hd, D), (H * hd) ** -0.5 * 0.5), "b": jnp.zeros((L, D))},
            "ln2": {"scale": jnp.ones((L, D)), "bias": jnp.zeros((L, D))},
            "fc1": {"w": _normal(lk[2], (L, D, M), D ** -0.5), "b": jnp.zeros((L, M))},
            "fc2": {"w": _normal(lk[3], (L, M, D), M ** -0.5 * 0.5), "b": jnp.zeros((L, D))},
        },
        "norm": {"scale": jnp.ones((D,)), "bias": jnp.zeros((D,))},
        "classifier": {"w": _normal(keys[3], (D, cfg.num_classes), D ** -0.5 * 0.1),
                       "b": jnp.zeros((cfg.num_classes,), jnp.float32)},
    }


# ----------------------------------------------------------------------------------------------
# Static-shape pieces: the composed trainer's variants, and the arithmetic the static model repeats
# ----------------------------------------------------------------------------------------------
def layer_norm(x, scale, bias):
    """LayerNorm over the last axis, in nnx.LayerNorm's operation order (use_fast_variance=False)."""
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
    return (x - mean) * (lax.rsqrt(var + LN_EPS) * scale) + bias


def resized_pos(cfg: ViTConfig, pos, grid: int):
    """Position embeddings (1 + grid * grid, C) from the largest grid's (1 + G * G, C)."""
    if grid == cfg.max_grid:
        return pos
    big = pos[1:].reshape(cfg.max_grid, cfg.max_grid, -1)  # (G, G, C)
    small = jax.image.resize(big, (grid, grid, big.shape[-1]), "bilinear", antialias=False)
    return jnp.concatenate([pos[:1], small.reshape(grid * grid, -1)])


def patch_embed(cfg: ViTConfig, w, b, x):
    """(B, R, R, C) -> (B, grid * grid, d) with a VALID stride-``patch`` conv."""
    z = lax.conv_general_dilated(x, w, (cfg.patch,) * 2, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    z = z + b
    return z.reshape(z.shape[0], -1, z.shape[-1])  # (B, N, d)


def stem_static(cfg: ViTConfig, p, x, d: int):
    """Patch embedding, class token and position embeddings at static embed ``d``: (B, 1 + N, d)."""
    z = patch_embed(cfg, p["patch"]["w"][..., :d], p["patch"]["b"][:d], x)
    cls = jnp.broadcast_to(p["cls"][:d], (z.shape[0], 1, d))
    pos = resized_pos(cfg, p["pos"], x.shape[1] // cfg.patch)[:, :d]
    return jnp.concatenate([cls, z], axis=1) + pos


def attention(q, k, v):
    """(B, N, h, hd) each -> (B, N, h, hd)."""
    q = q * (q.shape[-1] ** -0.5)
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k)
    return jnp.einsum("bhqk,bkhc->bqhc", jax.nn.softmax(logits, axis=-1), v)


def layer_static(cfg: ViTConfig, p, x, d: int, heads: int, ratio: float):
    """One pre-norm transformer layer at static (embed, heads, mlp ratio); ``p`` is one layer's
    full-size parameters."""
    hd, m = cfg.head_dim, hidden_units(ratio, d)
    q = heads * hd
    y = layer_norm(x, p["ln1"]["scale"][:d], p["ln1"]["bias"][:d])
    wqkv = p["qkv"]["w"][:d, :, :heads].reshape(d, 3 * q)
    qkv = (y @ wqkv + p["qkv"]["b"][:, :heads].reshape(3 * q)).reshape(*y.shape[:-1], 3, heads, hd)
    a = attention(qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :])
    x = x + (a.reshape(*a.shape[:-2], q) @ p["proj"]["w"][:heads, :, :d].reshape(q, d) + p["proj"]["b"][:d])
    y = layer_norm(x, p["ln2"]["scale"][:d], p["ln2"]["bias"][:d])
    y = jax.nn.gelu(y @ p["fc1"]["w"][:d, :m] + p["fc1"]["b"][:m])
    return x + (y @ p["fc2"]["w"][:m, :d] + p["fc2"]["b"][:d])


def head_static(p, z, d: int):
    """Final LayerNorm and the classifier on the class token."""
    cls = layer_norm(z[:, 0], p["norm"]["scale"][:d], p["norm"]["bias"][:d])
    return cls @ p["classifier"]["w"][:d] + p["classifier"]["b"]


# ----------------------------------------------------------------------------------------------
# Supernet forward with run-time selection (lax.switch over the static pieces)
# ----------------------------------------------------------------------------------------------
def supernet_apply(cfg: ViTConfig, params, stats, x, arch_arr, *, mode: str):
    """Forward of the subnet selected by ``arch_arr`` (see :meth:`search_spaces.vit.ViTSpace.arch_arrays`).

    One program for every subnet: an outer ``lax.switch`` over the embed dim, and in one
    ``lax.scan`` over the stacked layers a ``lax.switch`` over (heads, mlp ratio) with an identity
    branch for layers beyond the depth. Every branch is the static piece the trainer and the static
    subnet compute, so a subnet runs its own shapes. Training differentiates this only as the
    trainer's reference (eagerly): plain switch VJPs are slow on XLA CPU, and the CPU trainer
    composes the pieces instead (:class:`search_spaces.vit.ComposedViT`).

    Args:
      params: from :func:`init_supernet`.
      stats: unused (no BatchNorm).
      x: (B, R, R, C) preprocessed images, R a multiple of the patch size.
      mode: "train", "calib" or "eval" (the same function; "calib" also returns empty stats).

    Returns:
      logits (B, num_classes); in "calib" mode (logits, {}).
    """
    assert mode in ("train", "calib", "eval"), mode
    assert x.shape[1] % cfg.patch == 0, (x.shape, cfg.patch)
    nm = len(cfg.mlp_choices)
    skip = len(cfg.heads_choices) * nm  # the identity branch

    def net(d: int):
        branches = [partial(layer_static, cfg, d=d, heads=h, ratio=m)
                    for h in cfg.heads_choices for m in cfg.mlp_choices] + [lambda p, z: z]

        def run(params, x, arch_arr):
            def body(z, inputs):
                p, i, genes = inputs
                index = jnp.where(i < arch_arr[0, 1], genes[0] * nm + genes[1], skip)
                return lax.switch(index, branches, p, z), None

            z = stem_static(cfg, params, x, d)
            z, _ = lax.scan(body, z, (params["layers"], jnp.arange(cfg.max_depth), arch_arr[1:]))
            return head_static(params, z, d)

        return run

    logits = lax.switch(arch_arr[0, 0], [net(d) for d in cfg.embed_choices], params, x, arch_arr)
    return (logits, {}) if mode == "calib" else logits


# ----------------------------------------------------------------------------------------------
# Head and hidden-unit importance
# ----------------------------------------------------------------------------------------------
def _sort_layer(cfg: ViTConfig, p: dict) -> dict:
    """Reorders one layer's heads by the L1 norm of their projection rows and its MLP hidden units by
    the L1 norm of their fc2 rows (most important first). The largest network's function is
    unchanged (heads and hidden units are each summed over); narrower subnets keep the important
    ones. Hidden units are ranked among the first ``hidden(max ratio, max embed)``; the same order
    then serves every embed dim (slices of the first units)."""
    hperm = jnp.argsort(-jnp.sum(jnp.abs(p["proj"]["w"]), axis=(1, 2)))  # (H,)
    mperm = jnp.argsort(-jnp.sum(jnp.abs(p["fc2"]["w"]), axis=1))  # (M,)
    q = dict(p)
    q["qkv"] = {"w": p["qkv"]["w"][:, :, hperm], "b": p["qkv"]["b"][:, hperm]}
    q["proj"] = {"w": p["proj"]["w"][hperm], "b": p["proj"]["b"]}
    q["fc1"] = {"w": p["fc1"]["w"][:, mperm], "b": p["fc1"]["b"][mperm]}
    q["fc2"] = {"w": p["fc2"]["w"][mperm], "b": p["fc2"]["b"]}
    return q


def sort_channels(cfg: ViTConfig, params) -> dict:
    return {**params, "layers": jax.vmap(lambda p: _sort_layer(cfg, p))(params["layers"])}
