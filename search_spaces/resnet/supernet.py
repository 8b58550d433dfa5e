"""The resnet supernet's weights: their layout (:func:`init_supernet`; a stage's later blocks
stacked along a leading axis) and OFA's channel sorting by importance (:func:`sort_channels`).
Its math is space.py's block function."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from search_spaces.resnet.config import ResNetConfig


class _He(NamedTuple):
    """A He-normal initialised weight to draw: its shape and fan-in."""

    shape: tuple[int, ...]
    fan_in: int


def _block_params(cin: int, cout: int, mid: int, shortcut: bool, stack: tuple[int, ...] = ()) -> dict:
    """One block's parameters (``stack``: leading axes of stacked blocks), weights as :class:`_He`."""

    def bn(c, scale=1.0):
        return {"scale": jnp.full(stack + (c,), scale, jnp.float32), "bias": jnp.zeros(stack + (c,), jnp.float32)}

    p = {
        "conv1": _He(stack + (cin, mid), cin), "bn1": bn(mid),
        "conv2": _He(stack + (3, 3, mid, mid), 9 * mid), "bn2": bn(mid),
        # OFA's zero_last_gamma: each residual branch starts at zero, so every block at the identity
        "conv3": _He(stack + (mid, cout), mid), "bn3": bn(cout, 0.0),
    }
    if shortcut:
        p["down"], p["bn_down"] = _He(stack + (cin, cout), cin), bn(cout)
    return p


def init_supernet(cfg: ResNetConfig, key: jax.Array) -> dict:
    """Parameters of the largest network; every subnet's weights are slices of these."""
    c0 = cfg.stem_channels

    def conv_bn(cin, cout):
        return {"w": _He((3, 3, cin, cout), 9 * cin),
                "bn": {"scale": jnp.ones((cout,), jnp.float32), "bias": jnp.zeros((cout,), jnp.float32)}}

    spec = {
        "stem": conv_bn(cfg.in_channels, c0),
        "stages": [],
        "classifier": {"w": _He((cfg.stage_channels[-1], cfg.num_classes), cfg.stage_channels[-1] * 100),
                       "b": jnp.zeros((cfg.num_classes,), jnp.float32)},  # fan-in x 100: weights x 0.1
    }
    if cfg.ofa_imagenet:  # OFA's input stem: to the middle width, the residual conv, to the stem width
        m = cfg.stem_mid(100)
        spec["stem"], spec["stem_res"], spec["stem_out"] = conv_bn(cfg.in_channels, m), conv_bn(m, m), conv_bn(m, c0)
    for s in range(cfg.num_stages):
        cin, cout, mid = cfg.in_channels_of(s), cfg.stage_channels[s], cfg.max_mid(s)
        spec["stages"].append({"first": _block_params(cin, cout, mid, True),
                               "rest": _block_params(cout, cout, mid, False, (max(cfg.depth_choices(s)) - 1,))})
    # One normal draw carved into every weight: a separate draw per weight makes XLA compile one
    # threefry per shape (~20x slower to initialise the tiny space on a 2-core CPU).
    leaves, tree = jax.tree.flatten(spec, is_leaf=lambda n: isinstance(n, _He))
    sizes = [math.prod(w.shape) for w in leaves if isinstance(w, _He)]
    flat = jax.random.normal(key, (sum(sizes),), jnp.float32)
    out, offset = [], 0
    for w in leaves:
        if isinstance(w, _He):
            n = math.prod(w.shape)
            w = flat[offset : offset + n].reshape(w.shape) * np.sqrt(2.0 / w.fan_in)
            offset += n
        out.append(w)
    return jax.tree.unflatten(tree, out)


# --- channel importance (OFA elastic width) ---------------------------------------------------
def _l1_rows(*weights) -> jax.Array:
    """Sum of |w| over all axes but the first, over several weights with equal first axes."""
    return sum(jnp.sum(jnp.abs(w).reshape(w.shape[0], -1), axis=1) for w in weights)


def _take_bn(bn: dict, perm) -> dict:
    return {k: v[..., perm] for k, v in bn.items()}


def _sort_mid(p: dict) -> dict:
    """Middle channels of one block, most important first: conv2's outputs by the L1 norm of the
    conv3 rows that read them, then conv2's inputs (conv1's outputs) by the L1 norm of conv2's
    weights reading them (OFA's ``re_organize_middle_weights``)."""
    q = dict(p)
    out = jnp.argsort(-_l1_rows(p["conv3"]))
    q["conv3"], q["bn2"] = p["conv3"][out, :], _take_bn(p["bn2"], out)
    conv2 = p["conv2"][..., out]
    inp = jnp.argsort(-_l1_rows(jnp.moveaxis(conv2, 2, 0)))
    q["conv2"], q["conv1"], q["bn1"] = conv2[:, :, inp, :], p["conv1"][:, inp], _take_bn(p["bn1"], inp)
    return q


def sort_channels(cfg: ResNetConfig, params) -> dict:
    """Reorders channels by importance so that narrower subnets keep the most important ones.

    A stage's (or the stem's) output channels are ranked by the L1 norm of the weights that read
    them (the following 1x1 convs and shortcut, or the classifier) and permuted consistently in
    their producers and readers; then each block's middle channels (:func:`_sort_mid`). The largest
    network's function is unchanged.
    """
    # the stage-1 input's producer: the stem conv, or OFA's last stem conv (its middle width unsorted)
    producer = "stem_out" if cfg.ofa_imagenet else "stem"
    stem = dict(params[producer])
    stages = [{"first": dict(st["first"]), "rest": dict(st["rest"])} for st in params["stages"]]
    classifier = dict(params["classifier"])

    # the stem's outputs are read by stage 1's first block
    first = stages[0]["first"]
    perm = jnp.argsort(-_l1_rows(first["conv1"], first["down"]))
    stem["w"], stem["bn"] = params[producer]["w"][..., perm], _take_bn(params[producer]["bn"], perm)
    first["conv1"], first["down"] = first["conv1"][perm], first["down"][perm]
    for s in range(cfg.num_stages):
        first, rest = stages[s]["first"], stages[s]["rest"]
        readers = [jnp.moveaxis(rest["conv1"], 1, 0)]  # (C, n, mid)
        if s + 1 < cfg.num_stages:
            nxt = stages[s + 1]["first"]
            readers += [nxt["conv1"], nxt["down"]]
        else:
            readers.append(classifier["w"])
        perm = jnp.argsort(-_l1_rows(*readers))
        first["conv3"], first["bn3"] = first["conv3"][:, perm], _take_bn(first["bn3"], perm)
        first["down"], first["bn_down"] = first["down"][:, perm], _take_bn(first["bn_down"], perm)
        rest["conv1"], rest["conv3"] = rest["conv1"][:, perm, :], rest["conv3"][:, :, perm]
        rest["bn3"] = _take_bn(rest["bn3"], perm)
        if s + 1 < cfg.num_stages:
            nxt["conv1"], nxt["down"] = nxt["conv1"][perm], nxt["down"][perm]
        else:
            classifier["w"] = classifier["w"][perm]
    stages = [{"first": _sort_mid(st["first"]), "rest": jax.vmap(_sort_mid)(st["rest"])} for st in stages]
    return {**params, producer: stem, "stages": stages, "classifier": classifier}

