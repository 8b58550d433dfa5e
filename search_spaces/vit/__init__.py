"""AutoFormer/HAT-style vision transformer space: elastic embed dim, heads, MLP ratio, depth, resolution.

Registers ``vit`` and ``vit-tiny``. What is where, one job per module:

* :mod:`~search_spaces.vit.config`: :class:`ViTConfig` (the choices), :func:`vit_config` and
  :func:`tiny_config`, :class:`ViTArch` (one subnet), :func:`hidden_units` and :func:`tokens`.
* :mod:`~search_spaces.vit.space`: :class:`ViTSpace`: genes, the canonical arch strings, exact
  FLOPs/params, the run-time selection arrays, the latency pieces, and the supernet contract
  (:class:`search_spaces.base.SupernetSpace`) delegated to the modules below.
* :mod:`~search_spaces.vit.supernet`: the supernet's math: parameter init, LayerNorm, attention,
  the static-width pieces, :func:`supernet_apply` (a ``lax.switch`` over those pieces) and
  :func:`sort_channels`.
* :mod:`~search_spaces.vit.static`: the static NNX subnet :class:`StaticViT` (``stem``, ``blocks``,
  ``head``: what the latency table times) and :func:`load_static_weights`.
* :mod:`~search_spaces.vit.trainer`: :class:`ComposedViT`, the CPU trainer's chain of static pieces
  on :mod:`search_spaces.engine`.

Training on CPU composes the same static pieces the supernet switches over, so its cost follows the
subnet's size. There is no BatchNorm: "calib" mode returns ``(logits, {})``.
"""

from search_spaces.base import register_supernet_family
from search_spaces.vit.config import ViTArch, ViTConfig, check_config, hidden_units, tiny_config, tokens, vit_config
from search_spaces.vit.space import ViTSpace
from search_spaces.vit.static import (
    LayerNorm,
    StaticHead,
    StaticLayer,
    StaticStem,
    StaticViT,
    load_static_weights,
)
from search_spaces.vit.supernet import (
    LN_EPS,
    attention,
    head_static,
    init_supernet,
    layer_norm,
    layer_static,
    patch_embed,
    resized_pos,
    sort_channels,
    stem_static,
    supernet_apply,
)
from search_spaces.vit.trainer import ComposedViT

register_supernet_family("vit", ViTSpace, vit_config, tiny_config)

__all__ = [
    "LN_EPS",
    "ComposedViT",
    "LayerNorm",
    "StaticHead",
    "StaticLayer",
    "StaticStem",
    "StaticViT",
    "ViTArch",
    "ViTConfig",
    "ViTSpace",
    "attention",
    "check_config",
    "head_static",
    "hidden_units",
    "init_supernet",
    "layer_norm",
    "layer_static",
    "load_static_weights",
    "patch_embed",
    "resized_pos",
    "sort_channels",
    "stem_static",
    "supernet_apply",
    "tiny_config",
    "tokens",
    "vit_config",
]
