"""The resnet CPU trainer: one static piece per distinct block variant on the engine's composed
chain (:mod:`search_spaces.engine`)."""

from __future__ import annotations

import dataclasses
from functools import partial

from search_spaces.engine import ComposedTrainer, Piece
from search_spaces.layers import preprocess
from search_spaces.resnet.config import ResNetArch, ResNetConfig
from search_spaces.resnet.supernet import block_apply, head_apply, stem_apply


class ComposedResNet(ComposedTrainer):
    """The resnet chain: stem (with preprocessing) keyed by (resolution, width), one piece per active
    block keyed by (stage, first block of the stage, in, out, middle channels), and the head keyed by
    its input width. Each piece runs its own static shapes, so a step costs what the subnet costs."""

    def __init__(self, config: ResNetConfig, mean: float, std: float, label_smoothing: float = 0.0):
        super().__init__(label_smoothing)
        self.cfg = config
        self.mean, self.std = mean, std

    def chain(self, arch: ResNetArch) -> tuple[list[Piece], Piece]:
        cfg, res = self.cfg, arch.resolution
        c0 = cfg.stem_width(arch.stem_width)

        def stem():
            def fn(p, images):
                x = preprocess(images, res, self.mean, self.std)
                return stem_apply(cfg, p["stem"], None, x, c0, "train")[0]
            return Piece(("stem", res, c0), fn, keys=("stem",), input_grad=False)

        pieces = [self.piece(("stem", res, c0), stem)]
        for s, b, cin, cout, mid, stride, _ in cfg.block_shapes(arch):
            first = b == 0
            key = ("block", s, first, cin, cout, mid)

            def make(s=s, first=first, key=key, cout=cout, mid=mid, stride=stride):
                fn = partial(block_apply, s=None, cout=cout, mid=mid, stride=stride, first=first, mode="train")
                return Piece(key, lambda p, x: fn(p, x=x)[0], path=("stages", s, "first" if first else "rest"),
                             index=None if first else 0)

            base = self.piece(key, make)
            pieces.append(base if first else dataclasses.replace(base, index=b - 1))
        c_last = cfg.head_width(arch)
        head = self.piece(("head", c_last), lambda: Piece(("head", c_last), lambda p, z: head_apply(p, z),
                                                          path=("classifier",)))
        return pieces, head
