"""The mobilenetv3 supernet's math: pure functions over one parameter pytree.

Every subnet's weights are slices of the largest network's (:func:`init_supernet`). The elastic
blocks go through ``lax.switch`` / ``lax.scan`` / ``custom_vjp``, which want pure functions, and
the train steps differentiate them with ``jax.grad``. :func:`block_apply` is one block at static
(kernel, expand); the elastic supernet (:func:`supernet_apply`), the composed trainer's pieces
(trainer.py) and the one-subnet forward (:func:`subnet_apply`) are all built from it and from
:func:`stem_apply` / :func:`head_apply`.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from search_spaces.layers import (
    ACTIVATIONS,
    batch_norm,
    centre_kernel,
    conv_padding,
    depthwise_conv,
    hard_sigmoid,
    hard_swish,
    init_stats,
    switch_vjp,
)
from search_spaces.mobilenetv3.config import MobileNetV3Arch, MobileNetV3Config

#: top-level parameter keys that :func:`stem_apply` reads, and :func:`head_apply`
STEM_KEYS = ("stem", "first")
HEAD_KEYS = ("head", "feature", "classifier")


# ----------------------------------------------------------------------------------------------
# Supernet parameters
# ----------------------------------------------------------------------------------------------
def _he(key, shape, fan_in, dtype=jnp.float32):
    return jax.random.normal(key, shape, dtype) * np.sqrt(2.0 / fan_in)


def _bn_params(c):
    return {"scale": jnp.ones((c,), jnp.float32), "bias": jnp.zeros((c,), jnp.float32)}


def _block_params(cfg: MobileNetV3Config, key, cin: int, cout: int, se: bool) -> dict:
    hmax = cin * max(cfg.expand_choices)
    kmax = max(cfg.kernel_choices)
    keys = jax.random.split(key, 5)
    p = {
        "expand": _he(keys[0], (cin, hmax), cin),
        "bn1": _bn_params(hmax),
        "dw": _he(keys[1], (kmax, kmax, hmax), kmax * kmax),
        "bn2": _bn_params(hmax),
        "proj": _he(keys[2], (hmax, cout), hmax) * 0.5,
        "bn3": _bn_params(cout),
    }
    for k in sorted(cfg.kernel_choices)[:-1]:
        p[f"tf{k}"] = jnp.eye(k * k, dtype=jnp.float32)
    if se:
        mmax = cfg.se_mid(hmax)
        p["se"] = {
            "rw": _he(keys[3], (hmax, mmax), hmax),
            "rb": jnp.zeros((mmax,), jnp.float32),
            "ew": _he(keys[4], (mmax, hmax), mmax),
            "eb": jnp.zeros((hmax,), jnp.float32),
        }
    return p


def init_supernet(cfg: MobileNetV3Config, key: jax.Array) -> dict:
    """Parameters of the largest network; every subnet's weights are slices of these."""
    keys = jax.random.split(key, 6 + cfg.num_stages)
    c0, c1 = cfg.stem_channels, cfg.first_channels
    params = {
        "stem": {"w": _he(keys[0], (3, 3, cfg.in_channels, c0), 9 * cfg.in_channels), "bn": _bn_params(c0)},
        "first": {"dw": _he(keys[1], (3, 3, c0), 9), "bn1": _bn_params(c0),
                  "proj": _he(keys[2], (c0, c1), c0), "bn2": _bn_params(c1)},
        "stages": [],
        "head": {"w": _he(keys[3], (cfg.stage_channels[-1], cfg.head_channels), cfg.stage_channels[-1]),
                 "bn": _bn_params(cfg.head_channels)},
        "feature": {"w": _he(keys[4], (cfg.head_channels, cfg.feature_channels), cfg.head_channels),
                    **({"b": jnp.zeros((cfg.feature_channels,), jnp.float32)} if cfg.feature_bias else {})},
        "classifier": {"w": _he(keys[5], (cfg.feature_channels, cfg.num_classes), cfg.feature_channels) * 0.1,
                       "b": jnp.zeros((cfg.num_classes,), jnp.float32)},
    }
    for s in range(cfg.num_stages):
        bkeys = jax.random.split(keys[6 + s], cfg.max_depth)
        cin, cout, _ = cfg.block_io(s, 0)
        first = _block_params(cfg, bkeys[0], cin, cout, cfg.stage_se[s])
        rest = [_block_params(cfg, k, cout, cout, cfg.stage_se[s]) for k in bkeys[1:]]
        params["stages"].append({"first": first, "rest": jax.tree.map(lambda *a: jnp.stack(a), *rest)})
    return params


