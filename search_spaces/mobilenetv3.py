"""Once-for-All's MobileNetV3 space: elastic depth, expand ratio, kernel size and resolution.

Canonical string: ``r{resolution}`` then one ``-``-separated group per stage, each the ``.``-joined
active blocks ``k{kernel}e{expand}``. Example (3 stages): ``r8-k3e4.k5e6-k7e3-k3e3.k3e6.k5e4``.
Only active blocks are written, so the stage depth is the number of blocks in its group.

The supernet's math is pure functions over a parameter pytree: the elastic blocks go through
``lax.switch`` / ``lax.scan`` / ``custom_vjp``, which want pure functions, and the train step
differentiates them with ``jax.grad``. The deployable static subnet is a Flax NNX module.
"""

from __future__ import annotations

import dataclasses
import re
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from search_spaces.base import ArchError, Gene, LatencyPiece, SupernetSpace, one_hot_plus_ordinal, register_supernet_family
from search_spaces.layers import (
    ACTIVATIONS,
    batch_norm,
    batch_norm_module,
    centre_kernel,
    depthwise_conv,
    hard_sigmoid,
    hard_swish,
    init_stats,
    make_divisible,
    same_padding,
    set_batch_norm,
    switch_vjp,
)


@dataclasses.dataclass(frozen=True)
class MobileNetV3Config:
    """Shape of the supernet. All channel counts are after the width multiplier."""

    stem_channels: int
    first_channels: int
    stage_channels: tuple[int, ...]
    stage_strides: tuple[int, ...]
    stage_acts: tuple[str, ...]
    stage_se: tuple[bool, ...]
    head_channels: int
    feature_channels: int
    stem_stride: int = 1
    depth_choices: tuple[int, ...] = (2, 3, 4)
    expand_choices: tuple[int, ...] = (3, 4, 6)
    kernel_choices: tuple[int, ...] = (3, 5, 7)
    resolutions: tuple[int, ...] = (32,)
    in_channels: int = 3
    num_classes: int = 10

    @property
    def num_stages(self) -> int:
        return len(self.stage_channels)

    @property
    def max_depth(self) -> int:
        return max(self.depth_choices)

    @property
    def num_branches(self) -> int:
        """Width x kernel branches per block (the identity branch of a skipped block comes after)."""
        return len(self.kernel_choices) * len(self.expand_choices)

    def block_io(self, stage: int, block: int) -> tuple[int, int, int]:
        """(in channels, out channels, stride) of a block."""
        cin = self.first_channels if stage == 0 else self.stage_channels[stage - 1]
        if block > 0:
            return self.stage_channels[stage], self.stage_channels[stage], 1
        return cin, self.stage_channels[stage], self.stage_strides[stage]


def ofa_config(width_mult: float = 1.0, in_channels: int = 3, num_classes: int = 10,
               resolutions: tuple[int, ...] = (24, 28, 32)) -> MobileNetV3Config:
    """OFA-MobileNetV3's 5 stages, strides adapted to 28-32 px inputs (stem stride 1)."""
    w = lambda c: make_divisible(c * width_mult)  # noqa: E731
    return MobileNetV3Config(
        stem_channels=w(16),
        first_channels=w(16),
        stage_channels=tuple(w(c) for c in (24, 40, 80, 112, 160)),
        stage_strides=(2, 2, 2, 1, 2),
        stage_acts=("relu", "relu", "hswish", "hswish", "hswish"),
        stage_se=(False, True, False, True, True),
        head_channels=w(960),
        feature_channels=w(1280),
        resolutions=tuple(resolutions),
        in_channels=in_channels,
        num_classes=num_classes,
    )


def tiny_config(in_channels: int = 1, num_classes: int = 10,
                resolutions: tuple[int, ...] = (8,)) -> MobileNetV3Config:
    """Three small stages for 8x8 digits and the tests; same mechanisms as the full space."""
    return MobileNetV3Config(
        stem_channels=8,
        first_channels=8,
        stage_channels=(12, 16, 24),
        stage_strides=(1, 2, 2),
        stage_acts=("relu", "hswish", "hswish"),
        stage_se=(False, True, True),
        head_channels=64,
        feature_channels=64,
        depth_choices=(1, 2, 3),
        # Two kernel and two expand choices keep the per-variant compile cost of the tests and the
        # 8x8 demo small; kernel 7 on an 8x8 map would be mostly padding anyway.
        kernel_choices=(3, 5),
        expand_choices=(3, 6),
        resolutions=tuple(resolutions),
        in_channels=in_channels,
        num_classes=num_classes,
    )


