"""Public entry point of the elastic matmul: dispatch between XLA and Pallas, and the Pallas custom_vjp."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels import _common
from kernels.elastic_matmul import pallas as _pallas
from kernels.elastic_matmul.reference import elastic_matmul_xla


def elastic_matmul(
    x,
    w,
    b=None,
    *,
    k,
    n,
    implementation: str = "auto",
    interpret: bool = False,
    _variant: str | None = None,
    _block_cap: int = 128,
):
    """``y = x[:, :k] @ w[:k, :n] (+ b[:n])``, zero-padded to (M, Nmax), with run-time k and n.

    Args:
      x: (M, Kmax); columns past k are ignored.
      w: (Kmax, Nmax).
      b: optional (Nmax,) bias.
      k, n: int32 scalars (Python ints or traced), 0 <= k <= Kmax, 0 <= n <= Nmax; changing them does not
        recompile.
      implementation: "xla" (masked full-size matmul), "pallas" (kernel that skips inactive tiles) or
        "auto" (pallas on GPU/TPU, xla on CPU).
      interpret: run the Pallas kernel in interpret mode (required for "pallas" on CPU).
    Returns:
      (M, Nmax) in x's dtype; columns >= n are zero.
    Raises:
      ValueError: bad shapes, unknown implementation, or "pallas" on CPU without ``interpret=True``.
    """
    if x.ndim != 2 or w.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(f"expected x (M, Kmax) and w (Kmax, Nmax); got x {x.shape}, w {w.shape}")
    if b is not None and b.shape != (w.shape[1],):
        raise ValueError(f"expected b of shape ({w.shape[1]},); got {b.shape}")
    cfg = _common.resolve_implementation(implementation, interpret, _variant, block_cap=_block_cap)
    k = jnp.clip(jnp.asarray(k, jnp.int32), 0, w.shape[0])
    n = jnp.clip(jnp.asarray(n, jnp.int32), 0, w.shape[1])
    if cfg is None:
        return elastic_matmul_xla(x, w, b, k=k, n=n)
    return elastic_matmul_pallas(cfg, x, w, b, k, n)


def _blocks(cfg, m, kmax, nmax):
    bm = _common.block_size(m, min(cfg.block_cap, 64))
    bk = _common.block_size(kmax, cfg.block_cap)
    bn = _common.block_size(nmax, cfg.block_cap)
    return bm, bk, bn, _common.round_up(m, bm), _common.round_up(kmax, bk), _common.round_up(nmax, bn)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def elastic_matmul_pallas(cfg, x, w, b, k, n):
    """The Pallas forward; gradients come from Pallas kernels too (see ``_bwd``)."""
    return _fwd(cfg, x, w, b, k, n)[0]


def _fwd(cfg, x, w, b, k, n):
    m, kmax = x.shape
    nmax = w.shape[1]
    bm, bk, bn, mp, kp, np_ = _blocks(cfg, m, kmax, nmax)
    bias = None if b is None else _common.pad_to(b[None, :], (1, np_))
    y = _pallas.matmul(
        _common.pad_to(x, (mp, kp)),
        _common.pad_to(w, (kp, np_)),
        bias,
        k,
        n,
        cfg=cfg,
        transpose_b=False,
        bm=bm,
        bo=bn,
        br=bk,
    )
    return y[:m, :nmax], (x, w, b, k, n)


def _bwd(cfg, res, g):
    x, w, b, k, n = res
    m, kmax = x.shape
    nmax = w.shape[1]
    bm, bk, bn, mp, kp, np_ = _blocks(cfg, m, kmax, nmax)
    gp = _common.pad_to(g, (mp, np_))
    xp = _common.pad_to(x, (mp, kp))
    wp = _common.pad_to(w, (kp, np_))
    # dx = g[:, :n] @ w[:k, :n]^T: the same tile kernel, reducing over n, output columns limited to k.
    dx = _pallas.matmul(gp, wp, None, n, k, cfg=cfg, transpose_b=True, bm=bm, bo=bk, br=bn)[:m, :kmax]
    # dW = x[:, :k]^T @ g[:, :n], zero outside the active (k, n) block.
    dw = _pallas.matmul_tn(xp, gp, k, n, cfg=cfg, bp=bk, bq=bn, bm=bm, out_dtype=w.dtype)[:kmax, :nmax]
    db = None
    if b is not None:
        db = jnp.where(jnp.arange(nmax) < n, jnp.sum(g.astype(jnp.float32), axis=0), 0.0).astype(b.dtype)
    return dx.astype(x.dtype), dw, db, None, None


elastic_matmul_pallas.defvjp(_fwd, _bwd)
