"""Pallas kernels for the elastic depthwise conv (NHWC, run-time channels c and centre-crop size ks).

Both kernels work on a "valid" correlation over a pre-padded input,

    y[b, o, p, ch] = sum_{i, j < ks} xin[b, base_h + s*o + i, base_w + s*p + j, ch] * w[lo + i, lo + j, ch],

with lo = (Kmax - ks) // 2 and run-time offsets base_h/base_w that encode the SAME padding of the active
ks. The forward, and the input gradient (a stride-1 correlation of the zero-dilated output gradient with
the flipped kernel), are this correlation; the weight gradient has its own kernel.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from kernels import _common


def _ds(start, size: int, stride: int):
    return pl.ds(start, size, stride) if stride > 1 else pl.ds(start, size)


def _corr_kernel(sizes_ref, x_ref, w_ref, o_ref, *, stride: int):
    """One (image, channel tile) of the elastic depthwise correlation.

    Tiling: grid = (B, C / bc). Each program sees one image's whole padded (Hin, Win, bc) plane and writes
    its whole (Ho, Wo, bc) output; the spatial map is not tiled (fine for supernet feature maps; a halo
    tiling would be needed for very large ones). Inactive work is skipped two ways: a channel tile whose first
    channel is >= c writes zeros and reads nothing (``pl.when``), and the tap loop runs ks*ks times, a
    run-time trip count, over the centre crop only, so taps outside it cost nothing.
    """
    c = sizes_ref[0]
    ks = sizes_ref[1]
    base_h = sizes_ref[2]
    base_w = sizes_ref[3]
    kmax = w_ref.shape[0]
    ho, wo, bc = o_ref.shape
    cb = pl.program_id(1)
    lo = (kmax - ks) // 2

    @pl.when(cb * bc < c)
    def _active():
        def tap(t, acc):
            i = t // ks
            j = t - i * ks
            patch = x_ref[_ds(base_h + i, ho, stride), _ds(base_w + j, wo, stride), :]
            wv = w_ref[lo + i, lo + j, :].astype(jnp.float32)
            return acc + patch.astype(jnp.float32) * wv[None, None, :]

        acc = lax.fori_loop(0, ks * ks, tap, jnp.zeros((ho, wo, bc), jnp.float32))
        keep = _common.iota_lt(cb * bc, bc, c)[None, None, :]
        o_ref[...] = jnp.where(keep, acc, jnp.zeros_like(acc)).astype(o_ref.dtype)

    @pl.when(cb * bc >= c)
    def _inactive():
        o_ref[...] = jnp.zeros(o_ref.shape, o_ref.dtype)


def correlate(xin, w, c, ks, base_h, base_w, *, stride: int, ho: int, wo: int, bc: int, cfg):
    """xin (B, Hin, Win, Cp), w (Kmax, Kmax, Cp) -> (B, ho, wo, Cp); reads must stay inside xin."""
    b, hin, win, cp = xin.shape
    kmax = w.shape[0]
    sq = pl.squeezed
    return _common.call(
        functools.partial(_corr_kernel, stride=stride),
        cfg=cfg,
        grid=(b, cp // bc),
        in_specs=[
            pl.BlockSpec((sq, hin, win, bc), lambda n, k, *_: (n, 0, 0, k)),
            pl.BlockSpec((kmax, kmax, bc), lambda n, k, *_: (0, 0, k)),
        ],
        out_specs=pl.BlockSpec((sq, ho, wo, bc), lambda n, k, *_: (n, 0, 0, k)),
        out_shape=jax.ShapeDtypeStruct((b, ho, wo, cp), xin.dtype),
        sizes=_common.sizes_vector(c, ks, base_h, base_w),
        operands=[xin, w],
        name="elastic_dwconv",
    )


def _dw_kernel(sizes_ref, x_ref, g_ref, dw_ref, *, stride: int):
    """Weight gradient for one channel tile: dW[lo+i, lo+j, ch] = sum_{b,o,p} xin[...] * g[b, o, p, ch].

    Tiling: grid = (C / bc,); each program reduces over the whole batch and output plane (a reduction across
    programs would need atomics on GPU). The loop visits all Kmax*Kmax taps so that every output element is
    written exactly once: taps outside the active crop, and channel tiles past c, write zeros without loading
    anything (``pl.when``).
    """
    c = sizes_ref[0]
    ks = sizes_ref[1]
    base_h = sizes_ref[2]
    base_w = sizes_ref[3]
    kmax, _, bc = dw_ref.shape
    nb, ho, wo, _ = g_ref.shape
    cb = pl.program_id(0)
    lo = (kmax - ks) // 2
    chan_on = cb * bc < c
    keep = _common.iota_lt(cb * bc, bc, c)

    def tap(t, carry):
        ti = t // kmax
        tj = t - ti * kmax
        i = ti - lo
        j = tj - lo
        on = chan_on & (i >= 0) & (i < ks) & (j >= 0) & (j < ks)

        @pl.when(on)
        def _active():
            def per_image(n, acc):
                patch = x_ref[n, _ds(base_h + i, ho, stride), _ds(base_w + j, wo, stride), :].astype(jnp.float32)
                prod = patch * g_ref[n].astype(jnp.float32)  # (ho, wo, bc)
                return acc + jnp.sum(jnp.sum(prod, axis=0), axis=0)

            acc = lax.fori_loop(0, nb, per_image, jnp.zeros((bc,), jnp.float32))
            dw_ref[ti, tj, :] = jnp.where(keep, acc, jnp.zeros_like(acc)).astype(dw_ref.dtype)

        @pl.when(jnp.logical_not(on))
        def _inactive():
            dw_ref[ti, tj, :] = jnp.zeros((bc,), dw_ref.dtype)

        return carry

    lax.fori_loop(0, kmax * kmax, tap, 0)


def weight_grad(xin, g, c, ks, base_h, base_w, *, kmax: int, stride: int, bc: int, cfg, out_dtype):
    """xin (B, Hin, Win, Cp) as in the forward, g (B, ho, wo, Cp) -> dW (Kmax, Kmax, Cp)."""
    b, hin, win, cp = xin.shape
    _, ho, wo, _ = g.shape
    return _common.call(
        functools.partial(_dw_kernel, stride=stride),
        cfg=cfg,
        grid=(cp // bc,),
        in_specs=[
            pl.BlockSpec((b, hin, win, bc), lambda k, *_: (0, 0, 0, k)),
            pl.BlockSpec((b, ho, wo, bc), lambda k, *_: (0, 0, 0, k)),
        ],
        out_specs=pl.BlockSpec((kmax, kmax, bc), lambda k, *_: (0, 0, k)),
        out_shape=jax.ShapeDtypeStruct((kmax, kmax, cp), out_dtype),
        sizes=_common.sizes_vector(c, ks, base_h, base_w),
        operands=[xin, g],
        name="elastic_dwconv_dw",
    )
