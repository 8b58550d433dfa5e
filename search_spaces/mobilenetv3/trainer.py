"""The mobilenetv3 space's chain for the composed trainer (:mod:`search_spaces.engine`)."""

from __future__ import annotations

import dataclasses

from search_spaces.engine import ComposedTrainer, Piece
from search_spaces.layers import preprocess
from search_spaces.mobilenetv3.config import MobileNetV3Arch, MobileNetV3Config
from search_spaces.mobilenetv3.supernet import HEAD_KEYS, STEM_KEYS, block_at, head_apply, stem_apply


class ComposedSupernet(ComposedTrainer):
    """The mobilenetv3 chain: stem (with preprocessing), one piece per active block keyed by
    (stage, first block of the stage, kernel, expand), and the head."""

    def __init__(self, cfg: MobileNetV3Config, mean: float, std: float, label_smoothing: float = 0.0):
        super().__init__(label_smoothing)
        self.cfg = cfg
        self.mean, self.std = mean, std

    def chain(self, arch: MobileNetV3Arch) -> tuple[list[Piece], Piece]:
        cfg, res = self.cfg, arch.resolution

        def stem_fn(p, images):
            return stem_apply(cfg, p, None, preprocess(images, res, self.mean, self.std), "train")[0]

        def stem():
            return Piece(("stem", res), stem_fn, keys=STEM_KEYS, input_grad=False)

        def head():
            return Piece("head", lambda p, z: head_apply(cfg, p, None, z, "train")[0], keys=HEAD_KEYS)

        pieces = [self.piece(("stem", res), stem)]
        for s, blocks in enumerate(arch.stages):
            for b, (k, e) in enumerate(blocks):
                first = b == 0
                base = self.piece(("block", s, first, k, e), lambda s=s, first=first, k=k, e=e: self._block(s, first, k, e))
                pieces.append(base if first else dataclasses.replace(base, index=b - 1))
        return pieces, self.piece("head", head)

    def _block(self, stage: int, first: bool, k: int, e: int) -> Piece:
        block = block_at(self.cfg, stage, first, k, e, "train")
        return Piece(("block", stage, first, k, e), lambda p, x: block(p, None, x)[0],
                     path=("stages", stage, "first" if first else "rest"), index=None if first else 0)
