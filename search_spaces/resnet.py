"""Once-for-All's ResNet space: elastic depth, expand ratio, width multiplier and resolution.

Bottleneck blocks (1x1 conv, 3x3 conv, 1x1 conv; ReLU after the residual sum) in stages of a base
depth plus an elastic extra depth. Each stage's output width, and the stem's, is elastic (a width
multiplier per stage, channels kept by importance: :func:`sort_channels`), and each block's middle
width is ``expand * active out channels`` (rounded to the channel divisor), as in OFA-ResNet50.
Adapted to 28-32 px inputs: one 3x3 stem conv and no max-pool; the first block of a stage has a
strided 1x1-conv shortcut (OFA's ``downsample_mode="conv"``).

Canonical string: ``r{resolution}-w{stem width}`` then one ``-``-separated group per stage,
``w{width}`` followed by the ``.``-joined active blocks ``e{expand}``; widths and expand ratios are
written in percent. Example (3 stages): ``r8-w50-w100.e25.e50-w50.e25-w100.e50.e50``. Only active
blocks are written, so the stage depth is the number of ``e`` fields in its group.

As in mobilenetv3.py, the supernet is pure functions over a parameter pytree and the deployable
subnet is a Flax NNX module. Between blocks the supernet carries activations at the stage's largest
width, zero beyond the active channels: a block reads its input at full width (the zero channels
add exact zeros), so its ``lax.switch`` only branches over (out width, middle width).
"""

from __future__ import annotations

import dataclasses
import math
import re
from functools import partial
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from search_spaces.base import ArchError, Gene, SupernetSpace, one_hot_plus_ordinal, register_supernet_family
from search_spaces.engine import ComposedTrainer, Piece
from search_spaces.layers import (
    batch_norm,
    batch_norm_module,
    init_stats,
    make_divisible,
    preprocess,
    same_padding,
    set_batch_norm,
    switch_vjp,
)


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """Shape of the supernet. Channel counts are after the constructor's width multiplier.

    Widths and expand ratios are integer percentages (65 means 0.65).
    """

    stem_channels: int  # at width 100%
    stage_channels: tuple[int, ...]  # block output channels at width 100%
    stage_strides: tuple[int, ...]
    base_depths: tuple[int, ...]
    extra_depth_choices: tuple[int, ...] = (0, 1, 2)
    expand_choices: tuple[int, ...] = (20, 25, 35)
    width_choices: tuple[int, ...] = (65, 80, 100)
    stem_stride: int = 1
    divisor: int = 8
    resolutions: tuple[int, ...] = (32,)
    in_channels: int = 3
    num_classes: int = 10

    def __post_init__(self):
        # the supernet stacks blocks after a stage's first for lax.scan; at least one must exist
        assert all(max(self.depth_choices(s)) >= 2 for s in range(self.num_stages)), self
        assert max(self.width_choices) == 100, self.width_choices
        clash = self.first_clash()
        if clash:
            raise ArchError(f"{clash}: two choices would build one network under two strings; "
                            "use a larger --width-mult")

    def first_clash(self) -> str | None:
        """The first layer where two width (or expand) choices round to the same channel count."""
        def first_dup(values: dict) -> str | None:
            seen: dict[int, object] = {}
            for choice, channels in values.items():
                if channels in seen:
                    return f"{seen[channels]}% and {choice}% both give {channels} channels"
                seen[channels] = choice
            return None

        layers = [("stem width", {w: self.stem_width(w) for w in self.width_choices})]
        for s in range(self.num_stages):
            layers.append((f"stage {s + 1} width", {w: self.stage_width(s, w) for w in self.width_choices}))
            for w in self.width_choices:
                cout = self.stage_width(s, w)
                layers.append((f"stage {s + 1} expand at width {w}%",
                               {e: self.mid(cout, e) for e in self.expand_choices}))
        for name, values in layers:
            dup = first_dup(values)
            if dup:
                return f"{name}: {dup}"
        return None

    @property
    def num_stages(self) -> int:
        return len(self.stage_channels)

    def depth_choices(self, stage: int) -> tuple[int, ...]:
        return tuple(self.base_depths[stage] + d for d in self.extra_depth_choices)

    @property
    def max_depth(self) -> int:
        """Deepest stage's maximum depth (the width of :meth:`ResNetSpace.arch_arrays`)."""
        return max(max(self.depth_choices(s)) for s in range(self.num_stages))

    def _scaled(self, channels: int, width: int) -> int:
        return channels if width == 100 else make_divisible(channels * width / 100, self.divisor)

    def stem_width(self, width: int) -> int:
        return self._scaled(self.stem_channels, width)

    def stage_width(self, stage: int, width: int) -> int:
        return self._scaled(self.stage_channels[stage], width)

    def mid(self, cout: int, expand: int) -> int:
        """Bottleneck middle channels of a block with ``cout`` active output channels (OFA)."""
        return make_divisible(cout * expand / 100, self.divisor)

    def max_mid(self, stage: int) -> int:
        return max(self.mid(self.stage_width(stage, w), e) for w in self.width_choices for e in self.expand_choices)

    def in_channels_of(self, stage: int) -> int:
        """Largest input channels of a stage's first block."""
        return self.stem_channels if stage == 0 else self.stage_channels[stage - 1]

    def branches(self, stage: int) -> tuple[tuple[int, int], ...]:
        """The distinct (out channels, middle channels) of a stage's blocks: one switch branch each."""
        seen = dict.fromkeys((self.stage_width(stage, w), self.mid(self.stage_width(stage, w), e))
                             for w in self.width_choices for e in self.expand_choices)
        return tuple(seen)