@dataclasses.dataclass(frozen=True)
class MobileNetV3Arch:
    """One subnet: input resolution and, per stage, the (kernel, expand) of each active block."""

    resolution: int
    stages: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.stages)


_BLOCK_RE = re.compile(r"^k(\d+)e(\d+)$")


class MobileNetV3Space(SupernetSpace):
    """OFA MobileNetV3 space over a :class:`MobileNetV3Config`."""

    progressive_phases = (("kernel", ("kernel",)), ("depth", ("kernel", "depth")),
                          ("width", ("kernel", "depth", "expand", "resolution")))

    def __init__(self, config: MobileNetV3Config, name: str = "mobilenetv3", options: dict | None = None):
        self.config = config
        self.name = name
        self.resolutions = config.resolutions
        self.in_channels = config.in_channels
        self.options = dict(options or {})
        genes = [Gene("resolution", config.resolutions)]
        for s in range(config.num_stages):
            genes.append(Gene(f"s{s + 1}.depth", config.depth_choices))
            for b in range(config.max_depth):
                genes.append(Gene(f"s{s + 1}.b{b + 1}.kernel", config.kernel_choices))
                genes.append(Gene(f"s{s + 1}.b{b + 1}.expand", config.expand_choices))
        self._genes = tuple(genes)

    # --- genome ------------------------------------------------------------------------
    @property
    def genes(self) -> tuple[Gene, ...]:
        return self._genes

    def from_genome(self, genome: Sequence[int]) -> MobileNetV3Arch:
        cfg = self.config
        g = self.check_genome(genome)
        resolution = cfg.resolutions[g[0]]
        stages, pos = [], 1
        for _ in range(cfg.num_stages):
            depth = cfg.depth_choices[g[pos]]
            blocks = []
            for b in range(cfg.max_depth):
                k_idx, e_idx = g[pos + 1 + 2 * b], g[pos + 2 + 2 * b]
                if b < depth:
                    blocks.append((cfg.kernel_choices[k_idx], cfg.expand_choices[e_idx]))
            stages.append(tuple(blocks))
            pos += 1 + 2 * cfg.max_depth
        return MobileNetV3Arch(resolution, tuple(stages))

    def to_genome(self, arch: MobileNetV3Arch) -> np.ndarray:
        cfg = self.config
        self._validate(arch)
        g = [cfg.resolutions.index(arch.resolution)]
        for blocks in arch.stages:
            g.append(cfg.depth_choices.index(len(blocks)))
            for b in range(cfg.max_depth):
                if b < len(blocks):
                    k, e = blocks[b]
                    g += [cfg.kernel_choices.index(k), cfg.expand_choices.index(e)]
                else:
                    g += [0, 0]
        return np.asarray(g, np.int32)

    def _active_mask(self, arch: MobileNetV3Arch) -> np.ndarray:
        mask = [True]
        for blocks in arch.stages:
            mask.append(True)
            for b in range(self.config.max_depth):
                mask += [b < len(blocks)] * 2
        return np.asarray(mask)

    def features(self, arch: MobileNetV3Arch) -> np.ndarray:
        return one_hot_plus_ordinal(self._genes, self.to_genome(arch), self._active_mask(arch))

    # --- strings -------------------------------------------------------------------------
    def _validate(self, arch: MobileNetV3Arch) -> None:
        cfg = self.config
        if arch.resolution not in cfg.resolutions:
            raise ArchError(f"resolution {arch.resolution} not in {{{', '.join(map(str, cfg.resolutions))}}}")
        if len(arch.stages) != cfg.num_stages:
            raise ArchError(f"{len(arch.stages)} stages; {self.name} has {cfg.num_stages}")
        for s, blocks in enumerate(arch.stages):
            if len(blocks) not in cfg.depth_choices:
                raise ArchError(
                    f"stage {s + 1}: depth {len(blocks)} not in {{{', '.join(map(str, cfg.depth_choices))}}}")
            for b, (k, e) in enumerate(blocks):
                if k not in cfg.kernel_choices:
                    raise ArchError(f"stage {s + 1} block {b + 1}: kernel {k} not in "
                                    f"{{{', '.join(map(str, cfg.kernel_choices))}}}")
                if e not in cfg.expand_choices:
                    raise ArchError(f"stage {s + 1} block {b + 1}: expand {e} not in "
                                    f"{{{', '.join(map(str, cfg.expand_choices))}}}")

    def encode(self, arch: MobileNetV3Arch) -> str:
        self._validate(arch)
        groups = [".".join(f"k{k}e{e}" for k, e in blocks) for blocks in arch.stages]
        return f"r{arch.resolution}-" + "-".join(groups)

    def decode(self, text: str) -> MobileNetV3Arch:
        cfg = self.config
        example = self.encode(self.smallest())
        parts = str(text).strip().split("-")
        if not parts[0].startswith("r") or not parts[0][1:].isdigit():
            raise ArchError(f"arch {text!r}: first field {parts[0]!r} must be r<resolution>, "
                            f"resolution in {{{', '.join(map(str, cfg.resolutions))}}} (example: {example})")
        if len(parts) - 1 != cfg.num_stages:
            raise ArchError(f"arch {text!r} has {len(parts) - 1} stage groups; {self.name} needs "
                            f"{cfg.num_stages}, separated by '-' (example: {example})")
        stages = []
        for s, group in enumerate(parts[1:]):
            blocks = []
            for b, field in enumerate(group.split(".")):
                m = _BLOCK_RE.match(field)
                if not m:
                    raise ArchError(f"arch {text!r}: stage {s + 1} block {b + 1} field {field!r} must be "
                                    f"k<kernel>e<expand> with kernel in {{{', '.join(map(str, cfg.kernel_choices))}}} "
                                    f"and expand in {{{', '.join(map(str, cfg.expand_choices))}}}")
                blocks.append((int(m.group(1)), int(m.group(2))))
            stages.append(tuple(blocks))
        arch = MobileNetV3Arch(int(parts[0][1:]), tuple(stages))
        try:
            self._validate(arch)
        except ArchError as e:
            raise ArchError(f"arch {text!r}: {e}") from None
        return arch

    # --- run-time selection -------------------------------------------------------------
    def arch_arrays(self, arch: MobileNetV3Arch) -> np.ndarray:
        """(stages, max_depth) int32 branch indices for the supernet; ``num_branches`` = skipped."""
        cfg = self.config
        self._validate(arch)
        out = np.full((cfg.num_stages, cfg.max_depth), cfg.num_branches, np.int32)
        ne = len(cfg.expand_choices)
        for s, blocks in enumerate(arch.stages):
            for b, (k, e) in enumerate(blocks):
                out[s, b] = cfg.kernel_choices.index(k) * ne + cfg.expand_choices.index(e)
        return out

    # --- costs ---------------------------------------------------------------------------
    def _layers(self, arch: MobileNetV3Arch):
        """Yields (kind, macs, params) per layer of the static subnet, in order."""
        cfg = self.config
        h = w = arch.resolution
        _, _, h = same_padding(h, 3, cfg.stem_stride)
        w = h
        c0 = cfg.stem_channels
        yield "stem", h * w * 9 * cfg.in_channels * c0, 9 * cfg.in_channels * c0 + 2 * c0
        c1 = cfg.first_channels
        yield "first.dw", h * w * 9 * c0, 9 * c0 + 2 * c0
        yield "first.proj", h * w * c0 * c1, c0 * c1 + 2 * c1
        for s, blocks in enumerate(arch.stages):
            for b, (k, e) in enumerate(blocks):
                cin, cout, stride = cfg.block_io(s, b)
                hid = cin * e
                yield "expand", h * w * cin * hid, cin * hid + 2 * hid
                _, _, h = same_padding(h, k, stride)
                w = h
                yield "dw", h * w * k * k * hid, k * k * hid + 2 * hid
                if cfg.stage_se[s]:
                    mid = se_mid(hid)
                    yield "se", 2 * hid * mid, 2 * hid * mid + mid + hid
                yield "proj", h * w * hid * cout, hid * cout + 2 * cout
        clast = cfg.stage_channels[-1]
        yield "head", h * w * clast * cfg.head_channels, clast * cfg.head_channels + 2 * cfg.head_channels
        f = cfg.feature_channels
        yield "feature", cfg.head_channels * f, cfg.head_channels * f + f
        yield "classifier", f * cfg.num_classes, f * cfg.num_classes + cfg.num_classes

    def flops(self, arch: MobileNetV3Arch) -> int:
        return int(sum(m for _, m, _ in self._layers(arch)))

    def params(self, arch: MobileNetV3Arch) -> int:
        return int(sum(p for _, _, p in self._layers(arch)))

    # --- models --------------------------------------------------------------------------
    def init_supernet(self, key: jax.Array) -> dict:
        return init_supernet(self.config, key)

    def supernet_apply(self, params, stats, x, arch_arr, *, mode: str, train_vjp: bool = True):
        return supernet_apply(self.config, params, stats, x, arch_arr, mode=mode, train_vjp=train_vjp)

    def static_model(self, arch: MobileNetV3Arch, rngs: nnx.Rngs) -> "StaticMobileNetV3":
        self._validate(arch)
        return StaticMobileNetV3(self.config, arch, rngs)

    def extract(self, params, stats, arch: MobileNetV3Arch) -> "StaticMobileNetV3":
        """The standalone subnet with weights sliced from the supernet and the given BN statistics."""
        model = self.static_model(arch, nnx.Rngs(0))
        load_static_weights(self.config, model, params, stats, arch)
        return model

    def sort_channels(self, params) -> dict:
        return sort_channels(self.config, params)

    def has_pallas(self) -> bool:
        return True

    # --- latency pieces ----------------------------------------------------------------
    def _sides(self, resolution: int) -> tuple[list[int], list[int], int]:
        """(input side of each stage's first block, of its later blocks, side at the head)."""
        cfg = self.config
        h = same_padding(resolution, 3, cfg.stem_stride)[2]
        first, rest = [], []
        for s in range(cfg.num_stages):
            first.append(h)
            # The output side of a 'SAME' conv does not depend on the kernel size.
            h = same_padding(h, 3, cfg.stage_strides[s])[2]
            rest.append(h)
        return first, rest, h

    def latency_keys(self, arch: MobileNetV3Arch) -> list[str]:
        first, rest, last = self._sides(arch.resolution)
        keys = [f"stem/r{arch.resolution}"]
        for s, blocks in enumerate(arch.stages):
            for b, (k, e) in enumerate(blocks):
                keys.append(_block_key(s, b == 0, k, e, first[s] if b == 0 else rest[s]))
        keys.append(f"head/h{last}")
        return keys

    def latency_pieces(self) -> list[LatencyPiece]:
        """The stem (per resolution), every block (stage, first/rest, kernel, expand, input side)
        and the head (per final side), as :class:`StaticMobileNetV3`'s own submodules."""
        cfg = self.config
        pieces: dict[str, LatencyPiece] = {}

        def model(resolution: int) -> StaticMobileNetV3:
            return self.static_model(self.at_resolution(self.smallest(), resolution), nnx.Rngs(0))

        for r in cfg.resolutions:
            pieces.setdefault(f"stem/r{r}", LatencyPiece(f"stem/r{r}", (r, r, cfg.in_channels),
                                                         lambda r=r: model(r).stem))
        for r in cfg.resolutions:
            first, rest, _ = self._sides(r)
            for s in range(cfg.num_stages):
                positions = [(True, first[s])] + ([(False, rest[s])] if cfg.max_depth > 1 else [])
                for is_first, side in positions:
                    cin, cout, stride = cfg.block_io(s, 0 if is_first else 1)
                    for k in cfg.kernel_choices:
                        for e in cfg.expand_choices:
                            key = _block_key(s, is_first, k, e, side)
                            act, se = cfg.stage_acts[s], cfg.stage_se[s]
                            build = partial(lambda *a: StaticBlock(*a, nnx.Rngs(0)), cin, cout, stride, k, e, act, se)
                            pieces.setdefault(key, LatencyPiece(key, (side, side, cin), build))
        for r in cfg.resolutions:
            side = self._sides(r)[2]
            pieces.setdefault(f"head/h{side}", LatencyPiece(f"head/h{side}", (side, side, cfg.stage_channels[-1]),
                                                            lambda r=r: model(r).head))
        return list(pieces.values())

    def make_trainer(self, mean: float, std: float, label_smoothing: float, kernels: str):
        """Composed per-block static variants on XLA (search_spaces/composed.py), or one program
        through the elastic Pallas kernels (search_spaces/elastic_kernels.py)."""
        if kernels == "pallas":
            from search_spaces.elastic_kernels import KernelSupernet

            return KernelSupernet(self.config, mean, std, label_smoothing, implementation="pallas")
        from search_spaces.composed import ComposedSupernet

        return ComposedSupernet(self.config, mean, std, label_smoothing)