# ----------------------------------------------------------------------------------------------
# Supernet forward
# ----------------------------------------------------------------------------------------------
def block_apply(cfg, p, s, x, *, cin, cout, stride, k, e, act, se, mode):
    """One inverted-residual block at static (kernel, expand). Returns (y, calibration stats)."""
    h = cin * e
    act_fn = ACTIVATIONS[act]
    s = s if s is not None else {"bn1": None, "bn2": None, "bn3": None}  # train mode reads no stats
    stats = {}
    z = jnp.einsum("bhwc,cd->bhwd", x, p["expand"][:, :h])
    z, stats["bn1"] = batch_norm(z, p["bn1"], s["bn1"], h, mode)
    z = act_fn(z)
    tf = {name: p[name] for name in p if name.startswith("tf")}
    w = centre_kernel(p["dw"][:, :, :h], tf, k, cfg.kernel_choices)
    z = depthwise_conv(z, w, stride, cfg.symmetric)
    z, stats["bn2"] = batch_norm(z, p["bn2"], s["bn2"], h, mode)
    z = act_fn(z)
    if se:
        m = cfg.se_mid(h)
        pooled = jnp.mean(z, axis=(1, 2))  # (B, h)
        r = jax.nn.relu(pooled @ p["se"]["rw"][:h, :m] + p["se"]["rb"][:m])
        gate = hard_sigmoid(r @ p["se"]["ew"][:m, :h] + p["se"]["eb"][:h])
        z = z * gate[:, None, None, :]
    y = jnp.einsum("bhwc,cd->bhwd", z, p["proj"][:h, :])
    y, stats["bn3"] = batch_norm(y, p["bn3"], s["bn3"], cout, mode)
    if stride == 1 and cin == cout:
        y = y + x
    return y, stats


def block_at(cfg: MobileNetV3Config, stage: int, first: bool, k: int, e: int, mode: str):
    """:func:`block_apply` of a block of ``stage`` (its first block, or a later one) at static
    (kernel ``k``, expand ``e``), as ``fn(p, s, x) -> (y, calibration stats)``."""
    cin, cout, stride = cfg.block_io(stage, 0 if first else 1)
    return partial(block_apply, cfg, cin=cin, cout=cout, stride=stride, k=k, e=e,
                   act=cfg.stage_acts[stage], se=cfg.stage_se[stage], mode=mode)


def block_params(tree, stage: int, block: int):
    """The subtree of block ``block`` of ``stage`` in a params or stats pytree (later blocks of a
    stage are stacked along a leading axis)."""
    st = tree["stages"][stage]
    if block == 0:
        return st["first"]
    return jax.tree.map(lambda a: a[block - 1], st["rest"])


def _zero_stats(s):
    return jax.tree.map(jnp.zeros_like, s)