def ofa_config(width_mult: float = 1.0, in_channels: int = 3, num_classes: int = 10,
               resolutions: tuple[int, ...] = (24, 28, 32)) -> ResNetConfig:
    """OFA-ResNet50's 4 stages (base depths 2, 2, 4, 2 plus 0-2 blocks), for 28-32 px inputs:
    a stride-1 3x3 stem and no max-pool, so stage 1 runs at the input resolution."""
    w = lambda c: make_divisible(c * width_mult)  # noqa: E731
    common = dict(stem_channels=w(64), stage_channels=tuple(w(c) for c in (256, 512, 1024, 2048)),
                  stage_strides=(1, 2, 2, 2), base_depths=(2, 2, 4, 2), resolutions=tuple(resolutions),
                  in_channels=in_channels, num_classes=num_classes)
    # Channels round to multiples of 8 (OFA); a narrow network rounds to 4, 2 or 1 instead where 8
    # would make two choices the same network (65% and 80% of 32 channels are both 24).
    for divisor in (8, 4, 2):
        try:
            return ResNetConfig(divisor=divisor, **common)
        except ArchError:
            continue
    try:
        return ResNetConfig(divisor=1, **common)
    except ArchError as e:
        raise ArchError(f"--width-mult {width_mult} is too narrow for resnet: {e}") from None


def tiny_config(in_channels: int = 1, num_classes: int = 10,
                resolutions: tuple[int, ...] = (8,)) -> ResNetConfig:
    """Three small stages for 8x8 digits and the tests; same mechanisms as the full space."""
    return ResNetConfig(
        stem_channels=16,
        stage_channels=(32, 48, 64),
        stage_strides=(1, 2, 2),
        base_depths=(1, 1, 1),
        extra_depth_choices=(0, 1),
        # two choices per gene keep the number of compiled variants (and the tests) small
        expand_choices=(25, 50),
        width_choices=(50, 100),
        divisor=4,
        resolutions=tuple(resolutions),
        in_channels=in_channels,
        num_classes=num_classes,
    )


@dataclasses.dataclass(frozen=True)
class ResNetArch:
    """One subnet: input resolution, stem width (percent) and, per stage, (width, expand of each
    active block), all in percent."""

    resolution: int
    stem_width: int
    stages: tuple[tuple[int, tuple[int, ...]], ...]

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(e) for _, e in self.stages)


_NUM = re.compile(r"^(\d+)$")


def _set(values) -> str:
    return "{" + ", ".join(map(str, values)) + "}"


