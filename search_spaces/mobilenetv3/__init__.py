"""Once-for-All's MobileNetV3 space: elastic depth, expand ratio, kernel size and resolution.

One module per job:

* ``config.py``: the supernet's shape (:class:`MobileNetV3Config`, :func:`ofa_config`,
  :func:`tiny_config`, and :func:`imagenet_config`: Once-for-All's own ImageNet network) and the architecture value :class:`MobileNetV3Arch`;
* ``space.py``: :class:`MobileNetV3Space`: genes, canonical strings, exact FLOPs/params, the
  run-time selection arrays; its model, trainer and latency methods delegate to the modules below;
* ``supernet.py``: the elastic supernet's math, pure functions over one parameter pytree
  (:func:`init_supernet`, :func:`block_apply`, :func:`stem_apply`, :func:`head_apply`,
  :func:`supernet_apply`, :func:`sort_channels`);
* ``static.py``: the deployable NNX subnet :class:`StaticMobileNetV3` (stem, blocks and head as
  submodules) and :func:`load_static_weights`;
* ``trainer.py``: the chain of :class:`ComposedSupernet` for the space-free composed trainer
  (:mod:`search_spaces.engine`), the XLA formulation;
* ``pallas_trainer.py``: :class:`KernelSupernet`, one program through the elastic Pallas kernels;
* ``latency.py``: the latency pieces (the static model's own submodules) and their keys.

A new space is one new package like this one plus one registration line (the last line here)
and its name in ``search_spaces.base.BUILTIN_SPACES``. The contract it fulfils is
:class:`search_spaces.base.SupernetSpace`.
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
from search_spaces.mobilenetv3.latency import block_key, latency_keys, latency_pieces
from search_spaces.mobilenetv3.pallas_trainer import KernelSupernet, arch_sizes, kernel_supernet_logits
from search_spaces.mobilenetv3.space import MobileNetV3Space
from search_spaces.mobilenetv3.static import (
    DepthwiseConv,
    StaticBlock,
    StaticHead,
    StaticMobileNetV3,
    StaticStem,
    load_static_weights,
)
from search_spaces.mobilenetv3.supernet import (
    HEAD_KEYS,
    STEM_KEYS,
    block_apply,
    block_at,
    block_params,
    head_apply,
    init_supernet,
    sort_channels,
    stem_apply,
    subnet_apply,
    supernet_apply,
)
from search_spaces.mobilenetv3.trainer import ComposedSupernet

__all__ = [
    "HEAD_KEYS",
    "IMAGENET_RESOLUTIONS",
    "STEM_KEYS",
    "ComposedSupernet",
    "DepthwiseConv",
    "KernelSupernet",
    "MobileNetV3Arch",
    "MobileNetV3Config",
    "MobileNetV3Space",
    "StaticBlock",
    "StaticHead",
    "StaticMobileNetV3",
    "StaticStem",
    "arch_sizes",
    "block_apply",
    "block_at",
    "block_key",
    "block_params",
    "head_apply",
    "imagenet_config",
    "init_supernet",
    "kernel_supernet_logits",
    "latency_keys",
    "latency_pieces",
    "load_static_weights",
    "ofa_config",
    "se_mid",
    "sort_channels",
    "stem_apply",
    "subnet_apply",
    "supernet_apply",
    "tiny_config",
]

register_supernet_family("mobilenetv3", MobileNetV3Space, ofa_config, tiny_config)


def _imagenet(**options) -> MobileNetV3Space:
    return MobileNetV3Space(imagenet_config(**options), "mobilenetv3-imagenet", options)


# Once-for-All's ImageNet network itself (what `nas import ofa` fills with its pretrained weights);
# by default it trains at OFA's elastic resolutions, 128 to 224 px in steps of 4 on 224 px images
register_space("mobilenetv3-imagenet", _imagenet, supernet=True,
               below_image_side=tuple(range(224 - IMAGENET_RESOLUTIONS[0], -1, -4)))