def _elastic_block(cfg, p, s, x, index, *, stage: int, first: bool, mode: str, train_vjp: bool):
    """Runs the branch chosen by the run-time ``index`` (``num_branches`` means: skip the block)."""
    ne = len(cfg.expand_choices)
    branches = []
    for b in range(cfg.num_branches):
        k, e = cfg.kernel_choices[b // ne], cfg.expand_choices[b % ne]
        branches.append(block_at(cfg, stage, first, k, e, mode))
    if not first:  # elastic depth: blocks after the first of a stage may be skipped
        branches.append(lambda p, s, x: (x, _zero_stats(s) if mode == "calib" else None))

    if mode == "train" and train_vjp:
        # Training normalises with batch statistics, so the branches need no `s` (and a custom_vjp
        # must not close over traced values).
        ys = switch_vjp(index, [lambda p, x, f=f: f(p, None, x)[0] for f in branches], p, x)
        return ys, None
    if mode == "calib":
        return lax.switch(index, branches, p, s, x)
    y = lax.switch(index, [lambda p, s, x, f=f: f(p, s, x)[0] for f in branches], p, s, x)
    return y, None


def stem_apply(cfg: MobileNetV3Config, params, stats, x, mode: str):
    """The fixed stem conv and first (expand-1) block. Returns (z, {"stem", "first"} BN stats).

    ``stats`` may be None outside "eval" mode (batch statistics are used)."""
    s = stats or {"stem": {"bn": None}, "first": {"bn1": None, "bn2": None}}
    p = params["stem"]
    pads = [conv_padding(x.shape[axis], 3, cfg.stem_stride, cfg.symmetric)[:2] for axis in (1, 2)]
    z = lax.conv_general_dilated(x, p["w"], (cfg.stem_stride,) * 2, pads,
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    z, bn = batch_norm(z, p["bn"], s["stem"]["bn"], cfg.stem_channels, mode)
    z = hard_swish(z)
    p, sf = params["first"], s["first"]
    c0, c1 = cfg.stem_channels, cfg.first_channels
    y = depthwise_conv(z, p["dw"], 1, cfg.symmetric)
    y, bn1 = batch_norm(y, p["bn1"], sf["bn1"], c0, mode)
    y = jax.nn.relu(y)
    y = jnp.einsum("bhwc,cd->bhwd", y, p["proj"])
    y, bn2 = batch_norm(y, p["bn2"], sf["bn2"], c1, mode)
    z = y + z if c0 == c1 else y
    return z, {"stem": {"bn": bn}, "first": {"bn1": bn1, "bn2": bn2}}


def head_apply(cfg: MobileNetV3Config, params, stats, z, mode: str):
    """Final 1x1 conv, pooling, feature layer and classifier. Returns (logits, {"bn"} stats)."""
    p, s = params["head"], (stats["head"] if stats is not None else {"bn": None})
    z = jnp.einsum("bhwc,cd->bhwd", z, p["w"])
    z, bn = batch_norm(z, p["bn"], s["bn"], cfg.head_channels, mode)
    z = hard_swish(z)
    z = jnp.mean(z, axis=(1, 2))  # (B, head)
    z = z @ params["feature"]["w"]
    z = hard_swish(z + params["feature"]["b"] if "b" in params["feature"] else z)
    return z @ params["classifier"]["w"] + params["classifier"]["b"], {"bn": bn}


def supernet_apply(cfg: MobileNetV3Config, params, stats, x, arch_arr, *, mode: str, train_vjp: bool = True):
    """Forward of the subnet selected by ``arch_arr`` (stages, max_depth) int32 branch indices.

    Args:
      params: the supernet's parameters (:func:`init_supernet`).
      stats: BatchNorm statistics (:func:`search_spaces.layers.init_stats`), read in "eval" mode;
        None or a placeholder in the other modes.
      x: (B, R, R, C) images after :func:`search_spaces.layers.preprocess`.
      mode: "train" (batch statistics, one-branch custom VJP unless ``train_vjp`` is False),
        "calib" (batch statistics, also returned) or "eval" (``stats``).

    Returns:
      (B, num_classes) logits; in "calib" mode, (logits, the batch statistics pytree).
    """
    assert mode in ("train", "calib", "eval"), mode
    if stats is None:
        stats = init_stats(params)
    new = {}
    z, stem_stats = stem_apply(cfg, params, stats, x, mode)
    new.update(stem_stats)

    new["stages"] = []
    for st in range(cfg.num_stages):
        ps, ss = params["stages"][st], stats["stages"][st]
        z, first_stats = _elastic_block(cfg, ps["first"], ss["first"], z, arch_arr[st, 0],
                                        stage=st, first=True, mode=mode, train_vjp=train_vjp)

        def body(carry, inputs, st=st):
            p_i, s_i, idx = inputs
            y, st_i = _elastic_block(cfg, p_i, s_i, carry, idx, stage=st, first=False, mode=mode,
                                     train_vjp=train_vjp)
            return y, st_i

        # Blocks after the first share shapes: one traced body per stage keeps compile time down.
        z, rest_stats = lax.scan(body, z, (ps["rest"], ss["rest"], arch_arr[st, 1:]))
        new["stages"].append({"first": first_stats, "rest": rest_stats})

    logits, new["head"] = head_apply(cfg, params, stats, z, mode)
    if mode == "calib":
        return logits, new
    return logits


def subnet_apply(cfg: MobileNetV3Config, params, x, arch: MobileNetV3Arch):
    """Training-mode logits of ``arch`` at its own static shapes: stem, its active blocks in order
    (no switch), head. The composed trainer runs the same pieces one jitted call each."""
    z = stem_apply(cfg, params, None, x, "train")[0]
    for s, blocks in enumerate(arch.stages):
        for b, (k, e) in enumerate(blocks):
            z = block_at(cfg, s, b == 0, k, e, "train")(block_params(params, s, b), None, z)[0]
    return head_apply(cfg, params, None, z, "train")[0]


# ----------------------------------------------------------------------------------------------
# Channel importance (OFA elastic width)
# ----------------------------------------------------------------------------------------------
def _sort_block(p: dict) -> dict:
    """Reorders a block's hidden channels by the L1 norm of the projection rows (most important
    first), and SE's middle channels by the L1 norm of their reduce weights. The largest network's
    function is unchanged; smaller widths then keep the most important channels."""
    importance = jnp.sum(jnp.abs(p["proj"]), axis=1)  # (hmax,)
    perm = jnp.argsort(-importance)
    q = dict(p)
    q["expand"] = p["expand"][:, perm]
    q["bn1"] = {k: v[perm] for k, v in p["bn1"].items()}
    q["dw"] = p["dw"][:, :, perm]
    q["bn2"] = {k: v[perm] for k, v in p["bn2"].items()}
    q["proj"] = p["proj"][perm, :]
    if "se" in p:
        se = p["se"]
        rw, eb, ew = se["rw"][perm, :], se["eb"][perm], se["ew"][:, perm]
        mperm = jnp.argsort(-jnp.sum(jnp.abs(rw), axis=0))
        q["se"] = {"rw": rw[:, mperm], "rb": se["rb"][mperm], "ew": ew[mperm, :], "eb": eb}
    return q


def sort_channels(cfg: MobileNetV3Config, params) -> dict:
    """Every block's channels in importance order (see :func:`_sort_block`); same pytree structure."""
    out = dict(params)
    out["stages"] = [
        {"first": _sort_block(st["first"]), "rest": jax.vmap(_sort_block)(st["rest"])}
        for st in params["stages"]
    ]
    return out
