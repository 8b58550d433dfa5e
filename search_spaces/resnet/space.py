"""The resnet space: genes, canonical strings, the plan and the one block function (stem,
bottleneck, head); trainers, evaluation, the deployable model, costs and latency pieces are derived
from them (:mod:`search_spaces.planned`)."""

from __future__ import annotations

import re
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from search_spaces.base import Gene, log_count, one_hot_plus_ordinal
from search_spaces.errors import ArchError
from search_spaces.plan import BlockSpec
from search_spaces.planned import PlannedSpace
from search_spaces.resnet.config import ResNetArch, ResNetConfig
from search_spaces.resnet.supernet import init_supernet, sort_channels


def block(cfg: ResNetConfig, spec: BlockSpec, ops, x):
    """The 3x3 stem conv at its elastic width, one bottleneck block (1x1, 3x3, 1x1 convs; a strided
    1x1-conv shortcut on a stage's first block; ReLU after the sum) at static (out, middle) widths,
    or the head (global average pooling, classifier).

    A block reads as many input channels as ``x`` has: in the evaluation forward the activations
    between blocks are zero-padded to the stage's largest width, and the zero channels add exact
    zeros through the weights' extra rows."""
    if spec.kind == "stem":
        c0 = spec.a["width"]
        return jax.nn.relu(ops.bn("stem/bn", ops.conv("stem/w", x, cfg.stem_stride, cfg.ofa_imagenet, n_out=c0), c0))
    if spec.kind == "stem_res":  # OFA's input stem: the residual 3x3 conv (elastic depth may skip it)
        c = spec.a["width"]
        return jax.nn.relu(ops.bn("stem_res/bn", ops.conv("stem_res/w", x, 1, True, n_out=c), c)) + x[..., :c]
    if spec.kind == "stem_out":  # OFA's input stem: the 3x3 conv to the stem width, then the max-pool
        c = spec.a["width"]
        return max_pool(jax.nn.relu(ops.bn("stem_out/bn", ops.conv("stem_out/w", x, 1, True, n_out=c), c)))
    if spec.kind == "head":
        z = jnp.mean(x, axis=(1, 2))  # (B, C)
        return ops.dense("classifier/w", z, z.shape[-1], cfg.num_classes, bias="classifier/b")
    a = spec.a
    cout, mid, first = a["cout"], a["mid"], a["first"]
    stride = cfg.stage_strides[a["stage"]] if first else 1
    cin = x.shape[-1]
    z = jax.nn.relu(ops.bn("bn1", ops.dense("conv1", x, cin, mid), mid))
    z = jax.nn.relu(ops.bn("bn2", ops.conv("conv2", z, stride, cfg.ofa_imagenet, n_out=mid), mid))
    y = ops.bn("bn3", ops.dense("conv3", z, mid, cout), cout)
    if first and cfg.ofa_imagenet:
        sc = avg_pool_ceil(x, stride) if stride > 1 else x  # OFA's "avgpool_conv" shortcut
        sc = ops.bn("bn_down", ops.dense("down", sc, cin, cout), cout)
    elif first:
        sc = x[:, ::stride, ::stride, :]  # = a 1x1 'SAME' conv at this stride
        sc = ops.bn("bn_down", ops.dense("down", sc, cin, cout), cout)
    else:
        sc = x[..., :cout]
    return jax.nn.relu(y + sc)


def max_pool(x):
    """PyTorch's ``MaxPool2d(3, stride=2, padding=1)`` over (B, H, W, C) (OFA-ResNet's, after its
    stem): the maximum of 9 strided shifted copies, which converts to ONNX as slices and maxima
    (``lax.reduce_window`` became a MaxPool over NHWC that onnxruntime refused)."""
    oh, ow = (x.shape[1] - 1) // 2 + 1, (x.shape[2] - 1) // 2 + 1
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    out = None
    for i in range(3):
        for j in range(3):
            v = xp[:, i : i + 2 * oh - 1 : 2, j : j + 2 * ow - 1 : 2, :]
            out = v if out is None else jnp.maximum(out, v)
    return out


