"""The mobilenetv3 space: its genes, canonical strings, exact costs and run-time selection arrays.

Canonical string: ``r{resolution}`` then one ``-``-separated group per stage, each the ``.``-joined
active blocks ``k{kernel}e{expand}``. Example (3 stages): ``r8-k3e4.k5e6-k7e3-k3e3.k3e6.k5e4``.
Only active blocks are written, so the stage depth is the number of blocks in its group.

The models, trainers and latency pieces live in the sibling modules; the methods here delegate.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from search_spaces.base import ArchError, Gene, LatencyPiece, SupernetSpace, log_count, one_hot_plus_ordinal
from search_spaces.layers import same_padding
from search_spaces.mobilenetv3.config import MobileNetV3Arch, MobileNetV3Config
from search_spaces.mobilenetv3.latency import latency_keys, latency_pieces
from search_spaces.mobilenetv3.pallas_trainer import KernelSupernet
from search_spaces.mobilenetv3.static import StaticMobileNetV3, load_static_weights
from search_spaces.mobilenetv3.supernet import init_supernet, sort_channels, supernet_apply
from search_spaces.mobilenetv3.trainer import ComposedSupernet


_BLOCK_RE = re.compile(r"^k(\d+)e(\d+)$")


class MobileNetV3Space(SupernetSpace):
    """OFA MobileNetV3 space over a :class:`MobileNetV3Config`."""

    progressive_phases = (("kernel", ("kernel",)), ("depth", ("kernel", "depth")),
                          ("width", ("kernel", "depth", "expand", "resolution")))

    def __init__(self, config: MobileNetV3Config, name: str = "mobilenetv3", options: dict | None = None):
        genes = [Gene("resolution", config.resolutions)]
        for s in range(config.num_stages):
            genes.append(Gene(f"s{s + 1}.depth", config.depth_choices))
            for b in range(config.max_depth):
                genes.append(Gene(f"s{s + 1}.b{b + 1}.kernel", config.kernel_choices))
                genes.append(Gene(f"s{s + 1}.b{b + 1}.expand", config.expand_choices))
        super().__init__(config, name, options, genes)

    # --- genome ------------------------------------------------------------------------
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
    def structure_features(self, arch: MobileNetV3Arch) -> np.ndarray:
        """The genome's one-hot (:meth:`features`), then per stage its depth, mean and max kernel,
        mean and max expand ratio, log10 MACs and params; the stem's and head's, the total log10
        MACs and params, and the resolution (over the largest)."""
        cfg = self.config
        macs, params = self._stage_costs(arch)
        rows = []
        for s, blocks in enumerate(arch.stages):
            ks, es = [k for k, _ in blocks], [e for _, e in blocks]
            rows += [len(blocks), float(np.mean(ks)) if ks else 0.0, max(ks, default=0),
                     float(np.mean(es)) if es else 0.0, max(es, default=0)]
        rows += [log_count(v) for v in (*macs, *params, sum(macs), sum(params))]
        rows.append(arch.resolution / max(cfg.resolutions))
        return np.concatenate([self.features(arch), np.asarray(rows, np.float32)])

    def structure_feature_names(self) -> list[str]:
        n = self.config.num_stages
        names = [f"stage{s + 1}.{f}" for s in range(n)
                 for f in ("depth", "kernel_mean", "kernel_max", "expand_mean", "expand_max")]
        parts = ["stem", *(f"stage{s + 1}" for s in range(n)), "head"]
        names += [f"{p}.log_macs" for p in parts] + [f"{p}.log_params" for p in parts]
        return self.feature_names() + names + ["log_macs", "log_params", "resolution"]

    def _stage_costs(self, arch: MobileNetV3Arch) -> tuple[list[int], list[int]]:
        """MACs and params of the stem, of every stage and of the head (the layers after the stages)."""
        n = self.config.num_stages
        macs, params = [0] * (n + 2), [0] * (n + 2)
        ends = np.cumsum([len(b) for b in arch.stages])  # block count at the end of each stage
        block, part = 0, 0
        for kind, m, p in self._layers(arch):
            if kind == "expand":
                part = 1 + int(np.searchsorted(ends, block, side="right"))
            elif kind == "head":
                part = n + 1
            macs[part] += m
            params[part] += p
            block += kind == "proj"
        return macs, params

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
                    mid = cfg.se_mid(hid)
                    yield "se", 2 * hid * mid, 2 * hid * mid + mid + hid
                yield "proj", h * w * hid * cout, hid * cout + 2 * cout
        clast = cfg.stage_channels[-1]
        yield "head", h * w * clast * cfg.head_channels, clast * cfg.head_channels + 2 * cfg.head_channels
        f = cfg.feature_channels
        yield "feature", cfg.head_channels * f, cfg.head_channels * f + (f if cfg.feature_bias else 0)
        yield "classifier", f * cfg.num_classes, f * cfg.num_classes + cfg.num_classes

    def flops(self, arch: MobileNetV3Arch) -> int:
        return int(sum(m for _, m, _ in self._layers(arch)))

    def params(self, arch: MobileNetV3Arch) -> int:
        return int(sum(p for _, _, p in self._layers(arch)))

    # --- models --------------------------------------------------------------------------
    # Thin delegations to the package's modules; every space has this same shape (boilerplate).
    def init_supernet(self, key: jax.Array) -> dict:
        # one program (as resnet's): eagerly, each differently shaped initialiser compiles on its own,
        # 96 s of a mobilenetv3 w1.0 training's 488 s warm-up on a loaded 2-core CPU (issue 29)
        return jax.jit(partial(init_supernet, self.config))(key)

    def supernet_apply(self, params, stats, x, arch_arr, *, mode: str, train_vjp: bool = True):
        return supernet_apply(self.config, params, stats, x, arch_arr, mode=mode, train_vjp=train_vjp)

    def static_model(self, arch: MobileNetV3Arch, rngs: nnx.Rngs) -> StaticMobileNetV3:
        self._validate(arch)
        return StaticMobileNetV3(self.config, arch, rngs)

    def extract(self, params, stats, arch: MobileNetV3Arch) -> StaticMobileNetV3:
        """The standalone subnet with weights sliced from the supernet and the given BN statistics."""
        model = self.static_model(arch, nnx.Rngs(0))
        load_static_weights(self.config, model, params, stats, arch)
        return model

    def sort_channels(self, params) -> dict:
        return sort_channels(self.config, params)

    def has_pallas(self) -> bool:
        # the elastic Pallas kernels implement 'SAME' padding and unrounded SE widths only
        return not self.config.symmetric and self.config.se_divisor == 1

    # --- latency pieces ----------------------------------------------------------------
    def latency_keys(self, arch: MobileNetV3Arch) -> list[str]:
        return latency_keys(self.config, arch)

    def latency_pieces(self) -> list[LatencyPiece]:
        """The stem (per resolution), every block (stage, first/rest, kernel, expand, input side)
        and the head (per final side), as :class:`StaticMobileNetV3`'s own submodules."""
        return latency_pieces(self)

    # --- training -----------------------------------------------------------------------
    def make_trainer(self, mean: float, std: float, label_smoothing: float, kernels: str):
        """Composed per-block static variants on XLA (trainer.py), or one program through the
        elastic Pallas kernels (pallas_trainer.py)."""
        if kernels == "pallas":
            return KernelSupernet(self.config, mean, std, label_smoothing, implementation="pallas")
        return ComposedSupernet(self.config, mean, std, label_smoothing)
