"""A small supernet space written only for the tests: all that adding a space takes.

Its config, its architecture value and strings, the weights' layout, the plan and one block
function; :class:`search_spaces.planned.PlannedSpace` derives the trainers, the evaluation forward,
the static model, the costs and the latency pieces. A stem conv, one stage of elastic depth whose
blocks (1x1 expand to an elastic width, depthwise 3x3, 1x1 project, residual) each choose their
width, and a pooled classifier. Strings: ``r8-w8.w16`` (resolution, then each active block's width).
Registering it would be one line: ``register_space("toy", lambda **o: ToySpace(ToyConfig(**o)), supernet=True)``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from search_spaces.base import ArchError, Gene, one_hot_plus_ordinal
from search_spaces.plan import BlockSpec
from search_spaces.planned import PlannedSpace


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    channels: int = 8
    widths: tuple[int, ...] = (8, 16)
    depth_choices: tuple[int, ...] = (1, 2, 3)
    resolutions: tuple[int, ...] = (8,)
    in_channels: int = 1
    num_classes: int = 10


@dataclasses.dataclass(frozen=True)
class ToyArch:
    resolution: int
    widths: tuple[int, ...]


def _bn(c, stack=()):
    return {"scale": jnp.ones(stack + (c,)), "bias": jnp.zeros(stack + (c,))}


def init_supernet(cfg: ToyConfig, key) -> dict:
    c, w, n = cfg.channels, max(cfg.widths), max(cfg.depth_choices)
    k = jax.random.split(key, 5)
    return {
        "stem": {"w": jax.random.normal(k[0], (3, 3, cfg.in_channels, c)) * 0.3, "bn": _bn(c)},
        "blocks": {"expand": jax.random.normal(k[1], (n, c, w)) * c ** -0.5, "bn1": _bn(w, (n,)),
                   "dw": jax.random.normal(k[2], (n, 3, 3, w)) / 3, "bn2": _bn(w, (n,)),
                   "proj": jax.random.normal(k[3], (n, w, c)) * w ** -0.5, "bn3": _bn(c, (n,))},
        "classifier": {"w": jax.random.normal(k[4], (c, cfg.num_classes)) * 0.1, "b": jnp.zeros(cfg.num_classes)},
    }


def block(cfg: ToyConfig, spec: BlockSpec, ops, x):
    c = cfg.channels
    if spec.kind == "stem":
        return jax.nn.relu(ops.bn("stem/bn", ops.conv("stem/w", x, 1), c))
    if spec.kind == "head":
        return ops.dense("classifier/w", jnp.mean(x, axis=(1, 2)), c, cfg.num_classes, bias="classifier/b")
    w = spec.a["width"]
    z = jax.nn.relu(ops.bn("bn1", ops.dense("expand", x, c, w), w))
    z = jax.nn.relu(ops.bn("bn2", ops.dwconv("dw", z, w, 3, 1, (3,)), w))
    return x + ops.bn("bn3", ops.dense("proj", z, w, c), c)


class ToySpace(PlannedSpace):
    def __init__(self, config: ToyConfig, name: str = "toy", options: dict | None = None):
        n = max(config.depth_choices)
        genes = [Gene("resolution", config.resolutions), Gene("depth", config.depth_choices)]
        genes += [Gene(f"b{i + 1}.width", config.widths) for i in range(n)]
        super().__init__(config, name, options, genes)

    def from_genome(self, genome) -> ToyArch:
        g, cfg = self.check_genome(genome), self.config
        depth = cfg.depth_choices[g[1]]
        return ToyArch(cfg.resolutions[g[0]], tuple(cfg.widths[i] for i in g[2 : 2 + depth]))

    def to_genome(self, arch: ToyArch) -> np.ndarray:
        self.encode(arch)  # validates
        cfg, n = self.config, max(self.config.depth_choices)
        widths = [cfg.widths.index(w) for w in arch.widths] + [0] * (n - len(arch.widths))
        return np.asarray([cfg.resolutions.index(arch.resolution), cfg.depth_choices.index(len(arch.widths)),
                           *widths], np.int32)

    def features(self, arch: ToyArch) -> np.ndarray:
        active = np.arange(len(self.genes)) < 2 + len(arch.widths)
        return one_hot_plus_ordinal(self.genes, self.to_genome(arch), active)

    def encode(self, arch: ToyArch) -> str:
        cfg = self.config
        if arch.resolution not in cfg.resolutions:
            raise ArchError(f"resolution {arch.resolution} not in {list(cfg.resolutions)}")
        if len(arch.widths) not in cfg.depth_choices:
            raise ArchError(f"depth {len(arch.widths)} not in {list(cfg.depth_choices)}")
        for w in arch.widths:
            if w not in cfg.widths:
                raise ArchError(f"width {w} not in {list(cfg.widths)}")
        return f"r{arch.resolution}-" + ".".join(f"w{w}" for w in arch.widths)

    def decode(self, text: str) -> ToyArch:
        try:
            res, blocks = str(text).strip().split("-")
            arch = ToyArch(int(res.removeprefix("r")), tuple(int(b.removeprefix("w")) for b in blocks.split(".")))
        except ValueError:
            raise ArchError(f"arch {text!r} must look like r8-w8.w16 (resolution, then each block's width)") from None
        self.encode(arch)
        return arch

    def plan(self, arch: ToyArch) -> tuple[BlockSpec, ...]:
        self.encode(arch)
        blocks = tuple(BlockSpec("block", b, (("width", w),), path=("blocks",), index=b, name=f"block/w{w}/h{{side}}",
                                 group="stage1", summary=("width",)) for b, w in enumerate(arch.widths))
        return (BlockSpec("stem", "stem", keys=("stem",), name="stem/r{side}", group="stem"), *blocks,
                BlockSpec("head", "head", keys=("classifier",), name="head/h{side}", group="head"))

    def block(self, spec, ops, x):
        return block(self.config, spec, ops, x)

    def cover(self) -> list[ToyArch]:
        cfg = self.config
        return [ToyArch(cfg.resolutions[0], (w,) * max(cfg.depth_choices)) for w in cfg.widths]

    def init_supernet(self, key):
        return jax.jit(lambda k: init_supernet(self.config, k))(key)
