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
* ``space.py``: :class:`ResNetSpace`: genes, canonical strings, FLOPs/params, the run-time
  selection arrays, the latency pieces, and delegation to the modules below.
* ``supernet.py``: the supernet as pure functions over one parameter pytree (init, bottleneck math,
  elastic switch blocks, :func:`supernet_apply`) and :func:`sort_channels`.
* ``static.py``: :class:`StaticResNet` (``stem``, ``blocks``, ``head``), the deployable NNX subnet
  whose parts the latency table times, and :func:`load_static_weights`.
* ``trainer.py``: :class:`ComposedResNet`, the per-block chain on :mod:`search_spaces.engine`.
"""

from search_spaces.base import register_supernet_family
from search_spaces.resnet.config import BlockShape, ResNetArch, ResNetConfig, ofa_config, tiny_config
from search_spaces.resnet.space import ResNetSpace
from search_spaces.resnet.static import (
    StaticBottleneck,
    StaticHead,
    StaticResNet,
    StaticStem,
    load_static_weights,
)
from search_spaces.resnet.supernet import (
    block_apply,
    head_apply,
    init_supernet,
    sort_channels,
    stem_apply,
    supernet_apply,
)
from search_spaces.resnet.trainer import ComposedResNet

__all__ = [
    "BlockShape",
    "ComposedResNet",
    "ResNetArch",
    "ResNetConfig",
    "ResNetSpace",
    "StaticBottleneck",
    "StaticHead",
    "StaticResNet",
    "StaticStem",
    "block_apply",
    "head_apply",
    "init_supernet",
    "load_static_weights",
    "ofa_config",
    "sort_channels",
    "stem_apply",
    "supernet_apply",
    "tiny_config",
]

register_supernet_family("resnet", ResNetSpace, ofa_config, tiny_config)