class ResNetSpace(SupernetSpace):
    """OFA ResNet space over a :class:`ResNetConfig`."""

    # OFA-ResNet's progressive shrinking order: depth, then expand ratio, then width
    progressive_phases = (("depth", ("depth",)), ("expand", ("depth", "expand")),
                          ("width", ("depth", "expand", "width", "resolution")))

    def __init__(self, config: ResNetConfig, name: str = "resnet", options: dict | None = None):
        self.config = config
        self.name = name
        self.resolutions = config.resolutions
        self.in_channels = config.in_channels
        self.options = dict(options or {})
        genes = [Gene("resolution", config.resolutions), Gene("stem.width", config.width_choices)]
        for s in range(config.num_stages):
            genes.append(Gene(f"s{s + 1}.depth", config.depth_choices(s)))
            genes.append(Gene(f"s{s + 1}.width", config.width_choices))
            for b in range(max(config.depth_choices(s))):
                genes.append(Gene(f"s{s + 1}.b{b + 1}.expand", config.expand_choices))
        self._genes = tuple(genes)

    # --- genome ------------------------------------------------------------------------
    @property
    def genes(self) -> tuple[Gene, ...]:
        return self._genes

    def from_genome(self, genome: Sequence[int]) -> ResNetArch:
        cfg = self.config
        g = self.check_genome(genome)
        stages, pos = [], 2
        for s in range(cfg.num_stages):
            depth = cfg.depth_choices(s)[g[pos]]
            width = cfg.width_choices[g[pos + 1]]
            expands = tuple(cfg.expand_choices[i] for i in g[pos + 2 : pos + 2 + depth])
            stages.append((width, expands))
            pos += 2 + max(cfg.depth_choices(s))
        return ResNetArch(cfg.resolutions[g[0]], cfg.width_choices[g[1]], tuple(stages))

    def to_genome(self, arch: ResNetArch) -> np.ndarray:
        cfg = self.config
        self._validate(arch)
        g = [cfg.resolutions.index(arch.resolution), cfg.width_choices.index(arch.stem_width)]
        for s, (width, expands) in enumerate(arch.stages):
            g += [cfg.depth_choices(s).index(len(expands)), cfg.width_choices.index(width)]
            g += [cfg.expand_choices.index(e) for e in expands]
            g += [0] * (max(cfg.depth_choices(s)) - len(expands))
        return np.asarray(g, np.int32)

    def features(self, arch: ResNetArch) -> np.ndarray:
        active = [True, True]
        for s, (_, expands) in enumerate(arch.stages):
            active += [True, True] + [b < len(expands) for b in range(max(self.config.depth_choices(s)))]
        return one_hot_plus_ordinal(self._genes, self.to_genome(arch), np.asarray(active))

    # --- strings -------------------------------------------------------------------------
    def _validate(self, arch: ResNetArch) -> None:
        cfg = self.config
        if arch.resolution not in cfg.resolutions:
            raise ArchError(f"resolution {arch.resolution} not in {_set(cfg.resolutions)}")
        if arch.stem_width not in cfg.width_choices:
            raise ArchError(f"stem width {arch.stem_width} not in {_set(cfg.width_choices)} (percent)")
        if len(arch.stages) != cfg.num_stages:
            raise ArchError(f"{len(arch.stages)} stages; {self.name} has {cfg.num_stages}")
        for s, (width, expands) in enumerate(arch.stages):
            if width not in cfg.width_choices:
                raise ArchError(f"stage {s + 1}: width {width} not in {_set(cfg.width_choices)} (percent)")
            if len(expands) not in cfg.depth_choices(s):
                raise ArchError(f"stage {s + 1}: depth {len(expands)} not in {_set(cfg.depth_choices(s))}")
            for b, e in enumerate(expands):
                if e not in cfg.expand_choices:
                    raise ArchError(f"stage {s + 1} block {b + 1}: expand {e} not in "
                                    f"{_set(cfg.expand_choices)} (percent)")

    def encode(self, arch: ResNetArch) -> str:
        self._validate(arch)
        groups = [".".join([f"w{w}", *(f"e{e}" for e in expands)]) for w, expands in arch.stages]
        return f"r{arch.resolution}-w{arch.stem_width}-" + "-".join(groups)

    def decode(self, text: str) -> ResNetArch:
        cfg = self.config
        example = self.encode(self.smallest())
        parts = str(text).strip().split("-")

        def number(field: str, prefix: str, what: str, choices) -> int:
            if not field.startswith(prefix) or not _NUM.match(field[len(prefix):]):
                raise ArchError(f"arch {text!r}: {what} field {field!r} must be {prefix}<{what.split()[-1]}> "
                                f"with {what.split()[-1]} in {_set(choices)} (example: {example})")
            return int(field[len(prefix):])

        resolution = number(parts[0], "r", "resolution", cfg.resolutions)
        if len(parts) - 2 != cfg.num_stages:
            raise ArchError(f"arch {text!r} has {max(len(parts) - 2, 0)} stage groups after r<resolution>-w<stem "
                            f"width>; {self.name} needs {cfg.num_stages}, separated by '-' (example: {example})")
        stem = number(parts[1], "w", "stem width", cfg.width_choices)
        stages = []
        for s, group in enumerate(parts[2:]):
            fields = group.split(".")
            width = number(fields[0], "w", f"stage {s + 1} width", cfg.width_choices)
            expands = tuple(number(f, "e", f"stage {s + 1} block {b + 1} expand", cfg.expand_choices)
                            for b, f in enumerate(fields[1:]))
            stages.append((width, expands))
        arch = ResNetArch(resolution, stem, tuple(stages))
        try:
            self._validate(arch)
        except ArchError as e:
            raise ArchError(f"arch {text!r}: {e}") from None
        return arch

    # --- run-time selection -------------------------------------------------------------
    def arch_arrays(self, arch: ResNetArch) -> np.ndarray:
        """(1 + stages, max_depth) int32: row 0 holds the stem width index; row 1 + s the branch of
        each block of stage s (an index into ``config.branches(s)``; ``len(branches)`` = skipped)."""
        cfg = self.config
        self._validate(arch)
        out = np.zeros((1 + cfg.num_stages, cfg.max_depth), np.int32)
        out[0, 0] = cfg.width_choices.index(arch.stem_width)
        for s, (width, expands) in enumerate(arch.stages):
            branches = cfg.branches(s)
            out[1 + s, :] = len(branches)
            cout = cfg.stage_width(s, width)
            for b, e in enumerate(expands):
                out[1 + s, b] = branches.index((cout, cfg.mid(cout, e)))
        return out

    def _blocks(self, arch: ResNetArch):
        """Yields (stage, block, cin, cout, mid, stride) of every active block, in order."""
        cfg = self.config
        cin = cfg.stem_width(arch.stem_width)
        for s, (width, expands) in enumerate(arch.stages):
            cout = cfg.stage_width(s, width)
            for b, e in enumerate(expands):
                yield s, b, cin, cout, cfg.mid(cout, e), cfg.stage_strides[s] if b == 0 else 1
                cin = cout

    # --- costs ---------------------------------------------------------------------------
    def _layers(self, arch: ResNetArch):
        """Yields (macs, params) per layer of the static subnet."""
        cfg = self.config
        _, _, h = same_padding(arch.resolution, 3, cfg.stem_stride)
        c0 = cfg.stem_width(arch.stem_width)
        yield h * h * 9 * cfg.in_channels * c0, 9 * cfg.in_channels * c0 + 2 * c0
        for _, b, cin, cout, mid, stride in self._blocks(arch):
            yield h * h * cin * mid, cin * mid + 2 * mid
            _, _, out = same_padding(h, 3, stride)
            yield out * out * 9 * mid * mid, 9 * mid * mid + 2 * mid
            yield out * out * mid * cout, mid * cout + 2 * cout
            if b == 0:  # the 1x1 shortcut conv at the block's stride
                yield out * out * cin * cout, cin * cout + 2 * cout
            h = out
        c_last = cfg.stage_width(cfg.num_stages - 1, arch.stages[-1][0])
        yield c_last * cfg.num_classes, c_last * cfg.num_classes + cfg.num_classes

    def flops(self, arch: ResNetArch) -> int:
        return int(sum(m for m, _ in self._layers(arch)))

    def params(self, arch: ResNetArch) -> int:
        return int(sum(p for _, p in self._layers(arch)))

    # --- models --------------------------------------------------------------------------
    def init_supernet(self, key: jax.Array) -> dict:
        # jitted: eagerly, each of the many differently shaped initialisers compiles on its own
        return jax.jit(partial(init_supernet, self.config))(key)

    def supernet_apply(self, params, stats, x, arch_arr, *, mode: str):
        return supernet_apply(self.config, params, stats, x, arch_arr, mode=mode)

    def static_model(self, arch: ResNetArch, rngs: nnx.Rngs) -> "StaticResNet":
        self._validate(arch)
        return StaticResNet(self, arch, rngs)

    def extract(self, params, stats, arch: ResNetArch) -> "StaticResNet":
        """The standalone subnet with weights sliced from the supernet and the given BN statistics."""
        model = self.static_model(arch, nnx.Rngs(0))
        load_static_weights(self, model, params, stats, arch)
        return model

    def sort_channels(self, params) -> dict:
        return sort_channels(self.config, params)

    def make_trainer(self, mean: float, std: float, label_smoothing: float, kernels: str):
        """Composed per-block static variants (search_spaces/composed.py); no Pallas formulation."""
        if kernels == "pallas":
            raise ArchError(f"space {self.name!r} has no Pallas formulation; use --kernels xla or auto")
        return ComposedResNet(self, mean, std, label_smoothing)


