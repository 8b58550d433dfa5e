"""Layers that several spaces share: elastic BatchNorm, depthwise conv, the one-branch-VJP switch,
preprocessing, activations, and the NNX BatchNorm helpers of the static subnets.

Supernets select their subnet with integer arrays passed to the jitted step. Each elastic block is a
``lax.switch`` over static-shape branches (one per width x kernel choice, plus an identity branch
for blocks that elastic depth switches off), so a small subnet only computes its own shapes.

Plain ``lax.switch`` is slow to train on XLA CPU: its VJP keeps the residuals of every branch and
hits slow paths (../shared/NOTES-jax.md measured 0.8-0.9x of the largest network's step for the
smallest subnet). :func:`switch_vjp` saves only the branch index and the inputs, and its backward
pass recomputes the VJP of the taken branch alone.
"""

from __future__ import annotations

import functools
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax
from jax.custom_derivatives import SymbolicZero

BN_EPS = 1e-5


def switch_vjp(index: jax.Array, branches: Sequence[Callable], *operands):
    """``lax.switch(index, branches, *operands)`` whose backward pass differentiates one branch.

    Forward saves (index, operands); backward runs ``lax.switch`` over the branches' VJPs, which
    recomputes the chosen branch's forward (cheap, and it keeps memory to one branch).
    """
    branches = tuple(branches)

    @jax.custom_vjp
    def f(index, *ops):
        return lax.switch(index, branches, *ops)

    def fwd(index, *ops):
        return lax.switch(index, branches, *ops), (index, ops)

    def bwd(res, g):
        index, ops = res

        def vjp_of(branch):
            def run(ops, g):
                _, pullback = jax.vjp(branch, *ops)
                return pullback(g)

            return run

        grads = lax.switch(index, [vjp_of(b) for b in branches], ops, g)
        return (None, *grads)

    f.defvjp(fwd, bwd)
    return f(index, *operands)


def _batch_stats(x):
    """Per-channel batch mean and variance of ``x`` (..., C) from ONE reduction of [x, x^2].

    Under ``jit`` with the batch sharded over devices, GSPMD turns each reduction over the batch
    axis into a cross-device all-reduce. The textbook two-pass variance (the mean, then the mean of
    squares around it) is two dependent all-reduces per BatchNorm; E[x^2] - E[x]^2 is one, over the
    concatenated (2C,) sums, as torch's SyncBatchNorm and flax's ``use_fast_variance=True`` (the
    ``nnx.BatchNorm`` default) compute it. No shift can improve its conditioning here without a
    second reduction (GSPMD has no per-device value to shift by). Its float32 error is about
    eps * mean^2 / var relative; on these supernets' activations |mean| / std stayed below 3 and the
    difference from the two-pass variance below 1e-6 relative (bench/RESULTS.md; bounded in
    tests/search_spaces/test_batch_norm.py). The variance is clipped at zero as flax clips it.
    """
    axes = tuple(range(x.ndim - 1))
    c = x.shape[-1]
    moments = jnp.mean(jnp.concatenate([x, jnp.square(x)], -1), axes)  # (2C,): E[x], E[x^2]
    mean = moments[:c]
    return mean, jnp.maximum(moments[c:] - jnp.square(mean), 0.0)


@jax.custom_vjp
def batch_norm_train(x, scale, bias):
    """Training-mode BatchNorm of ``x`` (..., C): (y, batch mean, batch variance), with one
    cross-device reduction in the forward and one in the backward under a sharded batch.

    The backward is BatchNorm's closed form: with xhat = (x - mean) * rstd and N elements per
    channel, dx = scale * rstd * (dy - (sum dy + xhat * sum(dy * xhat)) / N), where the two sums
    (also d bias and d scale) are one reduction over their concatenation. Plain autodiff of the
    forward reduces them separately, plus the forward's own dependent reductions again.
    """
    y, mean, var, _ = _bn_train_forward(x, scale, bias)
    return y, mean, var


def _bn_train_forward(x, scale, bias):
    mean, var = _batch_stats(x)
    rstd = lax.rsqrt(var + BN_EPS)
    y = (x - mean) * (rstd * scale) + bias  # nnx.BatchNorm's operation order, as in batch_norm
    return y, mean, var, rstd


def _bn_train_fwd(x, scale, bias):
    x, scale, bias = x.value, scale.value, bias.value  # symbolic_zeros: CustomVJPPrimal inputs
    y, mean, var, rstd = _bn_train_forward(x, scale, bias)
    return (y, mean, var), (x, mean, rstd, scale)


