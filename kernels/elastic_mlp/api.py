"""Public entry point of the fused elastic MLP: dispatch and the Pallas custom_vjp."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels import _common
from kernels.elastic_matmul import pallas as _mm
from kernels.elastic_mlp import pallas as _pallas
from kernels.elastic_mlp.reference import ACTIVATIONS, elastic_mlp_xla


def elastic_mlp(
    x,
    w1,
    b1,
    w2,
    b2,
    *,
    h,
    activation: str = "relu",
    implementation: str = "auto",
    interpret: bool = False,
    _variant: str | None = None,
    _block_cap: int = 128,
):
    """``act(x @ w1[:, :h] + b1[:h]) @ w2[:h, :] + b2`` with a run-time hidden width h.

    The transformer FFN, or an inverted-residual expand/project pair written as a per-pixel MLP.

    Args:
      x: (M, D). w1: (D, Hmax). b1: (Hmax,). w2: (Hmax, D). b2: (D,).
      h: int32 scalar (Python int or traced), 0 <= h <= Hmax; changing it does not recompile.
      activation: "relu", "gelu" (tanh approximation) or "hard_swish".
      implementation: "xla" | "pallas" | "auto" (pallas on GPU/TPU, xla on CPU).
      interpret: run the Pallas kernels in interpret mode (required for "pallas" on CPU).
    Returns:
      (M, D) in x's dtype.
    Raises:
      ValueError: bad shapes or activation, unknown implementation, "pallas" on CPU without interpret.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r}; expected one of {ACTIVATIONS}")
    m, d = x.shape
    hmax = w1.shape[1] if w1.ndim == 2 else -1
    if w1.shape != (d, hmax) or b1.shape != (hmax,) or w2.shape != (hmax, d) or b2.shape != (d,):
        raise ValueError(
            f"expected x (M, D), w1 (D, H), b1 (H,), w2 (H, D), b2 (D,); got x {x.shape}, "
            f"w1 {w1.shape}, b1 {b1.shape}, w2 {w2.shape}, b2 {b2.shape}"
        )
    cfg = _common.resolve_implementation(implementation, interpret, _variant, block_cap=_block_cap)
    h = jnp.clip(jnp.asarray(h, jnp.int32), 0, hmax)
    if cfg is None:
        return elastic_mlp_xla(x, w1, b1, w2, b2, h=h, activation=activation)
    return elastic_mlp_pallas(cfg, activation, x, w1, b1, w2, b2, h)


def _blocks(cfg, m, d, hmax):
    bm = _common.block_size(m, min(cfg.block_cap, 64))
    # bh is also a block of the weight-gradient tiles: up to 128 keeps TPU's (8, 128) block rule.
    bh = _common.block_size(hmax, cfg.block_cap)
    # D stays whole inside a program (the fused kernel keeps a (bm, D) accumulator); Triton wants powers of 2.
    dp = _common.next_pow2(max(d, 16))
    return bm, bh, _common.round_up(m, bm), dp, _common.round_up(hmax, bh)


def _padded(cfg, x, w1, b1, w2, b2):
    m, d = x.shape
    bm, bh, mp, dp, hp = _blocks(cfg, m, d, w1.shape[1])
    return (bm, bh, mp, dp, hp), (
        _common.pad_to(x, (mp, dp)),
        _common.pad_to(w1, (dp, hp)),
        _common.pad_to(b1[None], (1, hp)),
        _common.pad_to(w2, (hp, dp)),
        _common.pad_to(b2[None], (1, dp)),
    )


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def elastic_mlp_pallas(cfg, activation, x, w1, b1, w2, b2, h):
    """Fused Pallas forward; the backward is Pallas too (see ``_bwd``)."""
    return _fwd(cfg, activation, x, w1, b1, w2, b2, h)[0]


def _fwd(cfg, activation, x, w1, b1, w2, b2, h):
    (bm, bh, *_), (xp, w1p, b1p, w2p, b2p) = _padded(cfg, x, w1, b1, w2, b2)
    y = _pallas.mlp_forward(xp, w1p, b1p, w2p, b2p, h, cfg=cfg, bm=bm, bh=bh, activation=activation)
    return y[: x.shape[0], : x.shape[1]], (x, w1, b1, w2, b2, h)


def _bwd(cfg, activation, res, g):
    x, w1, b1, w2, b2, h = res
    m, d = x.shape
    hmax = w1.shape[1]
    (bm, bh, mp, dp, hp), (xp, w1p, b1p, w2p, _) = _padded(cfg, x, w1, b1, w2, b2)
    gp = _common.pad_to(g.astype(x.dtype), (mp, dp))
    dx, a, dz = _pallas.mlp_backward_rows(xp, w1p, b1p, w2p, gp, h, cfg=cfg, bm=bm, bh=bh, activation=activation)
    bd = _common.block_size(dp, cfg.block_cap)
    dw1 = _mm.matmul_tn(xp, dz, d, h, cfg=cfg, bp=bd, bq=bh, bm=bm, out_dtype=w1.dtype)[:d, :hmax]
    dw2 = _mm.matmul_tn(a, gp, h, d, cfg=cfg, bp=bh, bq=bd, bm=bm, out_dtype=w2.dtype)[:hmax, :d]
    db1 = jnp.sum(dz[:m, :hmax].astype(jnp.float32), axis=0).astype(b1.dtype)
    db2 = jnp.sum(g.astype(jnp.float32), axis=0).astype(b2.dtype)
    return dx[:m, :d].astype(x.dtype), dw1, db1, dw2, db2, None


elastic_mlp_pallas.defvjp(_fwd, _bwd)