# ----------------------------------------------------------------------------------------------
# Supernet parameters and forward
# ----------------------------------------------------------------------------------------------
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
    """Forward of the subnet selected by ``arch_arr`` (see :meth:`ResNetSpace.arch_arrays`).

    Args:
      params: from :func:`init_supernet`.
      stats: BatchNorm statistics like ``init_stats(params)`` (read in "eval" mode only; may be
        None otherwise).
      x: (B, R, R, C) preprocessed images.
      mode: "train" (batch statistics; custom VJP), "calib" (batch statistics, returned) or "eval".

    Returns:
      logits (B, num_classes), and in "calib" mode also the batch statistics pytree.
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


# ----------------------------------------------------------------------------------------------
# Channel importance (OFA elastic width)
# ----------------------------------------------------------------------------------------------
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


# ----------------------------------------------------------------------------------------------
# The CPU trainer: one static piece per distinct block variant (search_spaces/composed.py)
# ----------------------------------------------------------------------------------------------
class ComposedResNet(ComposedTrainer):
    """The resnet chain: stem (with preprocessing) keyed by (resolution, width), one piece per active
    block keyed by (stage, first block of the stage, in, out, middle channels), and the head keyed by
    its input width. Each piece runs its own static shapes, so a step costs what the subnet costs."""

    def __init__(self, space: ResNetSpace, mean: float, std: float, label_smoothing: float = 0.0):
        super().__init__(label_smoothing)
        self.space, self.cfg = space, space.config
        self.mean, self.std = mean, std

    def chain(self, arch: ResNetArch) -> tuple[list[Piece], Piece]:
        cfg, res = self.cfg, arch.resolution
        c0 = cfg.stem_width(arch.stem_width)

        def stem():
            def fn(p, images):
                x = preprocess(images, res, self.mean, self.std)
                return stem_apply(cfg, p["stem"], None, x, c0, "train")[0]
            return Piece(("stem", res, c0), fn, keys=("stem",), input_grad=False)

        pieces = [self._piece(("stem", res, c0), stem)]
        for s, b, cin, cout, mid, stride in self.space._blocks(arch):
            first = b == 0
            key = ("block", s, first, cin, cout, mid)

            def make(s=s, first=first, key=key, cout=cout, mid=mid, stride=stride):
                fn = partial(block_apply, s=None, cout=cout, mid=mid, stride=stride, first=first, mode="train")
                return Piece(key, lambda p, x: fn(p, x=x)[0], path=("stages", s, "first" if first else "rest"),
                             index=None if first else 0)

            base = self._piece(key, make)
            pieces.append(base if first else dataclasses.replace(base, index=b - 1))
        c_last = cfg.stage_width(cfg.num_stages - 1, arch.stages[-1][0])
        head = self._piece(("head", c_last), lambda: Piece(("head", c_last), lambda p, z: head_apply(p, z),
                                                          path=("classifier",)))
        return pieces, head


# ----------------------------------------------------------------------------------------------
# The static subnet (Flax NNX), and slicing supernet weights into it
# ----------------------------------------------------------------------------------------------
class StaticBottleneck(nnx.Module):
    def __init__(self, cin: int, cout: int, mid: int, stride: int, shortcut: bool, rngs: nnx.Rngs):
        self.stride = stride
        # 1x1 convs as Linear over the channel axis: the same dot_general as the supernet's einsum
        self.conv1 = nnx.Linear(cin, mid, use_bias=False, rngs=rngs)
        self.bn1 = batch_norm_module(mid, rngs)
        self.conv2 = nnx.Conv(mid, mid, (3, 3), strides=(stride, stride), padding="SAME", use_bias=False, rngs=rngs)
        self.bn2 = batch_norm_module(mid, rngs)
        self.conv3 = nnx.Linear(mid, cout, use_bias=False, rngs=rngs)
        self.bn3 = batch_norm_module(cout, rngs)
        self.down = nnx.Linear(cin, cout, use_bias=False, rngs=rngs) if shortcut else None
        self.bn_down = batch_norm_module(cout, rngs) if shortcut else None

    def __call__(self, x):
        z = jax.nn.relu(self.bn1(self.conv1(x)))
        z = jax.nn.relu(self.bn2(self.conv2(z)))
        y = self.bn3(self.conv3(z))
        sc = x if self.down is None else self.bn_down(self.down(x[:, :: self.stride, :: self.stride, :]))
        return jax.nn.relu(y + sc)


class StaticResNet(nnx.Module):
    """A standalone subnet: plain NNX layers with static shapes, batch norm in inference mode.

    Input: (B, resolution, resolution, C) images already normalised (see ``preprocess``).
    """

    def __init__(self, space: ResNetSpace, arch: ResNetArch, rngs: nnx.Rngs):
        cfg = space.config
        self.resolution = arch.resolution
        c0 = cfg.stem_width(arch.stem_width)
        self.stem = nnx.Conv(cfg.in_channels, c0, (3, 3), strides=(cfg.stem_stride,) * 2, padding="SAME",
                             use_bias=False, rngs=rngs)
        self.stem_bn = batch_norm_module(c0, rngs)
        self.blocks = nnx.List([StaticBottleneck(cin, cout, mid, stride, b == 0, rngs)
                                for _, b, cin, cout, mid, stride in space._blocks(arch)])
        c_last = cfg.stage_width(cfg.num_stages - 1, arch.stages[-1][0])
        self.classifier = nnx.Linear(c_last, cfg.num_classes, rngs=rngs)

    def __call__(self, x):
        z = jax.nn.relu(self.stem_bn(self.stem(x)))
        for block in self.blocks:
            z = block(z)
        return self.classifier(jnp.mean(z, axis=(1, 2)))


def load_static_weights(space: ResNetSpace, model: StaticResNet, params, stats, arch: ResNetArch):
    """Copies the subnet's slices of the supernet weights (and the given BN statistics) into ``model``."""
    cfg = space.config
    c0 = cfg.stem_width(arch.stem_width)
    model.stem.kernel.set_value(params["stem"]["w"][..., :c0])
    set_batch_norm(model.stem_bn, params["stem"]["bn"], stats["stem"]["bn"], c0)
    for blk, (s, b, cin, cout, mid, _) in zip(model.blocks, space._blocks(arch)):
        if b == 0:
            p, st = params["stages"][s]["first"], stats["stages"][s]["first"]
        else:
            p = jax.tree.map(lambda a, b=b: a[b - 1], params["stages"][s]["rest"])
            st = jax.tree.map(lambda a, b=b: a[b - 1], stats["stages"][s]["rest"])
        blk.conv1.kernel.set_value(p["conv1"][:cin, :mid])
        set_batch_norm(blk.bn1, p["bn1"], st["bn1"], mid)
        blk.conv2.kernel.set_value(p["conv2"][:, :, :mid, :mid])
        set_batch_norm(blk.bn2, p["bn2"], st["bn2"], mid)
        blk.conv3.kernel.set_value(p["conv3"][:mid, :cout])
        set_batch_norm(blk.bn3, p["bn3"], st["bn3"], cout)
        if b == 0:
            blk.down.kernel.set_value(p["down"][:cin, :cout])
            set_batch_norm(blk.bn_down, p["bn_down"], st["bn_down"], cout)
    c_last = model.classifier.kernel.shape[0]
    model.classifier.kernel.set_value(params["classifier"]["w"][:c_last])
    model.classifier.bias.set_value(params["classifier"]["b"])


register_supernet_family("resnet", ResNetSpace, ofa_config, tiny_config)
