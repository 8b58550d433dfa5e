"""The mobilenetv3 space's chain for the composed trainer (search_spaces/engine.py)."""

from __future__ import annotations

import dataclasses
from functools import partial

from search_spaces.engine import ComposedTrainer, Piece
from search_spaces.layers import preprocess
from search_spaces.mobilenetv3 import MobileNetV3Arch, MobileNetV3Config, _block, head_apply, stem_apply


def _stem(cfg: MobileNetV3Config, p, x):
    return stem_apply(cfg, p, None, x, "train")[0]


def _head(cfg: MobileNetV3Config, p, z):
    return head_apply(cfg, p, None, z, "train")[0]


_HEAD_KEYS = ("head", "feature", "classifier")
_STEM_KEYS = ("stem", "first")


class ComposedSupernet(ComposedTrainer):
    """The mobilenetv3 chain: stem (with preprocessing), one piece per active block keyed by
    (stage, first block of the stage, kernel, expand), and the head."""

    def __init__(self, cfg: MobileNetV3Config, mean: float, std: float, label_smoothing: float = 0.0):
        super().__init__(label_smoothing)
        self.cfg = cfg
        self.mean, self.std = mean, std

    def chain(self, arch: MobileNetV3Arch) -> tuple[list[Piece], Piece]:
        cfg, res = self.cfg, arch.resolution

        def stem():
            return Piece(("stem", res), lambda p, images: _stem(cfg, p, preprocess(images, res, self.mean, self.std)),
                         keys=_STEM_KEYS, input_grad=False)

        pieces = [self._piece(("stem", res), stem)]
        for s, blocks in enumerate(arch.stages):
            for b, (k, e) in enumerate(blocks):
                first = b == 0
                base = self._piece(("block", s, first, k, e), lambda s=s, first=first, k=k, e=e: self._block(s, first, k, e))
                pieces.append(base if first else dataclasses.replace(base, index=b - 1))
        head = self._piece("head", lambda: Piece("head", lambda p, z: _head(cfg, p, z), keys=_HEAD_KEYS))
        return pieces, head

    def _block(self, stage: int, first: bool, k: int, e: int) -> Piece:
        cfg = self.cfg
        cin, cout, stride = cfg.block_io(stage, 0 if first else 1)
        block = partial(_block, cfg, cin=cin, cout=cout, stride=stride, k=k, e=e,
                        act=cfg.stage_acts[stage], se=cfg.stage_se[stage], mode="train")
        return Piece(("block", stage, first, k, e), lambda p, x: block(p, None, x)[0],
                     path=("stages", stage, "first" if first else "rest"), index=None if first else 0)
