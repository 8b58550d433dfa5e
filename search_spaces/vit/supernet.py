"""The vit supernet's weights: their layout (:func:`init_supernet`), the position embeddings at a
smaller grid (:func:`resized_pos`) and head / hidden-unit sorting (:func:`sort_channels`). Its math
is space.py's block function.

The supernet (AutoFormer's weight entanglement): a patch-embedding conv, one embed dim ``d`` shared
by every layer (all weights sliced to their first ``d`` embed channels, LayerNorm over those ``d``),
per layer ``heads`` attention heads of a fixed head dim (q/k/v width ``heads * head_dim``, the
first heads' slices) and an MLP of ``round(ratio * d)`` hidden units (the first ones), the first
``depth`` layers, pre-norm blocks, a class token and a linear classifier on it.

Position embeddings are learned for the largest grid (``max(resolutions) // patch`` per side, plus
the class token's). A smaller resolution resizes the grid part bilinearly (no antialiasing, like
the image itself in :func:`search_spaces.layers.preprocess`), so each token keeps the embedding of
the same relative image position.

Run-time selection in the evaluation forward is a ``lax.switch`` over the static-shape layers
(per layer over (embed, heads, mlp ratio), in one ``lax.scan``, an identity branch for depth; the
tokens between layers zero-padded to the largest embed dim). Masking (the largest width with inactive channels, heads and hidden units zeroed, exact
LayerNorm over the active channels) compiled 3-4x faster (about 1 s against 3-4 s for vit at 32 px)
but ran every subnet at nearly the largest one's cost: per batch of 64, smallest subnet 65 ms
(switch) against 201 ms (masking), middle 171 against 248, largest 297 against 284 (2-core CPU under
load; bench/vit_selection.py, bench/RESULTS.md). Search evaluates many subnets, so the switch wins.

There is no BatchNorm: "calib" mode returns ``(logits, {})``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from search_spaces.vit.config import ViTConfig


# ----------------------------------------------------------------------------------------------
# Supernet parameters
# ----------------------------------------------------------------------------------------------
def _normal(key, shape, std):
    return jax.random.normal(key, shape, jnp.float32) * std


def init_supernet(cfg: ViTConfig, key: jax.Array) -> dict:
    """Parameters of the largest network; every subnet's weights are slices of these.

    Layers are stacked on a leading ``max_depth`` axis (one ``lax.scan`` body in the supernet).
    qkv is (embed, 3, heads, head_dim) and proj (heads, head_dim, embed), so a subnet's heads are
    plain leading slices.
    """
    D, H, hd, M, L = cfg.max_embed, cfg.max_heads, cfg.head_dim, cfg.max_hidden, cfg.max_depth
    p, g = cfg.patch, cfg.max_grid
    keys = jax.random.split(key, 8)
    lk = jax.random.split(keys[7], 4)
    return {
        "patch": {"w": _normal(keys[0], (p, p, cfg.in_channels, D), (p * p * cfg.in_channels) ** -0.5),
                  "b": jnp.zeros((D,), jnp.float32)},
        "cls": _normal(keys[1], (D,), 0.02),
        "pos": _normal(keys[2], (g * g + 1, D), 0.02),
        "layers": {
            "ln1": {"scale": jnp.ones((L, D)), "bias": jnp.zeros((L, D))},
            "qkv": {"w": _normal(lk[0], (L, D, 3, H, hd), D ** -0.5), "b": jnp.zeros((L, 3, H, hd))},
            "proj": {"w": _normal(lk[1], (L, H, hd, D), (H * hd) ** -0.5 * 0.5), "b": jnp.zeros((L, D))},
            "ln2": {"scale": jnp.ones((L, D)), "bias": jnp.zeros((L, D))},
            "fc1": {"w": _normal(lk[2], (L, D, M), D ** -0.5), "b": jnp.zeros((L, M))},
            "fc2": {"w": _normal(lk[3], (L, M, D), M ** -0.5 * 0.5), "b": jnp.zeros((L, D))},
        },
        "norm": {"scale": jnp.ones((D,)), "bias": jnp.zeros((D,))},
        "classifier": {"w": _normal(keys[3], (D, cfg.num_classes), D ** -0.5 * 0.1),
                       "b": jnp.zeros((cfg.num_classes,), jnp.float32)},
    }


def resized_pos(cfg: ViTConfig, pos, grid: int):
    """Position embeddings (1 + grid * grid, C) from the largest grid's (1 + G * G, C)."""
    if grid == cfg.max_grid:
        return pos
    big = pos[1:].reshape(cfg.max_grid, cfg.max_grid, -1)  # (G, G, C)
    small = jax.image.resize(big, (grid, grid, big.shape[-1]), "bilinear", antialias=False)
    return jnp.concatenate([pos[:1], small.reshape(grid * grid, -1)])


# ----------------------------------------------------------------------------------------------
# Head and hidden-unit importance
# ----------------------------------------------------------------------------------------------
def _sort_layer(cfg: ViTConfig, p: dict) -> dict:
    """Reorders one layer's heads by the L1 norm of their projection rows and its MLP hidden units by
    the L1 norm of their fc2 rows (most important first). The largest network's function is
    unchanged (heads and hidden units are each summed over); narrower subnets keep the important
    ones. Hidden units are ranked among the first ``hidden(max ratio, max embed)``; the same order
    then serves every embed dim (slices of the first units)."""
    hperm = jnp.argsort(-jnp.sum(jnp.abs(p["proj"]["w"]), axis=(1, 2)))  # (H,)
    mperm = jnp.argsort(-jnp.sum(jnp.abs(p["fc2"]["w"]), axis=1))  # (M,)
    q = dict(p)
    q["qkv"] = {"w": p["qkv"]["w"][:, :, hperm], "b": p["qkv"]["b"][:, hperm]}
    q["proj"] = {"w": p["proj"]["w"][hperm], "b": p["proj"]["b"]}
    q["fc1"] = {"w": p["fc1"]["w"][:, mperm], "b": p["fc1"]["b"][mperm]}
    q["fc2"] = {"w": p["fc2"]["w"][mperm], "b": p["fc2"]["b"]}
    return q


def sort_channels(cfg: ViTConfig, params) -> dict:
    return {**params, "layers": jax.vmap(lambda p: _sort_layer(cfg, p))(params["layers"])}
