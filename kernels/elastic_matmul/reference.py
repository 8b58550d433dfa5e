"""Pure-jnp elastic matmul: the test oracle (static sizes) and the XLA implementation (run-time sizes)."""

from __future__ import annotations

import jax.numpy as jnp


def elastic_matmul_reference(x, w, b=None, *, k: int, n: int):
    """Oracle with Python-int sizes: slices, multiplies in f32, and zero-pads back to (M, Nmax)."""
    y = jnp.dot(x[:, :k].astype(jnp.float32), w[:k, :n].astype(jnp.float32))
    if b is not None:
        y = y + b[:n].astype(jnp.float32)
    return jnp.pad(y, ((0, 0), (0, w.shape[1] - n))).astype(x.dtype)


def elastic_matmul_xla(x, w, b=None, *, k, n):
    """XLA path with run-time (traced) k and n: mask, then one full-size matmul.

    No dynamic_slice, so one compilation serves every (k, n); autodiff of the masks gives exactly zero
    gradient outside the active block. It costs the full-size matmul whatever the active sizes.
    """
    kmax, nmax = w.shape
    x = jnp.where(jnp.arange(kmax) < k, x, jnp.zeros((), x.dtype))
    y = jnp.dot(x, w, preferred_element_type=jnp.float32)
    if b is not None:
        y = y + b.astype(jnp.float32)
    y = jnp.where(jnp.arange(nmax) < n, y, 0.0)
    return y.astype(x.dtype)
