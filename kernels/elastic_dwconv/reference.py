"""Pure-jnp elastic depthwise conv: the oracle (static c, ks) and the XLA path (run-time c, ks).

Layout NHWC, weights (Kmax, Kmax, Cmax), SAME padding, stride 1 or 2. The active kernel is the centre
ks x ks crop of the Kmax x Kmax weights (Kmax - ks even); output channels >= c are zero.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def out_size(size: int, stride: int) -> int:
    """SAME padding output size, independent of the kernel size."""
    return -(-size // stride)


def same_pad_lo(size: int, stride: int, ks):
    """Low-side SAME padding for kernel size ``ks`` (int or traced): max((out-1)*s + ks - size, 0) // 2."""
    total = (out_size(size, stride) - 1) * stride + ks - size
    return jnp.maximum(total, 0) // 2 if isinstance(total, jax.Array) else max(total, 0) // 2


def elastic_dwconv_reference(x, w, *, c: int, ks: int, stride: int):
    """Oracle with Python-int sizes: lax.conv_general_dilated on the sliced crop and channels, in f32."""
    kmax = w.shape[0]
    lo = (kmax - ks) // 2
    wc = w[lo : lo + ks, lo : lo + ks, :c].astype(jnp.float32)[:, :, None, :]  # (ks, ks, 1, c) HWIO
    y = lax.conv_general_dilated(
        x[..., :c].astype(jnp.float32),
        wc,
        (stride, stride),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
    )
    return jnp.pad(y, ((0, 0), (0, 0), (0, 0), (0, x.shape[-1] - c))).astype(x.dtype)


def elastic_dwconv_xla(x, w, *, c, ks, stride: int):
    """XLA path with run-time c and ks: a sum of Kmax*Kmax shifted, per-channel-scaled copies of x.

    Taps outside the active centre crop and channels >= c get weight zero, so one compilation serves all
    (c, ks); autodiff then gives exactly zero gradient there. For odd Kmax and odd ks the SAME offset of the
    full kernel equals that of every centre crop, so x is padded once, statically. It always costs the full
    Kmax x Kmax kernel; the notes measured this form without the slow path of conv inside conditionals.
    """
    b, hh, ww, cmax = x.shape
    kmax = w.shape[0]
    ho, wo = out_size(hh, stride), out_size(ww, stride)
    ph, pw = same_pad_lo(hh, stride, kmax), same_pad_lo(ww, stride, kmax)
    lo = (kmax - ks) // 2
    taps = jnp.arange(kmax)
    tap_on = (taps >= lo) & (taps < lo + ks)
    mask = tap_on[:, None, None] & tap_on[None, :, None] & (jnp.arange(cmax) < c)[None, None, :]
    wm = jnp.where(mask, w, jnp.zeros((), w.dtype)).astype(jnp.float32)
    need_h = (ho - 1) * stride + kmax
    need_w = (wo - 1) * stride + kmax
    xp = jnp.pad(x, ((0, 0), (ph, max(need_h - hh - ph, 0)), (pw, max(need_w - ww - pw, 0)), (0, 0)))
    acc = jnp.zeros((b, ho, wo, cmax), jnp.float32)
    for i in range(kmax):
        for j in range(kmax):
            patch = lax.slice(
                xp,
                (0, i, j, 0),
                (b, i + (ho - 1) * stride + 1, j + (wo - 1) * stride + 1, cmax),
                (1, stride, stride, 1),
            )
            acc = acc + patch.astype(jnp.float32) * wm[i, j]
    return acc.astype(x.dtype)
