"""The vit CPU trainer: a chain of the supernet's static pieces on :mod:`search_spaces.engine`, so
training a subnet costs what the subnet costs."""

from __future__ import annotations

import dataclasses

from search_spaces.engine import ComposedTrainer, Piece
from search_spaces.layers import preprocess
from search_spaces.vit.config import ViTArch, ViTConfig
from search_spaces.vit.supernet import head_static, layer_static, stem_static


class ComposedViT(ComposedTrainer):
    """The vit chain: stem (preprocessing, patch embedding, tokens) keyed by (resolution, embed),
    one piece per active layer keyed by (embed, heads, mlp ratio) and indexed into the stacked
    layer parameters, and the head keyed by embed. Each distinct piece is jitted once."""

    def __init__(self, cfg: ViTConfig, mean: float, std: float, label_smoothing: float = 0.0):
        super().__init__(label_smoothing)
        self.cfg, self.mean, self.std = cfg, mean, std

    def chain(self, arch: ViTArch) -> tuple[list[Piece], Piece]:
        cfg, res, d = self.cfg, arch.resolution, arch.embed

        def stem():
            return Piece(("stem", res, d),
                         lambda p, images: stem_static(cfg, p, preprocess(images, res, self.mean, self.std), d),
                         keys=("patch", "cls", "pos"), input_grad=False)

        def layer(h, m):
            return Piece(("layer", d, h, m), lambda p, x: layer_static(cfg, p, x, d, h, m), path=("layers",), index=0)

        pieces = [self.piece(("stem", res, d), stem)]
        for i, (h, m) in enumerate(arch.layers):
            base = self.piece(("layer", d, h, m), lambda h=h, m=m: layer(h, m))
            pieces.append(dataclasses.replace(base, index=i))
        head = self.piece(("head", d), lambda: Piece(("head", d), lambda p, z: head_static(p, z, d),
                                                      keys=("norm", "classifier")))
        return pieces, head