def _block_key(stage: int, first: bool, k: int, e: int, side: int) -> str:
    return f"block/s{stage + 1}/{'first' if first else 'rest'}/k{k}e{e}/h{side}"


def se_mid(hidden: int) -> int:
    return max(1, hidden // 4)


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
        mmax = se_mid(hmax)
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
                    "b": jnp.zeros((cfg.feature_channels,), jnp.float32)},
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
def _block(cfg, p, s, x, *, cin, cout, stride, k, e, act, se, mode):
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
    z = depthwise_conv(z, w, stride)
    z, stats["bn2"] = batch_norm(z, p["bn2"], s["bn2"], h, mode)
    z = act_fn(z)
    if se:
        m = se_mid(h)
        pooled = jnp.mean(z, axis=(1, 2))  # (B, h)
        r = jax.nn.relu(pooled @ p["se"]["rw"][:h, :m] + p["se"]["rb"][:m])
        gate = hard_sigmoid(r @ p["se"]["ew"][:m, :h] + p["se"]["eb"][:h])
        z = z * gate[:, None, None, :]
    y = jnp.einsum("bhwc,cd->bhwd", z, p["proj"][:h, :])
    y, stats["bn3"] = batch_norm(y, p["bn3"], s["bn3"], cout, mode)
    if stride == 1 and cin == cout:
        y = y + x
    return y, stats


