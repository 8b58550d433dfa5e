"""Public entry point of the elastic depthwise conv: dispatch and the Pallas custom_vjp."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from kernels import _common
from kernels.elastic_dwconv import pallas as _pallas
from kernels.elastic_dwconv.reference import elastic_dwconv_xla, out_size, same_pad_lo


def elastic_dwconv(
    x,
    w,
    *,
    c,
    ks,
    stride: int,
    implementation: str = "auto",
    interpret: bool = False,
    _variant: str | None = None,
    _block_cap: int = 128,
):
    """Depthwise conv (NHWC, SAME) with run-time active channels c and centre-crop kernel size ks.

    Args:
      x: (B, H, W, Cmax); channels >= c are ignored.
      w: (Kmax, Kmax, Cmax) with Kmax odd; the active kernel is w[lo:lo+ks, lo:lo+ks, :c], lo = (Kmax-ks)//2.
      c, ks: int32 scalars (Python ints or traced); 1 <= c <= Cmax, ks odd, 1 <= ks <= Kmax. Changing them
        does not recompile.
      stride: 1 or 2 (static).
      implementation: "xla" | "pallas" | "auto" (pallas on GPU/TPU, xla on CPU).
      interpret: run the Pallas kernels in interpret mode (required for "pallas" on CPU).
    Returns:
      (B, ceil(H/stride), ceil(W/stride), Cmax) in x's dtype; channels >= c are zero.
    Raises:
      ValueError: bad shapes or stride, unknown implementation, "pallas" on CPU without interpret.
    """
    if x.ndim != 4 or w.ndim != 3 or w.shape[0] != w.shape[1] or w.shape[2] != x.shape[3]:
        raise ValueError(f"expected x (B, H, W, C) and w (K, K, C); got x {x.shape}, w {w.shape}")
    if w.shape[0] % 2 != 1:
        raise ValueError(f"the largest kernel size must be odd (centre crops); got {w.shape[0]}")
    if stride not in (1, 2):
        raise ValueError(f"stride={stride!r}; expected 1 or 2")
    cfg = _common.resolve_implementation(implementation, interpret, _variant, block_cap=_block_cap)
    c = jnp.clip(jnp.asarray(c, jnp.int32), 0, x.shape[3])
    ks = jnp.clip(jnp.asarray(ks, jnp.int32), 1, w.shape[0])
    if cfg is None:
        return elastic_dwconv_xla(x, w, c=c, ks=ks, stride=stride)
    return elastic_dwconv_pallas(cfg, stride, x, w, c, ks)


def _geometry(cfg, x_shape, kmax, stride):
    _, hh, ww, cmax = x_shape
    ho, wo = out_size(hh, stride), out_size(ww, stride)
    # Triton needs power-of-two value shapes, so the output plane is computed padded to powers of two.
    hop, wop = _common.next_pow2(ho), _common.next_pow2(wo)
    bc = _common.block_size(cmax, cfg.block_cap)
    cp = _common.round_up(cmax, bc)
    return ho, wo, hop, wop, bc, cp


def _padded_input(x, kmax, stride, hop, wop, cp):
    """x padded by Kmax-1 on the low side and far enough on the high side for every tap of every ks."""
    _, hh, ww, _ = x.shape
    p = kmax - 1
    hin = max(stride * (hop - 1) + 2 * kmax - 1, p + hh)
    win = max(stride * (wop - 1) + 2 * kmax - 1, p + ww)
    return jnp.pad(x, ((0, 0), (p, hin - p - hh), (p, win - p - ww), (0, cp - x.shape[3])))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def elastic_dwconv_pallas(cfg, stride, x, w, c, ks):
    """Pallas forward; the backward is Pallas too (see ``_bwd``)."""
    return _fwd(cfg, stride, x, w, c, ks)[0]


def _fwd(cfg, stride, x, w, c, ks):
    _, hh, ww, cmax = x.shape
    kmax = w.shape[0]
    ho, wo, hop, wop, bc, cp = _geometry(cfg, x.shape, kmax, stride)
    xin = _padded_input(x, kmax, stride, hop, wop, cp)
    base_h = (kmax - 1) - same_pad_lo(hh, stride, ks)
    base_w = (kmax - 1) - same_pad_lo(ww, stride, ks)
    wp = _common.pad_to(w, (kmax, kmax, cp))
    y = _pallas.correlate(xin, wp, c, ks, base_h, base_w, stride=stride, ho=hop, wo=wop, bc=bc, cfg=cfg)
    return y[:, :ho, :wo, :cmax], (x, w, c, ks)


def _bwd(cfg, stride, res, g):
    x, w, c, ks = res
    b, hh, ww, cmax = x.shape
    kmax = w.shape[0]
    ho, wo, hop, wop, bc, cp = _geometry(cfg, x.shape, kmax, stride)
    g = g.astype(x.dtype)
    pad_h, pad_w = same_pad_lo(hh, stride, ks), same_pad_lo(ww, stride, ks)

    # dx: stride-1 correlation of the zero-dilated gradient with the flipped kernel (same centre crop).
    hxo, wxo = _common.next_pow2(hh), _common.next_pow2(ww)
    gd = jnp.zeros((b, stride * (ho - 1) + 1, stride * (wo - 1) + 1, cmax), g.dtype)
    gd = gd.at[:, ::stride, ::stride, :].set(g)  # (B, s*(Ho-1)+1, s*(Wo-1)+1, C)
    q = kmax - 1
    lin_h, lin_w = 2 * q + hxo, 2 * q + wxo
    gdp = jnp.pad(gd, ((0, 0), (q, lin_h - q - gd.shape[1]), (q, lin_w - q - gd.shape[2]), (0, cp - cmax)))
    wf = _common.pad_to(w[::-1, ::-1, :], (kmax, kmax, cp))
    dx = _pallas.correlate(
        gdp, wf, c, ks, q + pad_h - (ks - 1), q + pad_w - (ks - 1), stride=1, ho=hxo, wo=wxo, bc=bc, cfg=cfg
    )[:, :hh, :ww, :cmax]

    # dW: reduce x-patches times g over batch and plane, per tap of the active crop.
    xin = _padded_input(x, kmax, stride, hop, wop, cp)
    gp = jnp.pad(g, ((0, 0), (0, hop - ho), (0, wop - wo), (0, cp - cmax)))
    dw = _pallas.weight_grad(
        xin, gp, c, ks, q - pad_h, q - pad_w, kmax=kmax, stride=stride, bc=bc, cfg=cfg, out_dtype=w.dtype
    )[:, :, :cmax]
    return dx, dw, None, None


elastic_dwconv_pallas.defvjp(_fwd, _bwd)
