"""The mobilenetv3 space: its genes, canonical strings, plan and block function.

Canonical string: ``r{resolution}`` then one ``-``-separated group per stage, each the ``.``-joined
active blocks ``k{kernel}e{expand}``. Example (3 stages): ``r8-k3e4.k5e6-k7e3-k3e3.k3e6.k5e4``.
Only active blocks are written, so the stage depth is the number of blocks in its group.

The plan is the stem (the stride-2 or 1 conv and the expand-1 first block), one inverted-residual
block per active block (static kernel and expand), and the head; :func:`block` computes each. The
trainers, the evaluation forward, the deployable model, the costs and the latency pieces follow
from them (:mod:`search_spaces.planned`).
"""

from __future__ import annotations

import re
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from search_spaces.base import ArchError, Gene, one_hot_plus_ordinal
from search_spaces.layers import ACTIVATIONS, hard_sigmoid, hard_swish
from search_spaces.mobilenetv3.config import MobileNetV3Arch, MobileNetV3Config
from search_spaces.mobilenetv3.supernet import HEAD_KEYS, STEM_KEYS, init_supernet, sort_channels
from search_spaces.plan import BlockSpec
from search_spaces.planned import PlannedSpace


def block(cfg: MobileNetV3Config, spec: BlockSpec, ops, x):
    """The stem, one inverted-residual block (1x1 expand, depthwise, squeeze-excite, 1x1 project)
    at static (kernel, expand), or the head (1x1 conv, pooling, feature layer, classifier)."""
    if spec.kind == "stem":
        c0, c1 = cfg.stem_channels, cfg.first_channels
        z = hard_swish(ops.bn("stem/bn", ops.conv("stem/w", x, cfg.stem_stride, cfg.symmetric), c0))
        y = jax.nn.relu(ops.bn("first/bn1", ops.dwconv("first/dw", z, c0, 3, 1, (3,), cfg.symmetric), c0))
        y = ops.bn("first/bn2", ops.dense("first/proj", y, c0, c1), c1)
        return y + z if c0 == c1 else y
    if spec.kind == "head":
        hc, fc = cfg.head_channels, cfg.feature_channels
        z = hard_swish(ops.bn("head/bn", ops.dense("head/w", x, cfg.stage_channels[-1], hc), hc))
        z = jnp.mean(z, axis=(1, 2))  # (B, head)
        z = hard_swish(ops.dense("feature/w", z, hc, fc, bias="feature/b" if cfg.feature_bias else None))
        return ops.dense("classifier/w", z, fc, cfg.num_classes, bias="classifier/b")
    a = spec.a
    stage, k, e = a["stage"], a["kernel"], a["expand"]
    cin, cout, stride = cfg.block_io(stage, 0 if a["first"] else 1)
    h = cin * e  # a run-time size under the elastic kernels (ops.static False)
    act = ACTIVATIONS[cfg.stage_acts[stage]]
    z = act(ops.bn("bn1", ops.dense("expand", x, cin, h), h))
    z = act(ops.bn("bn2", ops.dwconv("dw", z, h, k, stride, cfg.kernel_choices, cfg.symmetric), h))
    if cfg.stage_se[stage]:
        m = cfg.se_mid(h) if ops.static else jnp.maximum(h // 4, 1)
        pooled = jnp.mean(z, axis=(1, 2))  # (B, h)
        r = jax.nn.relu(ops.dense("se/rw", pooled, h, m, bias="se/rb"))
        gate = hard_sigmoid(ops.dense("se/ew", r, m, h, bias="se/eb"))
        z = z * gate[:, None, None, :]
    y = ops.bn("bn3", ops.dense("proj", z, h, cout), cout)
    return y + x if stride == 1 and cin == cout else y


_BLOCK_RE = re.compile(r"^k(\d+)e(\d+)$")


class MobileNetV3Space(PlannedSpace):
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

    # --- genome and strings ------------------------------------------------------------
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

    # --- plan ---------------------------------------------------------------------------------
    def plan(self, arch: MobileNetV3Arch) -> tuple[BlockSpec, ...]:
        """The stem, every active block (slot: stage and position; the later blocks of a stage are
        rows of one stacked subtree), the head."""
        self._validate(arch)
        specs = [BlockSpec("stem", "stem", keys=STEM_KEYS, name="stem/r{side}", group="stem")]
        for s, blocks in enumerate(arch.stages):
            for b, (k, e) in enumerate(blocks):
                first = b == 0
                where = "first" if first else "rest"
                specs.append(BlockSpec("block", (s, b), (("stage", s), ("first", first), ("kernel", k), ("expand", e)),
                                       path=("stages", s, where), index=None if first else b - 1,
                                       name=f"block/s{s + 1}/{where}/k{k}e{e}/h{{side}}", group=f"stage{s + 1}",
                                       summary=("kernel", "expand")))
        specs.append(BlockSpec("head", "head", keys=HEAD_KEYS, name="head/h{side}", group="head"))
        return tuple(specs)

    def block(self, spec: BlockSpec, ops, x):
        return block(self.config, spec, ops, x)

    def cover(self) -> list[MobileNetV3Arch]:
        """Every block at full depth with one (kernel, expand), for each pair, kernel-major."""
        cfg = self.config
        return [MobileNetV3Arch(cfg.resolutions[0], tuple(((k, e),) * cfg.max_depth for _ in range(cfg.num_stages)))
                for k in cfg.kernel_choices for e in cfg.expand_choices]

    def init_supernet(self, key: jax.Array) -> dict:
        # one program (as resnet's): eagerly, each differently shaped initialiser compiles on its own,
        # 96 s of a mobilenetv3 w1.0 training's 488 s warm-up on a loaded 2-core CPU (issue 29)
        return jax.jit(partial(init_supernet, self.config))(key)

    def sort_channels(self, params) -> dict:
        return sort_channels(self.config, params)

    def has_pallas(self) -> bool:
        # the elastic Pallas kernels implement 'SAME' padding and unrounded SE widths only
        return not self.config.symmetric and self.config.se_divisor == 1
