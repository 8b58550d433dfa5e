"""The resnet space: genes, canonical strings, costs, run-time selection arrays and latency pieces,
delegating the math to :mod:`~search_spaces.resnet.supernet`, :mod:`~search_spaces.resnet.static`
and :mod:`~search_spaces.resnet.trainer`."""

from __future__ import annotations

import re
from functools import partial
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from search_spaces.base import Gene, LatencyPiece, SupernetSpace, log_count, one_hot_plus_ordinal
from search_spaces.errors import ArchError
from search_spaces.layers import same_padding
from search_spaces.resnet.config import BlockShape, ResNetArch, ResNetConfig
from search_spaces.resnet.static import StaticBottleneck, StaticHead, StaticResNet, StaticStem, load_static_weights
from search_spaces.resnet.supernet import init_supernet, sort_channels, supernet_apply
from search_spaces.resnet.trainer import ComposedResNet


_NUM = re.compile(r"^(\d+)$")


def _set(values) -> str:
    return "{" + ", ".join(map(str, values)) + "}"


class ResNetSpace(SupernetSpace):
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

    # --- costs ---------------------------------------------------------------------------
    def _layers(self, arch: ResNetArch):
        """Yields (part, macs, params) per layer of the static subnet; part 0 is the stem, 1..S the
        stages, S + 1 the head."""
        cfg = self.config
        h = cfg.stem_side(arch.resolution)
        c0 = cfg.stem_width(arch.stem_width)
        yield 0, h * h * 9 * cfg.in_channels * c0, 9 * cfg.in_channels * c0 + 2 * c0
        for s, b, cin, cout, mid, stride, h in cfg.block_shapes(arch):
            yield 1 + s, h * h * cin * mid, cin * mid + 2 * mid
            out = same_padding(h, 3, stride)[2]
            yield 1 + s, out * out * 9 * mid * mid, 9 * mid * mid + 2 * mid
            yield 1 + s, out * out * mid * cout, mid * cout + 2 * cout
            if b == 0:  # the 1x1 shortcut conv at the block's stride
                yield 1 + s, out * out * cin * cout, cin * cout + 2 * cout
        c_last = cfg.head_width(arch)
        yield cfg.num_stages + 1, c_last * cfg.num_classes, c_last * cfg.num_classes + cfg.num_classes

    def flops(self, arch: ResNetArch) -> int:
        return int(sum(m for _, m, _ in self._layers(arch)))

    def params(self, arch: ResNetArch) -> int:
        return int(sum(p for _, _, p in self._layers(arch)))

    def structure_features(self, arch: ResNetArch) -> np.ndarray:
        """The genome's one-hot (:meth:`features`), then per stage its depth, width and mean and max
        expand ratio (percent / 100), log10 MACs and params of the stem, every stage and the head,
        the total log10 MACs and params, the stem width and the resolution (over the largest)."""
        cfg = self.config
        n = cfg.num_stages
        macs, params = [0] * (n + 2), [0] * (n + 2)
        for part, m, p in self._layers(arch):
            macs[part] += m
            params[part] += p
        rows = []
        for width, expands in arch.stages:
            rows += [len(expands), width / 100, float(np.mean(expands)) / 100 if expands else 0.0,
                     max(expands, default=0) / 100]
        rows += [log_count(v) for v in (*macs, *params, sum(macs), sum(params))]
        rows += [arch.stem_width / 100, arch.resolution / max(cfg.resolutions)]
        return np.concatenate([self.features(arch), np.asarray(rows, np.float32)])

    def structure_feature_names(self) -> list[str]:
        n = self.config.num_stages
        names = [f"stage{s + 1}.{f}" for s in range(n) for f in ("depth", "width", "expand_mean", "expand_max")]
        parts = ["stem", *(f"stage{s + 1}" for s in range(n)), "head"]
        names += [f"{p}.log_macs" for p in parts] + [f"{p}.log_params" for p in parts]
        return self.feature_names() + names + ["log_macs", "log_params", "stem_width", "resolution"]

    # --- models --------------------------------------------------------------------------
    # Thin delegations to the package's modules; every space has this same shape (boilerplate).
    def init_supernet(self, key: jax.Array) -> dict:
        # jitted: eagerly, each of the many differently shaped initialisers compiles on its own
        return jax.jit(partial(init_supernet, self.config))(key)

    def supernet_apply(self, params, stats, x, arch_arr, *, mode: str):
        return supernet_apply(self.config, params, stats, x, arch_arr, mode=mode)

    def static_model(self, arch: ResNetArch, rngs: nnx.Rngs) -> StaticResNet:
        self._validate(arch)
        return StaticResNet(self.config, arch, rngs)

    def extract(self, params, stats, arch: ResNetArch) -> StaticResNet:
        """The standalone subnet with weights sliced from the supernet and the given BN statistics."""
        model = self.static_model(arch, nnx.Rngs(0))
        load_static_weights(self.config, model, params, stats, arch)
        return model

    def sort_channels(self, params) -> dict:
        return sort_channels(self.config, params)

    def make_trainer(self, mean: float, std: float, label_smoothing: float, kernels: str):
        """Composed per-block static variants (search_spaces/engine.py); no Pallas formulation."""
        if kernels == "pallas":
            raise ArchError(f"space {self.name!r} has no Pallas formulation; use kernels 'xla' or 'auto'")
        return ComposedResNet(self.config, mean, std, label_smoothing)

    # --- latency pieces ------------------------------------------------------------------
    def latency_keys(self, arch: ResNetArch) -> list[str]:
        cfg = self.config
        self._validate(arch)
        keys = [_stem_key(arch.resolution, cfg.stem_width(arch.stem_width))]
        keys += [_block_key(b) for b in cfg.block_shapes(arch)]
        keys.append(_head_key(cfg.head_width(arch), cfg.head_side(arch.resolution)))
        return keys

    def latency_pieces(self) -> list[LatencyPiece]:
        """The stem (per resolution and width), every block (stage, first/rest, in, out and middle
        channels, input side) and the head (per width and final side), as :class:`StaticResNet`'s
        own submodules."""
        cfg = self.config
        pieces: dict[str, LatencyPiece] = {}

        def add(key: str, input_shape: tuple[int, ...], cls, *args) -> None:
            pieces.setdefault(key, LatencyPiece(key, input_shape, partial(_fresh, cls, *args)))

        for r in cfg.resolutions:
            for w in cfg.width_choices:
                c0 = cfg.stem_width(w)
                add(_stem_key(r, c0), (r, r, cfg.in_channels), StaticStem, cfg.in_channels, c0, cfg.stem_stride)
        for r in cfg.resolutions:
            # every stage at full depth: its first block and one later block stand for all positions
            deepest = ResNetArch(r, 100, tuple((100, (cfg.expand_choices[0],) * max(cfg.depth_choices(s)))
                                               for s in range(cfg.num_stages)))
            for at in cfg.block_shapes(deepest):
                if at.index > 1:
                    continue
                s, first = at.stage, at.index == 0
                if not first:
                    ins = None
                elif s == 0:
                    ins = [cfg.stem_width(w) for w in cfg.width_choices]
                else:
                    ins = [cfg.stage_width(s - 1, w) for w in cfg.width_choices]
                for cout, mid in cfg.branches(s):
                    for cin in ins or [cout]:
                        b = at._replace(cin=cin, cout=cout, mid=mid)
                        add(_block_key(b), (b.side, b.side, cin), StaticBottleneck, cin, cout, mid, b.stride, first)
        for r in cfg.resolutions:
            side = cfg.head_side(r)
            for w in cfg.width_choices:
                c = cfg.stage_width(cfg.num_stages - 1, w)
                add(_head_key(c, side), (side, side, c), StaticHead, c, cfg.num_classes)
        return list(pieces.values())


def _fresh(cls, *args):
    """A new ``cls(*args)`` module; the latency code builds it under ``nnx.eval_shape``."""
    return cls(*args, nnx.Rngs(0))


def _stem_key(resolution: int, c0: int) -> str:
    return f"stem/r{resolution}/c{c0}"


def _block_key(b: BlockShape) -> str:
    return f"block/s{b.stage + 1}/{'first' if b.index == 0 else 'rest'}/i{b.cin}o{b.cout}m{b.mid}/h{b.side}"


def _head_key(channels: int, side: int) -> str:
    return f"head/c{channels}/h{side}"
