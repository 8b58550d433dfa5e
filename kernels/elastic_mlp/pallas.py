"""Pallas kernels for the fused elastic MLP ``act(x @ W1[:, :h] + b1[:h]) @ W2[:h, :] + b2``.

Inputs arrive zero-padded to block multiples; the run-time hidden width h arrives in the sizes vector.
The weight gradients reuse the elastic matmul's ``matmul_tn`` tile kernel.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels import _common

_GELU_C = math.sqrt(2.0 / math.pi)


def act(z, name: str):
    """Activation written with primitives every Pallas backend lowers (matches jax.nn up to rounding)."""
    if name == "relu":
        return jnp.maximum(z, 0.0)
    if name == "gelu":
        return 0.5 * z * (1.0 + jnp.tanh(_GELU_C * (z + 0.044715 * z * z * z)))
    if name == "hard_swish":
        return z * jnp.minimum(jnp.maximum(z + 3.0, 0.0), 6.0) / 6.0
    raise ValueError(f"unknown activation {name!r}")


def act_grad(z, name: str):
    """d act / d z."""
    if name == "relu":
        return jnp.where(z > 0.0, 1.0, 0.0)
    if name == "gelu":
        t = jnp.tanh(_GELU_C * (z + 0.044715 * z * z * z))
        return 0.5 * (1.0 + t) + 0.5 * z * (1.0 - t * t) * _GELU_C * (1.0 + 3 * 0.044715 * z * z)
    if name == "hard_swish":
        return jnp.where(z < -3.0, 0.0, jnp.where(z > 3.0, 1.0, (2.0 * z + 3.0) / 6.0))
    raise ValueError(f"unknown activation {name!r}")


def _fwd_kernel(sizes_ref, x_ref, w1_ref, b1_ref, w2_ref, b2_ref, o_ref, *, block_h: int, activation: str):
    """One (bm, D) row tile of the fused MLP; the hidden activations never leave the chip.

    Tiling: grid = (M / bm,). Each program holds a (bm, D) row strip of x and walks the hidden dimension in
    ``block_h`` chunks: z = x @ W1[:, chunk] + b1[chunk], a = act(z) (masked past h), acc += a @ W2[chunk, :].
    Inactive hidden chunks are skipped by the run-time trip count ``cdiv(h, block_h)``: W1 columns and W2 rows
    past the last active chunk are never loaded. The output width D is not elastic, so no output tile is idle.
    """
    h = sizes_ref[0]
    bm, d = o_ref.shape
    x = x_ref[...]

    def body(t, acc):
        start = pl.multiple_of(t * block_h, block_h)
        z = jnp.dot(x, w1_ref[:, pl.ds(start, block_h)], preferred_element_type=jnp.float32)
        z = z + b1_ref[:, pl.ds(start, block_h)].astype(jnp.float32)
        a = act(z, activation)
        a = jnp.where(_common.iota_lt(start, block_h, h)[None, :], a, jnp.zeros_like(a))
        w2 = w2_ref[pl.ds(start, block_h), :]
        return acc + jnp.dot(a.astype(w2.dtype), w2, preferred_element_type=jnp.float32)

    acc = lax.fori_loop(0, pl.cdiv(h, block_h), body, jnp.zeros((bm, d), jnp.float32))
    o_ref[...] = (acc + b2_ref[...].astype(jnp.float32)).astype(o_ref.dtype)


def mlp_forward(x, w1, b1, w2, b2, h, *, cfg, bm: int, bh: int, activation: str):
    """x (Mp, Dp), w1 (Dp, Hp), b1 (1, Hp), w2 (Hp, Dp), b2 (1, Dp) -> (Mp, Dp)."""
    mp, dp = x.shape
    hp = w1.shape[1]
    return _common.call(
        functools.partial(_fwd_kernel, block_h=bh, activation=activation),
        cfg=cfg,
        grid=(mp // bm,),
        in_specs=[
            pl.BlockSpec((bm, dp), lambda i, *_: (i, 0)),
            pl.BlockSpec((dp, hp), lambda i, *_: (0, 0)),
            pl.BlockSpec((1, hp), lambda i, *_: (0, 0)),
            pl.BlockSpec((hp, dp), lambda i, *_: (0, 0)),
            pl.BlockSpec((1, dp), lambda i, *_: (0, 0)),
        ],
        out_specs=pl.BlockSpec((bm, dp), lambda i, *_: (i, 0)),
        out_shape=jax.ShapeDtypeStruct((mp, dp), x.dtype),
        sizes=_common.sizes_vector(h),
        operands=[x, w1, b1, w2, b2],
        name="elastic_mlp",
    )


def _bwd_kernel(
    sizes_ref, x_ref, w1_ref, b1_ref, w2_ref, g_ref, dx_ref, a_ref, dz_ref, *, block_h: int, activation: str
):
    """Per row tile: recompute z, then dz = (g @ W2[chunk]^T) * act'(z) and dx += dz @ W1[:, chunk]^T.

    Tiling as in the forward (grid = (M / bm,), hidden walked in ``block_h`` chunks up to cdiv(h, block_h)).
    It also writes a = act(z) and dz for the weight gradients (dW2 = a^T g, dW1 = x^T dz), which reduce over
    all rows and so run as separate tile kernels. Hidden chunks past h are not computed; they are only filled
    with zeros so the saved a and dz hold no garbage.
    """
    h = sizes_ref[0]
    bm, d = dx_ref.shape
    hp = a_ref.shape[1]
    x = x_ref[...]
    g = g_ref[...]

    def body(t, acc):
        start = pl.multiple_of(t * block_h, block_h)
        w1 = w1_ref[:, pl.ds(start, block_h)]
        z = jnp.dot(x, w1, preferred_element_type=jnp.float32)
        z = z + b1_ref[:, pl.ds(start, block_h)].astype(jnp.float32)
        keep = _common.iota_lt(start, block_h, h)[None, :]
        w2 = w2_ref[pl.ds(start, block_h), :]
        da = lax.dot_general(g, w2, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
        dz = jnp.where(keep, da * act_grad(z, activation), 0.0)
        a = jnp.where(keep, act(z, activation), 0.0)
        a_ref[:, pl.ds(start, block_h)] = a.astype(a_ref.dtype)
        dz_ref[:, pl.ds(start, block_h)] = dz.astype(dz_ref.dtype)
        dz = dz.astype(w1.dtype)
        return acc + lax.dot_general(dz, w1, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)

    n_active = pl.cdiv(h, block_h)
    acc = lax.fori_loop(0, n_active, body, jnp.zeros((bm, d), jnp.float32))
    dx_ref[...] = acc.astype(dx_ref.dtype)

    def zero(t, carry):
        start = pl.multiple_of(t * block_h, block_h)
        a_ref[:, pl.ds(start, block_h)] = jnp.zeros((bm, block_h), a_ref.dtype)
        dz_ref[:, pl.ds(start, block_h)] = jnp.zeros((bm, block_h), dz_ref.dtype)
        return carry

    lax.fori_loop(n_active, hp // block_h, zero, 0)


def mlp_backward_rows(x, w1, b1, w2, g, h, *, cfg, bm: int, bh: int, activation: str):
    """Returns dx (Mp, Dp), a (Mp, Hp) and dz (Mp, Hp), all in x's dtype."""
    mp, dp = x.shape
    hp = w1.shape[1]
    row = lambda width: pl.BlockSpec((bm, width), lambda i, *_: (i, 0))
    return _common.call(
        functools.partial(_bwd_kernel, block_h=bh, activation=activation),
        cfg=cfg,
        grid=(mp // bm,),
        in_specs=[
            row(dp),
            pl.BlockSpec((dp, hp), lambda i, *_: (0, 0)),
            pl.BlockSpec((1, hp), lambda i, *_: (0, 0)),
            pl.BlockSpec((hp, dp), lambda i, *_: (0, 0)),
            row(dp),
        ],
        out_specs=[row(dp), row(hp), row(hp)],
        out_shape=[
            jax.ShapeDtypeStruct((mp, dp), x.dtype),
            jax.ShapeDtypeStruct((mp, hp), x.dtype),
            jax.ShapeDtypeStruct((mp, hp), x.dtype),
        ],
        sizes=_common.sizes_vector(h),
        operands=[x, w1, b1, w2, g],
        name="elastic_mlp_bwd",
    )