def _zero_stats(s):
    return jax.tree.map(jnp.zeros_like, s)


def _elastic_block(cfg, p, s, x, index, *, stage: int, first: bool, mode: str, train_vjp: bool):
    """Runs the branch chosen by the run-time ``index`` (``num_branches`` means: skip the block)."""
    cin, cout, stride = cfg.block_io(stage, 0 if first else 1)
    ne = len(cfg.expand_choices)
    branches = []
    for b in range(cfg.num_branches):
        k, e = cfg.kernel_choices[b // ne], cfg.expand_choices[b % ne]
        fn = partial(_block, cfg, cin=cin, cout=cout, stride=stride, k=k, e=e,
                     act=cfg.stage_acts[stage], se=cfg.stage_se[stage], mode=mode)
        branches.append(fn)
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
    z = lax.conv_general_dilated(x, p["w"], (cfg.stem_stride,) * 2, "SAME",
                                 dimension_numbers=("NHWC", "HWIO", "NHWC"))
    z, bn = batch_norm(z, p["bn"], s["stem"]["bn"], cfg.stem_channels, mode)
    z = hard_swish(z)
    p, sf = params["first"], s["first"]
    c0, c1 = cfg.stem_channels, cfg.first_channels
    y = depthwise_conv(z, p["dw"], 1)
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
    z = hard_swish(z @ params["feature"]["w"] + params["feature"]["b"])
    return z @ params["classifier"]["w"] + params["classifier"]["b"], {"bn": bn}


def supernet_apply(cfg: MobileNetV3Config, params, stats, x, arch_arr, *, mode: str, train_vjp: bool = True):
    """Forward of the subnet selected by ``arch_arr`` (stages, max_depth) int32 branch indices.

    Args:
      params: from :func:`init_supernet`.
      stats: from :func:`init_stats` (read in "eval" mode only; may be a placeholder otherwise).
      x: (B, R, R, C) preprocessed images.
      mode: "train" (batch statistics; custom VJP), "calib" (batch statistics, returned) or "eval".

    Returns:
      logits (B, num_classes), and in "calib" mode also the batch statistics pytree.
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
    out = dict(params)
    out["stages"] = [
        {"first": _sort_block(st["first"]), "rest": jax.vmap(_sort_block)(st["rest"])}
        for st in params["stages"]
    ]
    return out


# ----------------------------------------------------------------------------------------------
# The static subnet (Flax NNX), and slicing supernet weights into it
# ----------------------------------------------------------------------------------------------
class _SE(nnx.Module):
    def __init__(self, hidden: int, rngs: nnx.Rngs):
        mid = se_mid(hidden)
        self.reduce = nnx.Linear(hidden, mid, rngs=rngs)
        self.expand = nnx.Linear(mid, hidden, rngs=rngs)

    def __call__(self, z):
        pooled = jnp.mean(z, axis=(1, 2))
        gate = hard_sigmoid(self.expand(jax.nn.relu(self.reduce(pooled))))
        return z * gate[:, None, None, :]


class DepthwiseConv(nnx.Module):
    """Depthwise conv, 'SAME' padding, as a sum of k*k shifted per-channel-scaled copies.

    On XLA CPU this is 13-33x faster than ``nnx.Conv(feature_group_count=C)`` at these sizes
    (forward, (64, 16, 16, 144), k 3 and 7, stride 1 and 2; see bench/RESULTS.md), and equal to it
    numerically. Since latency is measured on the static subnet, the deployable model must use the
    fast formulation. Kernel layout (k, k, C).
    """

    def __init__(self, channels: int, kernel_size: int, stride: int, rngs: nnx.Rngs):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (kernel_size, kernel_size, channels)))
        self.stride = stride

    def __call__(self, x):
        with jax.named_scope("depthwise_conv"):
            return depthwise_conv(x, self.kernel[...], self.stride)


class StaticBlock(nnx.Module):
    def __init__(self, cin, cout, stride, k, e, act, se, rngs: nnx.Rngs):
        h = cin * e
        self.residual = stride == 1 and cin == cout
        self.act = act
        # 1x1 convs as Linear over the channel axis: the same dot_general as the supernet's einsum,
        # so both sum in the same order (BatchNorm on small maps amplifies any difference).
        self.expand = nnx.Linear(cin, h, use_bias=False, rngs=rngs)
        self.bn1 = batch_norm_module(h, rngs)
        self.dw = DepthwiseConv(h, k, stride, rngs)
        self.bn2 = batch_norm_module(h, rngs)
        self.se = _SE(h, rngs) if se else None
        self.proj = nnx.Linear(h, cout, use_bias=False, rngs=rngs)
        self.bn3 = batch_norm_module(cout, rngs)

    def __call__(self, x):
        act = ACTIVATIONS[self.act]
        z = act(self.bn1(self.expand(x)))
        z = act(self.bn2(self.dw(z)))
        if self.se is not None:
            z = self.se(z)
        y = self.bn3(self.proj(z))
        return y + x if self.residual else y


class StaticStem(nnx.Module):
    """The fixed stem conv and the expand-1 first block: (B, R, R, C) images -> (B, R', R', c1)."""

    def __init__(self, cfg: MobileNetV3Config, rngs: nnx.Rngs):
        c0, c1 = cfg.stem_channels, cfg.first_channels
        self.conv = nnx.Conv(cfg.in_channels, c0, (3, 3), strides=(cfg.stem_stride,) * 2, padding="SAME",
                             use_bias=False, rngs=rngs)
        self.bn = batch_norm_module(c0, rngs)
        self.first_dw = DepthwiseConv(c0, 3, 1, rngs)
        self.first_bn1 = batch_norm_module(c0, rngs)
        self.first_proj = nnx.Linear(c0, c1, use_bias=False, rngs=rngs)
        self.first_bn2 = batch_norm_module(c1, rngs)
        self.first_residual = c0 == c1

    def __call__(self, x):
        z = hard_swish(self.bn(self.conv(x)))
        y = jax.nn.relu(self.first_bn1(self.first_dw(z)))
        y = self.first_bn2(self.first_proj(y))
        return y + z if self.first_residual else y


class StaticHead(nnx.Module):
    """Final 1x1 conv, pooling, feature layer and classifier: (B, H, W, C) -> (B, num_classes)."""

    def __init__(self, cfg: MobileNetV3Config, rngs: nnx.Rngs):
        self.conv = nnx.Linear(cfg.stage_channels[-1], cfg.head_channels, use_bias=False, rngs=rngs)
        self.bn = batch_norm_module(cfg.head_channels, rngs)
        self.feature = nnx.Linear(cfg.head_channels, cfg.feature_channels, rngs=rngs)
        self.classifier = nnx.Linear(cfg.feature_channels, cfg.num_classes, rngs=rngs)

    def __call__(self, z):
        z = hard_swish(self.bn(self.conv(z)))
        z = jnp.mean(z, axis=(1, 2))  # (B, head)
        return self.classifier(hard_swish(self.feature(z)))


class StaticMobileNetV3(nnx.Module):
    """A standalone subnet: plain NNX layers with static shapes, batch norm in inference mode.

    ``stem``, then ``blocks`` in order, then ``head``: the latency table times exactly these.
    Input: (B, resolution, resolution, C) images already normalised (see :func:`preprocess`).
    """

    def __init__(self, cfg: MobileNetV3Config, arch: MobileNetV3Arch, rngs: nnx.Rngs):
        self.resolution = arch.resolution
        self.stem = StaticStem(cfg, rngs)
        blocks = []
        for s, stage in enumerate(arch.stages):
            for b, (k, e) in enumerate(stage):
                cin, cout, stride = cfg.block_io(s, b)
                blocks.append(StaticBlock(cin, cout, stride, k, e, cfg.stage_acts[s], cfg.stage_se[s], rngs))
        self.blocks = nnx.List(blocks)
        self.head = StaticHead(cfg, rngs)

    def __call__(self, x):
        z = self.stem(x)
        for block in self.blocks:
            z = block(z)
        return self.head(z)


def load_static_weights(cfg: MobileNetV3Config, model: StaticMobileNetV3, params, stats, arch: MobileNetV3Arch):
    """Copies the subnet's slices of the supernet weights (and the given BN statistics) into ``model``."""
    c0, c1 = cfg.stem_channels, cfg.first_channels
    stem = model.stem
    stem.conv.kernel.set_value(params["stem"]["w"])
    set_batch_norm(stem.bn, params["stem"]["bn"], stats["stem"]["bn"], c0)
    stem.first_dw.kernel.set_value(params["first"]["dw"])
    set_batch_norm(stem.first_bn1, params["first"]["bn1"], stats["first"]["bn1"], c0)
    stem.first_proj.kernel.set_value(params["first"]["proj"])
    set_batch_norm(stem.first_bn2, params["first"]["bn2"], stats["first"]["bn2"], c1)
    i = 0
    for s, stage in enumerate(arch.stages):
        for b, (k, e) in enumerate(stage):
            cin, cout, _ = cfg.block_io(s, b)
            h = cin * e
            if b == 0:
                p, st = params["stages"][s]["first"], stats["stages"][s]["first"]
            else:
                p = jax.tree.map(lambda a, b=b: a[b - 1], params["stages"][s]["rest"])
                st = jax.tree.map(lambda a, b=b: a[b - 1], stats["stages"][s]["rest"])
            blk = model.blocks[i]
            blk.expand.kernel.set_value(p["expand"][:, :h])
            set_batch_norm(blk.bn1, p["bn1"], st["bn1"], h)
            tf = {name: p[name] for name in p if name.startswith("tf")}
            blk.dw.kernel.set_value(centre_kernel(p["dw"][:, :, :h], tf, k, cfg.kernel_choices))
            set_batch_norm(blk.bn2, p["bn2"], st["bn2"], h)
            if blk.se is not None:
                m = se_mid(h)
                blk.se.reduce.kernel.set_value(p["se"]["rw"][:h, :m])
                blk.se.reduce.bias.set_value(p["se"]["rb"][:m])
                blk.se.expand.kernel.set_value(p["se"]["ew"][:m, :h])
                blk.se.expand.bias.set_value(p["se"]["eb"][:h])
            blk.proj.kernel.set_value(p["proj"][:h, :])
            set_batch_norm(blk.bn3, p["bn3"], st["bn3"], cout)
            i += 1
    head = model.head
    head.conv.kernel.set_value(params["head"]["w"])
    set_batch_norm(head.bn, params["head"]["bn"], stats["head"]["bn"], cfg.head_channels)
    head.feature.kernel.set_value(params["feature"]["w"])
    head.feature.bias.set_value(params["feature"]["b"])
    head.classifier.kernel.set_value(params["classifier"]["w"])
    head.classifier.bias.set_value(params["classifier"]["b"])


register_supernet_family("mobilenetv3", MobileNetV3Space, ofa_config, tiny_config)
