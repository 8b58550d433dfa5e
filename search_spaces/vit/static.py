"""The static vit subnet (Flax NNX), and slicing supernet weights into it.

The model is ``stem`` (patch embedding, class token, position embeddings), ``blocks`` (the
transformer layers in order) and ``head`` (final LayerNorm and the classifier on the class token):
the latency table times exactly these submodules. Its arithmetic is the supernet's static pieces
(:mod:`search_spaces.vit.supernet`) in the same operation order. The stem stores the position
embeddings already resized to its grid, so its forward has no resize.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from search_spaces.vit.config import ViTArch, ViTConfig, hidden_units, tokens
from search_spaces.vit.supernet import attention, layer_norm, resized_pos


class LayerNorm(nnx.Module):
    """LayerNorm with the supernet's operation order (:func:`search_spaces.vit.supernet.layer_norm`)."""

    def __init__(self, c: int):
        self.scale = nnx.Param(jnp.ones((c,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((c,), jnp.float32))

    def __call__(self, x):
        return layer_norm(x, self.scale[...], self.bias[...])


class StaticStem(nnx.Module):
    """Patch embedding, class token and position embeddings: (B, R, R, C) images -> (B, 1 + N, d)."""

    def __init__(self, cfg: ViTConfig, resolution: int, d: int, rngs: nnx.Rngs):
        p = cfg.patch
        self.patch = nnx.Conv(cfg.in_channels, d, (p, p), strides=(p, p), padding="VALID", rngs=rngs)
        self.cls = nnx.Param(0.02 * jax.random.normal(rngs.params(), (d,)))
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (tokens(cfg, resolution), d)))

    def __call__(self, x):
        z = self.patch(x)
        z = z.reshape(z.shape[0], -1, z.shape[-1])  # (B, N, d)
        cls = jnp.broadcast_to(self.cls[...], (z.shape[0], 1, z.shape[-1]))
        return jnp.concatenate([cls, z], axis=1) + self.pos[...]


class StaticLayer(nnx.Module):
    """One pre-norm transformer layer: (B, 1 + N, d) -> (B, 1 + N, d)."""

    def __init__(self, d: int, heads: int, head_dim: int, hidden: int, rngs: nnx.Rngs):
        self.heads, self.head_dim = heads, head_dim
        q = heads * head_dim
        self.ln1 = LayerNorm(d)
        self.qkv = nnx.Linear(d, 3 * q, rngs=rngs)  # output laid out (3, heads, head_dim)
        self.proj = nnx.Linear(q, d, rngs=rngs)
        self.ln2 = LayerNorm(d)
        self.fc1 = nnx.Linear(d, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, d, rngs=rngs)

    def __call__(self, x):
        qkv = self.qkv(self.ln1(x)).reshape(*x.shape[:-1], 3, self.heads, self.head_dim)  # (B, N, 3, h, hd)
        a = attention(qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :])
        x = x + self.proj(a.reshape(*a.shape[:-2], self.heads * self.head_dim))
        return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))


class StaticHead(nnx.Module):
    """Final LayerNorm and the classifier on the class token: (B, 1 + N, d) -> (B, num_classes)."""

    def __init__(self, cfg: ViTConfig, d: int, rngs: nnx.Rngs):
        self.norm = LayerNorm(d)
        self.classifier = nnx.Linear(d, cfg.num_classes, rngs=rngs)

    def __call__(self, z):
        return self.classifier(self.norm(z[:, 0]))


class StaticViT(nnx.Module):
    """A standalone subnet with static shapes. Input: (B, resolution, resolution, C) images already
    normalised (see :func:`search_spaces.layers.preprocess`).

    ``stem``, then ``blocks`` in order, then ``head``: the latency table times exactly these.
    """

    def __init__(self, cfg: ViTConfig, arch: ViTArch, rngs: nnx.Rngs):
        d = arch.embed
        self.resolution = arch.resolution
        self.stem = StaticStem(cfg, arch.resolution, d, rngs)
        self.blocks = nnx.List([StaticLayer(d, h, cfg.head_dim, hidden_units(m, d), rngs) for h, m in arch.layers])
        self.head = StaticHead(cfg, d, rngs)

    def __call__(self, x):
        z = self.stem(x)
        for block in self.blocks:
            z = block(z)
        return self.head(z)


def load_static_weights(cfg: ViTConfig, model: StaticViT, params, arch: ViTArch):
    """Copies the subnet's slices of the supernet weights into ``model``."""
    d, hd = arch.embed, cfg.head_dim
    stem = model.stem
    stem.patch.kernel.set_value(params["patch"]["w"][..., :d])
    stem.patch.bias.set_value(params["patch"]["b"][:d])
    stem.cls.set_value(params["cls"][:d])
    stem.pos.set_value(resized_pos(cfg, params["pos"], arch.resolution // cfg.patch)[:, :d])
    for i, ((h, ratio), layer) in enumerate(zip(arch.layers, model.blocks)):
        p = jax.tree.map(lambda a, i=i: a[i], params["layers"])
        q, m = h * hd, hidden_units(ratio, d)
        layer.ln1.scale.set_value(p["ln1"]["scale"][:d])
        layer.ln1.bias.set_value(p["ln1"]["bias"][:d])
        layer.qkv.kernel.set_value(p["qkv"]["w"][:d, :, :h].reshape(d, 3 * q))
        layer.qkv.bias.set_value(p["qkv"]["b"][:, :h].reshape(3 * q))
        layer.proj.kernel.set_value(p["proj"]["w"][:h, :, :d].reshape(q, d))
        layer.proj.bias.set_value(p["proj"]["b"][:d])
        layer.ln2.scale.set_value(p["ln2"]["scale"][:d])
        layer.ln2.bias.set_value(p["ln2"]["bias"][:d])
        layer.fc1.kernel.set_value(p["fc1"]["w"][:d, :m])
        layer.fc1.bias.set_value(p["fc1"]["b"][:m])
        layer.fc2.kernel.set_value(p["fc2"]["w"][:m, :d])
        layer.fc2.bias.set_value(p["fc2"]["b"][:d])
    model.head.norm.scale.set_value(params["norm"]["scale"][:d])
    model.head.norm.bias.set_value(params["norm"]["bias"][:d])
    model.head.classifier.kernel.set_value(params["classifier"]["w"][:d])
    model.head.classifier.bias.set_value(params["classifier"]["b"])
