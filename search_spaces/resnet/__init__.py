"""Once-for-All's ResNet space: elastic depth, expand ratio, width multiplier and resolution.

Bottleneck blocks (1x1 conv, 3x3 conv, 1x1 conv; ReLU after the residual sum) in stages of a base
depth plus an elastic extra depth. Each stage's output width, and the stem's, is elastic (a width
multiplier per stage, channels kept by importance: :func:`sort_channels`), and each block's middle
width is ``expand * active out channels`` (rounded to the channel divisor), as in OFA-ResNet50.
Adapted to 28-32 px inputs: one 3x3 stem conv and no max-pool; the first block of a stage has a
strided 1x1-conv shortcut (OFA's ``downsample_mode="conv"``).

Canonical string: ``r{resolution}-w{stem width}`` then one ``-``-separated group per stage,
``w{width}`` followed by the ``.``-joined active blocks ``e{expand}``; widths and expand ratios are
written in percent. Example (3 stages): ``r8-w50-w100.e25.e50-w50.e25-w100.e50.e50``. Only active
blocks are written, so the stage depth is the number of ``e`` fields in its group.

What is where:

* ``config.py``: :class:`ResNetConfig` (the supernet's shape), :func:`ofa_config` (``resnet``),
  :func:`tiny_config` (``resnet-tiny``), :class:`ResNetArch` (one subnet) and :class:`BlockShape`
  (a subnet block's static widths and input side).
* ``space.py``: :class:`ResNetSpace`: genes, canonical strings, the plan and the one block
  function (:func:`block`); everything else is derived (:mod:`search_spaces.planned`).
* ``supernet.py``: the weights' layout (:func:`init_supernet`) and :func:`sort_channels`.
"""

from search_spaces.base import register_supernet_family
from search_spaces.resnet.config import BlockShape, ResNetArch, ResNetConfig, ofa_config, tiny_config
from search_spaces.resnet.space import ResNetSpace, block
from search_spaces.resnet.supernet import init_supernet, sort_channels

__all__ = [
    "BlockShape",
    "ResNetArch",
    "ResNetConfig",
    "ResNetSpace",
    "block",
    "init_supernet",
    "ofa_config",
    "sort_channels",
    "tiny_config",
]

register_supernet_family("resnet", ResNetSpace, ofa_config, tiny_config)
