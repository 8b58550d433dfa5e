"""Pallas kernels for the elastic matmul ``y = x[:, :k] @ W[:k, :n] (+ b[:n])`` and its gradients.

All arrays arrive zero-padded so that every dimension is a multiple of its block (see ``_common.block_size``);
the run-time sizes arrive in a small int32 vector (``_common.call``).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels import _common


def _mm_kernel(sizes_ref, a_ref, b_ref, *rest, block_r: int, transpose_b: bool, has_bias: bool):
    """One (bm, bo) output tile of ``a[:, :r] @ B[:r, :]`` with output columns past ``o`` zeroed.

    Tiling: grid = (M / bm, O / bo). The a-block is a (bm, R) row strip and the B-block the matching (R, bo)
    column strip ((bo, R) when ``transpose_b``); the reduction walks the strip in ``block_r`` chunks.
    Inactive work is skipped two ways: a tile whose first output column is >= o writes zeros and does no
    loads or math (``pl.when``), and the reduction loop runs ``cdiv(r, block_r)`` times, a run-time trip count,
    so reduction chunks past r are never read. Columns of ``a`` past r inside the last chunk are masked, so
    whatever ``a`` holds there is ignored.
    """
    if has_bias:
        bias_ref, o_ref = rest
    else:
        (o_ref,) = rest
    r = sizes_ref[0]
    o = sizes_ref[1]
    j = pl.program_id(1)
    bm, bo = o_ref.shape

    @pl.when(j * bo < o)
    def _active():
        def body(t, acc):
            start = pl.multiple_of(t * block_r, block_r)
            a = a_ref[:, pl.ds(start, block_r)]
            a = jnp.where(_common.iota_lt(start, block_r, r)[None, :], a, jnp.zeros_like(a))
            if transpose_b:
                b = b_ref[:, pl.ds(start, block_r)]
                prod = lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)
            else:
                b = b_ref[pl.ds(start, block_r), :]
                prod = jnp.dot(a, b, preferred_element_type=jnp.float32)
            return acc + prod

        acc = lax.fori_loop(0, pl.cdiv(r, block_r), body, jnp.zeros((bm, bo), jnp.float32))
        if has_bias:
            acc = acc + bias_ref[...].astype(jnp.float32)
        keep = _common.iota_lt(j * bo, bo, o)[None, :]
        o_ref[...] = jnp.where(keep, acc, jnp.zeros_like(acc)).astype(o_ref.dtype)

    @pl.when(j * bo >= o)
    def _inactive():
        o_ref[...] = jnp.zeros(o_ref.shape, o_ref.dtype)


def matmul(a, b, bias, r, o, *, cfg: _common.PallasConfig, transpose_b: bool, bm: int, bo: int, br: int):
    """``a[:, :r] @ B[:r, :o]``, zero past column o; B = b, or b.T when ``transpose_b``.

    Args:
      a: (Mp, Rp), Mp % bm == 0, Rp % br == 0.
      b: (Rp, Op), or (Op, Rp) when ``transpose_b``; Op % bo == 0.
      bias: (1, Op) or None.
      r, o: run-time int32 scalars, 0 <= r <= Rp, 0 <= o <= Op.
    Returns:
      (Mp, Op) in a's dtype.
    """
    mp, rp = a.shape
    op = b.shape[0] if transpose_b else b.shape[1]
    in_specs = [
        pl.BlockSpec((bm, rp), lambda i, j, *_: (i, 0)),
        (
            pl.BlockSpec((bo, rp), lambda i, j, *_: (j, 0))
            if transpose_b
            else pl.BlockSpec((rp, bo), lambda i, j, *_: (0, j))
        ),
    ]
    operands = [a, b]
    if bias is not None:
        in_specs.append(pl.BlockSpec((1, bo), lambda i, j, *_: (0, j)))
        operands.append(bias)
    kernel = functools.partial(_mm_kernel, block_r=br, transpose_b=transpose_b, has_bias=bias is not None)
    return _common.call(
        kernel,
        cfg=cfg,
        grid=(mp // bm, op // bo),
        in_specs=in_specs,
        out_specs=pl.BlockSpec((bm, bo), lambda i, j, *_: (i, j)),
        out_shape=jax.ShapeDtypeStruct((mp, op), a.dtype),
        sizes=_common.sizes_vector(r, o),
        operands=operands,
        name="elastic_matmul" + ("_nt" if transpose_b else ""),
    )


def _tn_kernel(sizes_ref, a_ref, g_ref, o_ref, *, block_m: int):
    """One (bp, bq) tile of ``a^T @ g`` restricted to rows < p and columns < q (zero elsewhere).

    Tiling: grid = (P / bp, Q / bq); the a-block is the (M, bp) column strip, the g-block the (M, bq) strip,
    and the kernel reduces over all of M in ``block_m`` chunks (static trip count: M is never elastic). A tile
    with no active row or no active column writes zeros and reads nothing (``pl.when``). This is the weight
    gradient: dW = x^T @ dy, zero outside the active block.
    """
    p = sizes_ref[0]
    q = sizes_ref[1]
    i = pl.program_id(0)
    j = pl.program_id(1)
    bp, bq = o_ref.shape
    m = a_ref.shape[0]
    active = jnp.logical_and(i * bp < p, j * bq < q)

    @pl.when(active)
    def _active():
        def body(t, acc):
            start = pl.multiple_of(t * block_m, block_m)
            a = a_ref[pl.ds(start, block_m), :]
            g = g_ref[pl.ds(start, block_m), :]
            return acc + lax.dot_general(a, g, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)

        acc = lax.fori_loop(0, m // block_m, body, jnp.zeros((bp, bq), jnp.float32))
        keep = jnp.logical_and(_common.iota_lt(i * bp, bp, p)[:, None], _common.iota_lt(j * bq, bq, q)[None, :])
        o_ref[...] = jnp.where(keep, acc, jnp.zeros_like(acc)).astype(o_ref.dtype)

    @pl.when(jnp.logical_not(active))
    def _inactive():
        o_ref[...] = jnp.zeros(o_ref.shape, o_ref.dtype)


def matmul_tn(a, g, p, q, *, cfg: _common.PallasConfig, bp: int, bq: int, bm: int, out_dtype=None):
    """``a[:, :p]^T @ g[:, :q]`` placed in a (Pp, Qp) zero array.

    Args:
      a: (Mp, Pp); g: (Mp, Qp); Mp % bm == 0, Pp % bp == 0, Qp % bq == 0.
      p, q: run-time int32 scalars.
    """
    mp, pp = a.shape
    qp = g.shape[1]
    return _common.call(
        functools.partial(_tn_kernel, block_m=bm),
        cfg=cfg,
        grid=(pp // bp, qp // bq),
        in_specs=[pl.BlockSpec((mp, bp), lambda i, j, *_: (0, i)), pl.BlockSpec((mp, bq), lambda i, j, *_: (0, j))],
        out_specs=pl.BlockSpec((bp, bq), lambda i, j, *_: (i, j)),
        out_shape=jax.ShapeDtypeStruct((pp, qp), out_dtype or a.dtype),
        sizes=_common.sizes_vector(p, q),
        operands=[a, g],
        name="elastic_matmul_tn",
    )
