"""``resnet-imagenet``: Once-for-All's ImageNet ResNet-50 supernet (``OFAResNets``, what
``nas import ofa --net ofa_resnet50`` fills with its weights), on the resnet space's block function.

It is its own space class because its genome differs from ``resnet``'s: OFA's input stem has two
elastic widths (its middle width, shared by the first two convs, and its output width) and an
elastic depth of its own (the residual conv that every subnet but the full-depth ones skips), where
``resnet``'s stem is one conv at one width. The stages, the plan's blocks and all the derived parts
are the resnet space's.

Canonical string: ``r{resolution}-m{stem middle width}.d{stem depth}.w{stem width}`` then one group
per stage as in ``resnet`` (``w{width}`` then the active blocks' ``e{expand}``), in percent. Example:
``r224-m65.d0.w100-w80.e20.e25-w65.e35.e35-w100.e20.e20.e20.e20-w65.e25.e25``. The stem middle
width's choices are the width choices that give distinct channel counts (OFA-ResNet50's 65% and 80%
are both 24 channels: ``m65``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from search_spaces.base import Gene, one_hot_plus_ordinal
from search_spaces.errors import ArchError
from search_spaces.plan import BlockSpec
from search_spaces.planned import PlannedSpace
from search_spaces.resnet.config import ResNetConfig, ResNetImageNetArch
from search_spaces.resnet.space import ResNetSpace, choice_set


class ResNetImageNetSpace(ResNetSpace):
    """OFA-ResNet50 over a :class:`ResNetConfig` with ``ofa_imagenet`` (:func:`imagenet_config`)."""

    def __init__(self, config: ResNetConfig, name: str = "resnet-imagenet", options: dict | None = None):
        assert config.ofa_imagenet, "resnet-imagenet needs OFA's input stem (imagenet_config)"
        genes = [Gene("resolution", config.resolutions), Gene("stem.mid", config.stem_mid_choices()),
                 Gene("stem.depth", (0, 1)), Gene("stem.width", config.width_choices)]
        for s in range(config.num_stages):
            genes.append(Gene(f"s{s + 1}.depth", config.depth_choices(s)))
            genes.append(Gene(f"s{s + 1}.width", config.width_choices))
            for b in range(max(config.depth_choices(s))):
                genes.append(Gene(f"s{s + 1}.b{b + 1}.expand", config.expand_choices))
        PlannedSpace.__init__(self, config, name, options, genes)

    # --- genome ------------------------------------------------------------------------
    def from_genome(self, genome: Sequence[int]) -> ResNetImageNetArch:
        cfg = self.config
        g = self.check_genome(genome)
        stages, pos = [], 4
        for s in range(cfg.num_stages):
            depth = cfg.depth_choices(s)[g[pos]]
            width = cfg.width_choices[g[pos + 1]]
            stages.append((width, tuple(cfg.expand_choices[i] for i in g[pos + 2 : pos + 2 + depth])))
            pos += 2 + max(cfg.depth_choices(s))
        return ResNetImageNetArch(cfg.resolutions[g[0]], cfg.stem_mid_choices()[g[1]], g[2], cfg.width_choices[g[3]],
                                  tuple(stages))

    def to_genome(self, arch: ResNetImageNetArch) -> np.ndarray:
        cfg = self.config
        self._validate(arch)
        g = [cfg.resolutions.index(arch.resolution), cfg.stem_mid_choices().index(arch.stem_mid), arch.stem_depth,
             cfg.width_choices.index(arch.stem_width)]
        for s, (width, expands) in enumerate(arch.stages):
            g += [cfg.depth_choices(s).index(len(expands)), cfg.width_choices.index(width)]
            g += [cfg.expand_choices.index(e) for e in expands]
            g += [0] * (max(cfg.depth_choices(s)) - len(expands))
        return np.asarray(g, np.int32)

    def features(self, arch: ResNetImageNetArch) -> np.ndarray:
        active = [True] * 4
        for s, (_, expands) in enumerate(arch.stages):
            active += [True, True] + [b < len(expands) for b in range(max(self.config.depth_choices(s)))]
        return one_hot_plus_ordinal(self._genes, self.to_genome(arch), np.asarray(active))

    # --- strings -------------------------------------------------------------------------
    def _validate(self, arch) -> None:
        cfg = self.config
        if not isinstance(arch, ResNetImageNetArch):
            raise ArchError(f"{self.name} takes a ResNetImageNetArch, not {type(arch).__name__}")
        mids = cfg.stem_mid_choices()
        if arch.stem_mid not in mids:
            raise ArchError(f"stem middle width {arch.stem_mid} not in {choice_set(mids)} (percent; the width choices "
                            "that give distinct channel counts)")
        if arch.stem_depth not in (0, 1):
            raise ArchError(f"stem depth {arch.stem_depth} not in {{0, 1}} (its residual conv skipped or run)")
        super()._validate(arch)

    def encode(self, arch: ResNetImageNetArch) -> str:
        self._validate(arch)
        groups = [".".join([f"w{w}", *(f"e{e}" for e in expands)]) for w, expands in arch.stages]
        return f"r{arch.resolution}-m{arch.stem_mid}.d{arch.stem_depth}.w{arch.stem_width}-" + "-".join(groups)

    def decode(self, text: str) -> ResNetImageNetArch:
        cfg = self.config
        number, resolution, stem_group, groups = self._fields(text, "m<stem middle width>.d<stem depth>.w<stem width>")
        stem = stem_group.split(".")
        if len(stem) != 3:
            raise ArchError(f"arch {text!r}: stem group {stem_group!r} must be m<middle width>.d<depth>.w<width> "
                            f"(example: {self.encode(self.smallest())})")
        mid = number(stem[0], "m", "stem middle width", cfg.stem_mid_choices())
        depth = number(stem[1], "d", "stem depth", (0, 1))
        width = number(stem[2], "w", "stem width", cfg.width_choices)
        return self._checked(text, ResNetImageNetArch(resolution, mid, depth, width, self._stages(number, groups)))

    # --- plan ---------------------------------------------------------------------------------
    def _stem_plan(self, arch: ResNetImageNetArch) -> list[BlockSpec]:
        """The stride-2 conv at the middle width, the residual conv (when ``stem_depth`` is 1), the
        conv to the stem width with the max-pool."""
        cfg = self.config
        m, c0 = cfg.stem_mid(arch.stem_mid), cfg.stem_width(arch.stem_width)
        specs = [BlockSpec("stem", "stem", (("width", m),), keys=("stem",), name=f"stem/r{{side}}/c{m}", group="stem")]
        if arch.stem_depth:
            specs.append(BlockSpec("stem_res", "stem_res", (("width", m),), keys=("stem_res",),
                                   name=f"stem_res/c{m}/h{{side}}", group="stem"))
        specs.append(BlockSpec("stem_out", "stem_out", (("width", c0),), keys=("stem_out",),
                               name=f"stem_out/i{{channels}}o{c0}/h{{side}}", group="stem"))
        return specs

    def cover(self) -> list[ResNetImageNetArch]:
        """Full depth (the stem's residual conv too), one expand ratio, the stem's middle width and
        the odd stages at one width and its output width and the even stages at another: every block
        meets every input width it can get."""
        cfg = self.config
        mids = cfg.stem_mid_choices()
        mid_of = {w: next(m for m in reversed(mids) if cfg.stem_mid(m) == cfg.stem_mid(w)) for w in cfg.width_choices}
        return [ResNetImageNetArch(cfg.resolutions[0], mid_of[w2], 1, w1,
                                   tuple(((w2, w1)[s % 2], (e,) * max(cfg.depth_choices(s)))
                                         for s in range(cfg.num_stages)))
                for w1 in cfg.width_choices for w2 in cfg.width_choices for e in cfg.expand_choices]
