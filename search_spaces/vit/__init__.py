"""AutoFormer/HAT-style vision transformer space: elastic embed dim, heads, MLP ratio, depth, resolution.

Registers ``vit`` and ``vit-tiny``. What is where, one job per module:

* :mod:`~search_spaces.vit.config`: :class:`ViTConfig` (the choices), :func:`vit_config` and
  :func:`tiny_config`, :class:`ViTArch` (one subnet), :func:`hidden_units` and :func:`tokens`.
* :mod:`~search_spaces.vit.space`: :class:`ViTSpace`: genes, the canonical arch strings, the plan
  and the one block function (:func:`block`); everything else is derived
  (:mod:`search_spaces.planned`).
* :mod:`~search_spaces.vit.supernet`: the weights' layout (:func:`init_supernet`), the resized
  position embeddings and :func:`sort_channels`.

There is no BatchNorm: "calib" mode returns ``(logits, {})``.
"""

from search_spaces.base import register_supernet_family
from search_spaces.vit.config import ViTArch, ViTConfig, check_config, hidden_units, tiny_config, tokens, vit_config
from search_spaces.vit.space import ViTSpace, block
from search_spaces.vit.supernet import init_supernet, resized_pos, sort_channels

register_supernet_family("vit", ViTSpace, vit_config, tiny_config)

__all__ = [
    "ViTArch",
    "ViTConfig",
    "ViTSpace",
    "block",
    "check_config",
    "hidden_units",
    "init_supernet",
    "resized_pos",
    "sort_channels",
    "tiny_config",
    "tokens",
    "vit_config",
]
