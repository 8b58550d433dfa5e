"""The mobilenetv3 supernet's weights: their layout (:func:`init_supernet`; every subnet's weights
are slices of the largest network's, the later blocks of a stage stacked along a leading axis) and
Once-for-All's channel sorting (:func:`sort_channels`). Its math is space.py's block function."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from search_spaces.mobilenetv3.config import MobileNetV3Config

#: top-level parameter keys of the stem block, and of the head
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
