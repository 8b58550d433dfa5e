"""Once-for-All's MobileNetV3 space: elastic depth, expand ratio, kernel size and resolution.

* ``config.py``: the supernet's shape (:class:`MobileNetV3Config`, :func:`ofa_config`,
  :func:`tiny_config`, and :func:`imagenet_config`: Once-for-All's own ImageNet network) and the
  architecture value :class:`MobileNetV3Arch`;
* ``space.py``: :class:`MobileNetV3Space`: genes, canonical strings, the plan and the one block
  function (:func:`block`); trainers, evaluation, the deployable model, costs and latency pieces
  are derived from them (:mod:`search_spaces.planned`);
* ``supernet.py``: the weights' layout (:func:`init_supernet`) and Once-for-All's channel sorting.

A new space is one new package like this one plus one registration line (the last lines here)
and its name in ``search_spaces.base.BUILTIN_SPACES``. The contract it fulfils is
:class:`search_spaces.planned.PlannedSpace`.
"""

from search_spaces.base import register_space, register_supernet_family
from search_spaces.mobilenetv3.config import (
    IMAGENET_RESOLUTIONS,
    MobileNetV3Arch,
    MobileNetV3Config,
    imagenet_config,
    ofa_config,
    se_mid,
    tiny_config,
)
from search_spaces.mobilenetv3.space import MobileNetV3Space, block
from search_spaces.mobilenetv3.supernet import HEAD_KEYS, STEM_KEYS, init_supernet, sort_channels

__all__ = [
    "HEAD_KEYS",
    "IMAGENET_RESOLUTIONS",
    "STEM_KEYS",
    "MobileNetV3Arch",
    "MobileNetV3Config",
    "MobileNetV3Space",
    "block",
    "imagenet_config",
    "init_supernet",
    "ofa_config",
    "se_mid",
    "sort_channels",
    "tiny_config",
]

register_supernet_family("mobilenetv3", MobileNetV3Space, ofa_config, tiny_config)


def _imagenet(**options) -> MobileNetV3Space:
    return MobileNetV3Space(imagenet_config(**options), "mobilenetv3-imagenet", options)


# Once-for-All's ImageNet network itself (what `nas import ofa` fills with its pretrained weights);
# by default it trains at OFA's elastic resolutions, 128 to 224 px in steps of 4 on 224 px images
register_space("mobilenetv3-imagenet", _imagenet, supernet=True,
               below_image_side=tuple(range(224 - IMAGENET_RESOLUTIONS[0], -1, -4)))
