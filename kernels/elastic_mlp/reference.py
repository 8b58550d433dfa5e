"""Pure-jnp elastic MLP ``act(x @ W1[:, :h] + b1[:h]) @ W2[:h, :] + b2``: oracle and XLA path."""

from __future__ import annotations

import jax
import jax.numpy as jnp

ACTIVATIONS = ("relu", "gelu", "hard_swish")


def activation_fn(name: str):
    """The jax.nn activation for ``name`` (gelu is the tanh approximation, jax.nn's default)."""
    if name == "relu":
        return jax.nn.relu
    if name == "gelu":
        return lambda z: jax.nn.gelu(z, approximate=True)
    if name == "hard_swish":
        return jax.nn.hard_swish
    raise ValueError(f"activation={name!r}; expected one of {ACTIVATIONS}")


def elastic_mlp_reference(x, w1, b1, w2, b2, *, h: int, activation: str = "relu"):
    """Oracle with a Python-int h: slices the hidden width and computes in f32."""
    f32 = lambda a: a.astype(jnp.float32)
    z = f32(x) @ f32(w1[:, :h]) + f32(b1[:h])
    y = activation_fn(activation)(z) @ f32(w2[:h, :]) + f32(b2)
    return y.astype(x.dtype)


def elastic_mlp_xla(x, w1, b1, w2, b2, *, h, activation: str = "relu"):
    """XLA path with a run-time h: full-width hidden layer, inactive hidden units masked to zero.

    One compilation for every h; autodiff through the mask gives zero gradient to inactive units.
    """
    z = jnp.dot(x, w1, preferred_element_type=jnp.float32) + b1.astype(jnp.float32)
    a = activation_fn(activation)(z)
    a = jnp.where(jnp.arange(w1.shape[1]) < h, a, 0.0).astype(x.dtype)
    y = jnp.dot(a, w2, preferred_element_type=jnp.float32) + b2.astype(jnp.float32)
    return y.astype(x.dtype)