def _bn_train_bwd(res, cts):
    x, mean, rstd, scale = res
    dy, dmean, dvar = cts
    axes = tuple(range(x.ndim - 1))
    c = x.shape[-1]
    n = x.size // c
    xhat = (x - mean) * rstd
    if isinstance(dy, SymbolicZero):
        dy = jnp.zeros_like(x)
    sums = jnp.sum(jnp.concatenate([dy, dy * xhat], -1), axes)  # (2C,): the only reduction
    dbias, dscale = sums[:c], sums[c:]
    dx = (scale * rstd) * (dy - (dbias + xhat * dscale) / n)
    # The statistics are outputs too (calibration): d mean/dx = 1/N, d var/dx = 2 (x - mean)/N.
    # Training never uses them, and their symbolic-zero cotangents cost nothing.
    if not isinstance(dmean, SymbolicZero):
        dx = dx + dmean / n
    if not isinstance(dvar, SymbolicZero):
        dx = dx + (2.0 / n) * dvar * (x - mean)
    return dx, dscale, dbias


batch_norm_train.defvjp(_bn_train_fwd, _bn_train_bwd, symbolic_zeros=True)


def _with_stats(y, mean, var, full: int, c: int, mode: str):
    """A BatchNorm's return value: ``(y, None)``, or in calibration ``(y, {"mean", "var"})`` with the
    statistics of the ``c`` active channels zero-padded to the ``full`` width."""
    if mode != "calib":
        return y, None
    pad = (0, full - c)
    return y, {"mean": jnp.pad(mean, pad), "var": jnp.pad(var, pad)}


def batch_norm(x, p, s, c: int, mode: str):
    """BatchNorm over the first ``c`` channels of full-size parameters ``p`` and statistics ``s``.

    Args:
      x: (..., c) activations.
      p: {"scale", "bias"} of the largest width.
      s: {"mean", "var"} of the largest width (used in ``eval`` mode only).
      c: active channels (static).
      mode: "train" and "calib" normalise with the batch statistics (:func:`batch_norm_train`;
        calibration also returns them, zero-padded to full width); "eval" uses ``s``.

    Returns:
      (y, stats) where stats is {"mean", "var"} padded to full width, or None outside calibration.
    """
    if mode == "eval":
        mean, var = s["mean"][:c], s["var"][:c]
        # Same operation order as nnx.BatchNorm, so the static subnet reproduces it bit for bit.
        y = (x - mean) * (lax.rsqrt(var + BN_EPS) * p["scale"][:c]) + p["bias"][:c]
    else:
        y, mean, var = batch_norm_train(x, p["scale"][:c], p["bias"][:c])
    return _with_stats(y, mean, var, p["scale"].shape[0], c, mode)


def batch_norm_reference(x, p, s, c: int, mode: str):
    """:func:`batch_norm` by the textbook formula (two-pass variance, autodiff backward): its
    test oracle, and the "plain" side of bench/data_parallel.py's ``--bn`` A/B. Under a sharded
    batch it costs two dependent all-reduces in the forward and two or more in the backward."""
    if mode == "eval":  # one formula for both: the stored statistics
        return batch_norm(x, p, s, c, mode)
    axes = tuple(range(x.ndim - 1))
    mean = jnp.mean(x, axes)
    var = jnp.mean(jnp.square(x - mean), axes)
    y = (x - mean) * (lax.rsqrt(var + BN_EPS) * p["scale"][:c]) + p["bias"][:c]
    return _with_stats(y, mean, var, p["scale"].shape[0], c, mode)


