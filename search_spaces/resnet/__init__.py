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
* ``imagenet.py``: :class:`ResNetImageNetSpace` (``resnet-imagenet``): Once-for-All's own ImageNet
  ResNet-50 (:func:`imagenet_config`; its input stem, max-pool, average-pool shortcuts), what
  ``nas import ofa --net ofa_resnet50`` fills; its own class for its stem's genes.
* ``supernet.py``: the weights' layout (:func:`init_supernet`) and :func:`sort_channels`.
"""

from search_spaces.base import register_space, register_supernet_family
from search_spaces.resnet.config import (
    IMAGENET_RESOLUTIONS,
    BlockShape,
    ResNetArch,
    ResNetConfig,
    ResNetImageNetArch,
    imagenet_config,
    ofa_config,
    tiny_config,
)
from search_spaces.resnet.imagenet import ResNetImageNetSpace
from search_spaces.resnet.space import ResNetSpace, block
from search_spaces.resnet.supernet import init_supernet, sort_channels

__all__ = [
    "IMAGENET_RESOLUTIONS",
    "BlockShape",
    "ResNetArch",
    "ResNetConfig",
    "ResNetImageNetArch",
    "ResNetImageNetSpace",
    "ResNetSpace",
    "block",
    "imagenet_config",
    "init_supernet",
    "ofa_config",
    "sort_channels",
    "tiny_config",
]

register_supernet_family("resnet", ResNetSpace, ofa_config, tiny_config)


def _imagenet(**options) -> ResNetImageNetSpace:
    return ResNetImageNetSpace(imagenet_config(**options), "resnet-imagenet", options)


# Once-for-All's ImageNet ResNet-50 itself (what `nas import ofa --net ofa_resnet50` fills); by default
# it trains at OFA's elastic resolutions, 128 to 224 px in steps of 4 on 224 px images
register_space("resnet-imagenet", _imagenet, supernet=True,
               below_image_side=tuple(range(224 - IMAGENET_RESOLUTIONS[0], -1, -4)))