def avg_pool_ceil(x, s: int):
    """PyTorch's ``AvgPool2d(s, stride=s, ceil_mode=True)`` over (B, H, W, C): on a side that ``s``
    does not divide, the last window is cut by the border and averages the pixels it holds. A sum
    of ``s * s`` strided copies (ONNX: slices and adds, as :func:`max_pool`)."""
    h, w = x.shape[1:3]
    oh, ow = -(-h // s), -(-w // s)
    xp = jnp.pad(x, ((0, 0), (0, oh * s - h), (0, ow * s - w), (0, 0)))
    total = None
    for i in range(s):
        for j in range(s):
            v = xp[:, i::s, j::s, :]
            total = v if total is None else total + v
    if h % s == 0 and w % s == 0:
        return total / (s * s)
    rows = np.minimum(s, h - s * np.arange(oh))  # pixels of each window inside the map
    cols = np.minimum(s, w - s * np.arange(ow))
    return total / jnp.asarray((rows[:, None] * cols[None, :])[None, :, :, None], x.dtype)


NUMBER = re.compile(r"^(\d+)$")


def choice_set(values) -> str:
    return "{" + ", ".join(map(str, values)) + "}"


class ResNetSpace(PlannedSpace):
    """OFA ResNet space over a :class:`ResNetConfig`."""

    # OFA-ResNet's progressive shrinking order: depth, then expand ratio, then width
    progressive_phases = (("depth", ("depth",)), ("expand", ("depth", "expand")),
                          ("width", ("depth", "expand", "width", "resolution")))

    def __init__(self, config: ResNetConfig, name: str = "resnet", options: dict | None = None):
        genes = [Gene("resolution", config.resolutions), Gene("stem.width", config.width_choices)]
        for s in range(config.num_stages):
            genes.append(Gene(f"s{s + 1}.depth", config.depth_choices(s)))
            genes.append(Gene(f"s{s + 1}.width", config.width_choices))
            for b in range(max(config.depth_choices(s))):
                genes.append(Gene(f"s{s + 1}.b{b + 1}.expand", config.expand_choices))
        super().__init__(config, name, options, genes)

    # --- genome ------------------------------------------------------------------------
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
            raise ArchError(f"resolution {arch.resolution} not in {choice_set(cfg.resolutions)}")
        if arch.stem_width not in cfg.width_choices:
            raise ArchError(f"stem width {arch.stem_width} not in {choice_set(cfg.width_choices)} (percent)")
        if len(arch.stages) != cfg.num_stages:
            raise ArchError(f"{len(arch.stages)} stages; {self.name} has {cfg.num_stages}")
        for s, (width, expands) in enumerate(arch.stages):
            if width not in cfg.width_choices:
                raise ArchError(f"stage {s + 1}: width {width} not in {choice_set(cfg.width_choices)} (percent)")
            if len(expands) not in cfg.depth_choices(s):
                raise ArchError(f"stage {s + 1}: depth {len(expands)} not in {choice_set(cfg.depth_choices(s))}")
            for b, e in enumerate(expands):
                if e not in cfg.expand_choices:
                    raise ArchError(f"stage {s + 1} block {b + 1}: expand {e} not in "
                                    f"{choice_set(cfg.expand_choices)} (percent)")

    def encode(self, arch: ResNetArch) -> str:
        self._validate(arch)
        groups = [".".join([f"w{w}", *(f"e{e}" for e in expands)]) for w, expands in arch.stages]
        return f"r{arch.resolution}-w{arch.stem_width}-" + "-".join(groups)

    def decode(self, text: str) -> ResNetArch:
        number, resolution, stem, groups = self._fields(text, "w<stem width>")
        stem_width = number(stem, "w", "stem width", self.config.width_choices)
        return self._checked(text, ResNetArch(resolution, stem_width, self._stages(number, groups)))

    def _fields(self, text: str, stem_syntax: str):
        """(a parser of one ``prefix<number>`` field, the resolution, the stem group, the stage groups)
        of the string ``text``, whose stem group is written ``stem_syntax``."""
        cfg = self.config
        example = self.encode(self.smallest())
        parts = str(text).strip().split("-")

        def number(field: str, prefix: str, what: str, choices) -> int:
            if not field.startswith(prefix) or not NUMBER.match(field[len(prefix):]):
                raise ArchError(f"arch {text!r}: {what} field {field!r} must be {prefix}<{what.split()[-1]}> "
                                f"with {what.split()[-1]} in {choice_set(choices)} (example: {example})")
            return int(field[len(prefix):])

        resolution = number(parts[0], "r", "resolution", cfg.resolutions)
        if len(parts) - 2 != cfg.num_stages:
            raise ArchError(f"arch {text!r} has {max(len(parts) - 2, 0)} stage groups after r<resolution>-"
                            f"{stem_syntax}; {self.name} needs {cfg.num_stages}, separated by '-' (example: {example})")
        return number, resolution, parts[1], parts[2:]

    def _stages(self, number, groups) -> tuple:
        """Each stage group ``w<width>.e<expand>...`` as (width, expands)."""
        cfg = self.config
        stages = []
        for s, group in enumerate(groups):
            fields = group.split(".")
            width = number(fields[0], "w", f"stage {s + 1} width", cfg.width_choices)
            expands = tuple(number(f, "e", f"stage {s + 1} block {b + 1} expand", cfg.expand_choices)
                            for b, f in enumerate(fields[1:]))
            stages.append((width, expands))
        return tuple(stages)

    def _checked(self, text: str, arch):
        """``arch`` parsed from ``text``, validated (the error names the string)."""
        try:
            self._validate(arch)
        except ArchError as e:
            raise ArchError(f"arch {text!r}: {e}") from None
        return arch

    # --- plan ---------------------------------------------------------------------------------
    def plan(self, arch: ResNetArch) -> tuple[BlockSpec, ...]:
        """The stem (at its width), every active block (slot: stage and position; a stage's later
        blocks are rows of one stacked subtree), the head."""
        cfg = self.config
        self._validate(arch)
        specs = self._stem_plan(arch)
        for s, b, _, cout, mid, _, _ in cfg.block_shapes(arch):
            where = "first" if b == 0 else "rest"
            specs.append(BlockSpec("block", (s, b), (("stage", s), ("first", b == 0), ("cout", cout), ("mid", mid)),
                                   path=("stages", s, where), index=None if b == 0 else b - 1,
                                   name=f"block/s{s + 1}/{where}/i{{channels}}o{cout}m{mid}/h{{side}}",
                                   group=f"stage{s + 1}"))
        specs.append(BlockSpec("head", "head", keys=("classifier",), name="head/c{channels}/h{side}", group="head"))
        return tuple(specs)

    def _stem_plan(self, arch) -> list[BlockSpec]:
        c0 = self.config.stem_width(arch.stem_width)
        return [BlockSpec("stem", "stem", (("width", c0),), keys=("stem",), name=f"stem/r{{side}}/c{c0}", group="stem")]

    def block(self, spec: BlockSpec, ops, x):
        return block(self.config, spec, ops, x)

    def cover(self) -> list[ResNetArch]:
        """Full depth, one expand ratio, the stem at one width and the stages alternating between
        two: over every (width, width, expand) every block meets every input width it can get."""
        cfg = self.config
        return [ResNetArch(cfg.resolutions[0], w1, tuple(((w2, w1)[s % 2], (e,) * max(cfg.depth_choices(s)))
                                                          for s in range(cfg.num_stages)))
                for w1 in cfg.width_choices for w2 in cfg.width_choices for e in cfg.expand_choices]

    def structure_features(self, arch: ResNetArch) -> np.ndarray:
        """The genome's one-hot (:meth:`features`), then per stage its depth, width and mean and max
        expand ratio (percent / 100), log10 MACs and params of the stem, every stage and the head,
        the total log10 MACs and params, the stem width and the resolution (over the largest)."""
        macs, params = (list(d.values()) for d in self.group_costs(arch))
        rows = []
        for width, expands in arch.stages:
            rows += [len(expands), width / 100, float(np.mean(expands)) / 100 if expands else 0.0,
                     max(expands, default=0) / 100]
        rows += [log_count(v) for v in (*macs, *params, sum(macs), sum(params))]
        rows += [arch.stem_width / 100, arch.resolution / max(self.config.resolutions)]
        return np.concatenate([self.features(arch), np.asarray(rows, np.float32)])

    def structure_feature_names(self) -> list[str]:
        n = self.config.num_stages
        names = [f"stage{s + 1}.{f}" for s in range(n) for f in ("depth", "width", "expand_mean", "expand_max")]
        parts = ["stem", *(f"stage{s + 1}" for s in range(n)), "head"]
        names += [f"{p}.log_macs" for p in parts] + [f"{p}.log_params" for p in parts]
        return self.feature_names() + names + ["log_macs", "log_params", "stem_width", "resolution"]

    def init_supernet(self, key: jax.Array) -> dict:
        # jitted: eagerly, each of the many differently shaped initialisers compiles on its own
        return jax.jit(partial(init_supernet, self.config))(key)

    def sort_channels(self, params) -> dict:
        return sort_channels(self.config, params)