def same_padding(size: int, k: int, stride: int) -> tuple[int, int, int]:
    """(pad_lo, pad_hi, out_size) of XLA's 'SAME' padding, so results match ``lax.conv`` exactly."""
    out = -(-size // stride)
    total = max((out - 1) * stride + k - size, 0)
    return total // 2, total - total // 2, out


def conv_padding(size: int, k: int, stride: int, symmetric: bool = False) -> tuple[int, int, int]:
    """(pad_lo, pad_hi, out_size): XLA's 'SAME' (:func:`same_padding`), or with ``symmetric``
    PyTorch's ``padding=k // 2`` on both sides (same out size for odd ``k``; on an even side with
    stride 2 the window sits one pixel earlier than 'SAME''s)."""
    if not symmetric:
        return same_padding(size, k, stride)
    out = (size + 2 * (k // 2) - k) // stride + 1
    return k // 2, k // 2, out


@functools.partial(jax.checkpoint, static_argnums=(2, 3))
def depthwise_conv(x, w, stride: int, symmetric: bool = False):
    """Depthwise conv, 'SAME' padding, as a sum of k*k shifted, per-channel-scaled copies.

    Identical to ``lax.conv_general_dilated(feature_group_count=C)``, but with no slow path when its
    weight gradient sits inside a conditional on XLA CPU (NOTES-jax.md: 38 ms against 2.7 s).

    Checkpointed: its backward recomputes the shifted copies from ``x`` (slices, nearly free) instead
    of keeping all k*k of them. Kept, they were 3.9 GB of the largest mobilenetv3 subnet's 4.1 GB of
    residuals between the composed trainer's forward and backward programs (w1.0, 32 px, batch 64;
    bench/RESULTS.md, issue 29).

    Args:
      x: (B, H, W, C).
      w: (k, k, C).
      symmetric: PyTorch's padding (:func:`conv_padding`) instead of 'SAME'.
    """
    k = w.shape[0]
    _, h, wd, _ = x.shape
    lo_h, hi_h, out_h = conv_padding(h, k, stride, symmetric)
    lo_w, hi_w, out_w = conv_padding(wd, k, stride, symmetric)
    xp = jnp.pad(x, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
    out = None
    for dy in range(k):
        for dx in range(k):
            patch = xp[:, dy : dy + (out_h - 1) * stride + 1 : stride, dx : dx + (out_w - 1) * stride + 1 : stride, :]
            term = patch * w[dy, dx]
            out = term if out is None else out + term
    return out


def centre_kernel(dw, transforms: dict, k: int, kernel_choices: Sequence[int]):
    """OFA elastic kernel: centre-crop the largest kernel, passing through learned transforms.

    Going from size K to the next smaller size k, the centre k x k crop is multiplied (per layer,
    shared over channels) by a learned (k*k, k*k) matrix ``transforms[f"tf{k}"]``, initialised to
    the identity. Smaller kernels are built from the transformed larger ones, as in OFA.

    Args:
      dw: (Kmax, Kmax, C) depthwise kernel.
      transforms: {"tf{k}": (k*k, k*k)} for every k below the largest.
      k: wanted kernel size (static).
    """
    sizes = sorted(kernel_choices, reverse=True)
    w = dw
    for size in sizes[1:]:
        if size < k:
            break
        off = (w.shape[0] - size) // 2
        crop = w[off : off + size, off : off + size, :]  # (size, size, C)
        c = crop.shape[-1]
        crop = jnp.einsum("ic,ij->jc", crop.reshape(size * size, c), transforms[f"tf{size}"])
        w = crop.reshape(size, size, c)
    return w


def hard_swish(x):
    return x * jax.nn.relu6(x + 3.0) / 6.0


def hard_sigmoid(x):
    return jax.nn.relu6(x + 3.0) / 6.0


ACTIVATIONS = {"relu": jax.nn.relu, "hswish": hard_swish}


def preprocess(images, resolution: int, mean: float, std: float):
    """uint8 (B, H, W, C) -> float32 normalised, resized to ``resolution`` (bilinear, no antialias)."""
    x = (images.astype(jnp.float32) / 255.0 - mean) / std
    if x.shape[1] != resolution or x.shape[2] != resolution:
        x = jax.image.resize(x, (x.shape[0], resolution, resolution, x.shape[3]), "bilinear", antialias=False)
    return x


def make_divisible(v: float, divisor: int = 8) -> int:
    """``v`` rounded to a multiple of ``divisor``, never below 90% of ``v`` (MobileNet's rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def init_stats(params) -> dict:
    """BatchNorm statistics with the structure of ``params``' BN nodes: mean 0, variance 1."""

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"scale", "bias"}:
                return {"mean": jnp.zeros_like(node["scale"]), "var": jnp.ones_like(node["scale"])}
            return {k: walk(v) for k, v in node.items() if _has_bn(v)}
        if isinstance(node, list):
            return [walk(v) for v in node]
        raise TypeError(node)

    return walk(params)


def _has_bn(node) -> bool:
    if isinstance(node, dict):
        return set(node) == {"scale", "bias"} or any(_has_bn(v) for v in node.values())
    if isinstance(node, list):
        return any(_has_bn(v) for v in node)
    return False


def batch_norm_module(channels: int, rngs: nnx.Rngs) -> nnx.BatchNorm:
    """An inference-mode ``nnx.BatchNorm`` with the supernet's epsilon (static subnets)."""
    return nnx.BatchNorm(channels, use_running_average=True, epsilon=BN_EPS, rngs=rngs)


def set_batch_norm(bn: nnx.BatchNorm, p, s, c: int) -> None:
    """Loads the first ``c`` channels of supernet BN parameters ``p`` and statistics ``s`` into ``bn``."""
    bn.scale.set_value(p["scale"][:c])
    bn.bias.set_value(p["bias"][:c])
    bn.mean.set_value(s["mean"][:c])
    bn.var.set_value(s["var"][:c])
