"""The resnet supernet: pure functions over one parameter pytree (init, bottleneck math, elastic
switch blocks, the forward pass) and OFA's channel sorting by importance.

Between blocks the supernet carries activations at the stage's largest width, zero beyond the
active channels: a block reads its input at full width (the zero channels add exact zeros), so its
``lax.switch`` only branches over (out width, middle width).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from search_spaces.layers import batch_norm, init_stats, switch_vjp
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
    spec = {
        "stem": {"w": _He((3, 3, cfg.in_channels, c0), 9 * cfg.in_channels),
                 "bn": {"scale": jnp.ones((c0,), jnp.float32), "bias": jnp.zeros((c0,), jnp.float32)}},
        "stages": [],
        "classifier": {"w": _He((cfg.stage_channels[-1], cfg.num_classes), cfg.stage_channels[-1] * 100),
                       "b": jnp.zeros((cfg.num_classes,), jnp.float32)},  # fan-in x 100: weights x 0.1
    }
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


def _conv3x3(x, w, stride: int):
    return lax.conv_general_dilated(x, w, (stride, stride), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))


def block_apply(p, s, x, *, cout: int, mid: int, stride: int, first: bool, mode: str):
    """One bottleneck block at static (out, middle) widths. Returns (y, calibration stats).

    ``x`` may carry more channels than the active input width if the extra ones are zero (the
    supernet's padded activations): the 1x1 convs read as many weight rows as ``x`` has channels.
    """
    s = s if s is not None else {"bn1": None, "bn2": None, "bn3": None, "bn_down": None}
    cin = x.shape[-1]
    stats = {}
    z = jnp.einsum("bhwc,cd->bhwd", x, p["conv1"][:cin, :mid])
    z, stats["bn1"] = batch_norm(z, p["bn1"], s["bn1"], mid, mode)
    z = _conv3x3(jax.nn.relu(z), p["conv2"][:, :, :mid, :mid], stride)
    z, stats["bn2"] = batch_norm(z, p["bn2"], s["bn2"], mid, mode)
    y = jnp.einsum("bhwc,cd->bhwd", jax.nn.relu(z), p["conv3"][:mid, :cout])
    y, stats["bn3"] = batch_norm(y, p["bn3"], s["bn3"], cout, mode)
    if first:
        sc = x[:, ::stride, ::stride, :]  # = a 1x1 'SAME' conv at this stride
        sc = jnp.einsum("bhwc,cd->bhwd", sc, p["down"][:cin, :cout])
        sc, stats["bn_down"] = batch_norm(sc, p["bn_down"], s["bn_down"], cout, mode)
    else:
        sc = x[..., :cout]
    return jax.nn.relu(y + sc), stats


def stem_apply(cfg: ResNetConfig, p, s, x, c0: int, mode: str):
    """The 3x3 stem conv at ``c0`` output channels. Returns (z, {"bn"} calibration stats)."""
    z = lax.conv_general_dilated(x, p["w"][..., :c0], (cfg.stem_stride,) * 2, "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    z, bn = batch_norm(z, p["bn"], s["bn"] if s is not None else None, c0, mode)
    return jax.nn.relu(z), {"bn": bn}


def head_apply(p, z):
    """Global average pooling and the classifier (reads as many rows as ``z`` has channels)."""
    z = jnp.mean(z, axis=(1, 2))  # (B, C)
    return z @ p["w"][: z.shape[-1]] + p["b"]


def _pad(y, full: int):
    return jnp.pad(y, ((0, 0),) * (y.ndim - 1) + ((0, full - y.shape[-1]),))


def _zero_stats(s):
    return jax.tree.map(jnp.zeros_like, s)


def _switch(index, branches, p, s, x, mode: str):
    """Runs ``branches[index](p, s, x) -> (y, stats)``; the custom VJP in "train" mode."""
    if mode == "train":
        # batch statistics in training: the branches read no `s` (a custom_vjp must not close
        # over traced values)
        return switch_vjp(index, [lambda p, x, f=f: f(p, None, x)[0] for f in branches], p, x), None
    if mode == "calib":
        return lax.switch(index, branches, p, s, x)
    return lax.switch(index, [lambda p, s, x, f=f: f(p, s, x)[0] for f in branches], p, s, x), None


def _elastic_block(cfg: ResNetConfig, p, s, x, index, *, stage: int, first: bool, mode: str):
    """The branch of the run-time ``index`` (``len(branches)`` means: skip the block); output
    zero-padded to the stage's largest width."""
    full = cfg.stage_channels[stage]
    stride = cfg.stage_strides[stage] if first else 1

    def run(cout, mid):
        def f(p, s, x):
            y, st = block_apply(p, s, x, cout=cout, mid=mid, stride=stride, first=first, mode=mode)
            return _pad(y, full), st
        return f

    branches = [run(cout, mid) for cout, mid in cfg.branches(stage)]
    if not first:  # elastic depth: blocks after the first of a stage may be skipped
        branches.append(lambda p, s, x: (x, _zero_stats(s) if mode == "calib" else None))
    return _switch(index, branches, p, s, x, mode)


def supernet_apply(cfg: ResNetConfig, params, stats, x, arch_arr, *, mode: str):
    """Forward of the subnet selected by ``arch_arr`` (see :meth:`ResNetSpace.arch_arrays`), with
    the modes and results of ``SupernetSpace.supernet_apply``.

    ``params`` come from :func:`init_supernet`; ``stats`` (read in "eval" mode only) are like
    ``init_stats(params)`` and may be None otherwise. The "train" mode runs each switch through its
    custom VJP.
    """
    assert mode in ("train", "calib", "eval"), mode
    if stats is None:
        stats = init_stats(params)

    def stem_branch(c0):
        def f(p, s, x):
            z, st = stem_apply(cfg, p, s, x, c0, mode)
            return _pad(z, cfg.stem_channels), st
        return f

    new = {}
    z, new["stem"] = _switch(arch_arr[0, 0], [stem_branch(cfg.stem_width(w)) for w in cfg.width_choices],
                             params["stem"], stats["stem"], x, mode)
    new["stages"] = []
    for st in range(cfg.num_stages):
        ps, ss = params["stages"][st], stats["stages"][st]
        row = arch_arr[1 + st]
        z, first_stats = _elastic_block(cfg, ps["first"], ss["first"], z, row[0], stage=st, first=True, mode=mode)

        def body(carry, inputs, st=st):
            p_i, s_i, idx = inputs
            return _elastic_block(cfg, p_i, s_i, carry, idx, stage=st, first=False, mode=mode)

        # blocks after the first share shapes: one traced body per stage keeps compile time down
        depth = max(cfg.depth_choices(st))
        z, rest_stats = lax.scan(body, z, (ps["rest"], ss["rest"], row[1:depth]))
        new["stages"].append({"first": first_stats, "rest": rest_stats})
    logits = head_apply(params["classifier"], z)
    if mode == "calib":
        return logits, new
    return logits


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
    stem = dict(params["stem"])
    stages = [{"first": dict(st["first"]), "rest": dict(st["rest"])} for st in params["stages"]]
    classifier = dict(params["classifier"])

    # the stem's outputs are read by stage 1's first block
    first = stages[0]["first"]
    perm = jnp.argsort(-_l1_rows(first["conv1"], first["down"]))
    stem["w"], stem["bn"] = params["stem"]["w"][..., perm], _take_bn(params["stem"]["bn"], perm)
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
    return {**params, "stem": stem, "stages": stages, "classifier": classifier}

