"""The deployable mobilenetv3 subnet: a Flax NNX model with static shapes, and slicing supernet
weights into it.

:class:`StaticMobileNetV3` is ``stem`` (:class:`StaticStem`), ``blocks`` (:class:`StaticBlock`) and
``head`` (:class:`StaticHead`) as submodules: the latency table times exactly these (latency.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from search_spaces.layers import (
    ACTIVATIONS,
    batch_norm_module,
    centre_kernel,
    depthwise_conv,
    hard_sigmoid,
    hard_swish,
    conv_padding,
    set_batch_norm,
)
from search_spaces.mobilenetv3.config import MobileNetV3Arch, MobileNetV3Config, se_mid
from search_spaces.mobilenetv3.supernet import block_params


class _SE(nnx.Module):
    """Squeeze-excite: a channel gate computed from the pooled map (reduce, ReLU, expand, hard sigmoid)."""

    def __init__(self, hidden: int, rngs: nnx.Rngs, divisor: int = 1):
        mid = se_mid(hidden, divisor)
        self.reduce = nnx.Linear(hidden, mid, rngs=rngs)
        self.expand = nnx.Linear(mid, hidden, rngs=rngs)

    def __call__(self, z):
        pooled = jnp.mean(z, axis=(1, 2))
        gate = hard_sigmoid(self.expand(jax.nn.relu(self.reduce(pooled))))
        return z * gate[:, None, None, :]


class DepthwiseConv(nnx.Module):
    """Depthwise conv, 'SAME' padding, as a sum of k*k shifted per-channel-scaled copies.

    On XLA CPU this is 13-33x faster than ``nnx.Conv(feature_group_count=C)`` at these sizes
    (forward, (64, 16, 16, 144), k 3 and 7, stride 1 and 2; see bench/RESULTS.md), and equal to it
    numerically. Since latency is measured on the static subnet, the deployable model must use the
    fast formulation. Kernel layout (k, k, C).

    For ONNX (:meth:`use_onnx_ops`) it is one grouped conv instead: the k*k shifted copies become
    thousands of ONNX nodes (mobilenetv3-tiny: 3560 nodes, 157 s to convert, 43 s to load in
    onnxruntime), the grouped conv 444 nodes and 3 s; outputs agree to float32 rounding.
    """

    def __init__(self, channels: int, kernel_size: int, stride: int, rngs: nnx.Rngs, symmetric: bool = False):
        init = nnx.initializers.lecun_normal()
        self.kernel = nnx.Param(init(rngs.params(), (kernel_size, kernel_size, channels)))
        self.stride = stride
        self.symmetric = symmetric  # PyTorch's padding (layers.conv_padding)
        self.grouped = False

    def use_onnx_ops(self) -> None:
        """Computes with ``lax.conv_general_dilated(feature_group_count=C)``: ONNX's grouped Conv."""
        self.grouped = True

    def __call__(self, x):
        with jax.named_scope("depthwise_conv"):
            w = self.kernel[...]
            if not self.grouped:
                return depthwise_conv(x, w, self.stride, self.symmetric)
            k = w.shape[0]
            pads = [conv_padding(x.shape[axis], k, self.stride, self.symmetric)[:2] for axis in (1, 2)]
            return jax.lax.conv_general_dilated(x, w[:, :, None, :], (self.stride, self.stride), pads,
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                feature_group_count=x.shape[-1])


class StaticBlock(nnx.Module):
    """One inverted-residual block at static (kernel ``k``, expand ``e``): 1x1 expand, depthwise, SE, 1x1 project."""

    def __init__(self, cin, cout, stride, k, e, act, se, rngs: nnx.Rngs, *, symmetric: bool = False,
                 se_divisor: int = 1):
        h = cin * e
        self.residual = stride == 1 and cin == cout
        self.act = act
        # 1x1 convs as Linear over the channel axis: the same dot_general as the supernet's einsum,
        # so both sum in the same order (BatchNorm on small maps amplifies any difference).
        self.expand = nnx.Linear(cin, h, use_bias=False, rngs=rngs)
        self.bn1 = batch_norm_module(h, rngs)
        self.dw = DepthwiseConv(h, k, stride, rngs, symmetric)
        self.bn2 = batch_norm_module(h, rngs)
        self.se = _SE(h, rngs, se_divisor) if se else None
        self.proj = nnx.Linear(h, cout, use_bias=False, rngs=rngs)
        self.bn3 = batch_norm_module(cout, rngs)

    def __call__(self, x):
        act = ACTIVATIONS[self.act]
        z = act(self.bn1(self.expand(x)))
        z = act(self.bn2(self.dw(z)))
        if self.se is not None:
            z = self.se(z)
        y = self.bn3(self.proj(z))
        return y + x if self.residual else y


class StaticStem(nnx.Module):
    """The fixed stem conv and the expand-1 first block: (B, R, R, C) images -> (B, R', R', c1)."""

    def __init__(self, cfg: MobileNetV3Config, rngs: nnx.Rngs):
        c0, c1 = cfg.stem_channels, cfg.first_channels
        padding = ((1, 1), (1, 1)) if cfg.symmetric else "SAME"
        self.conv = nnx.Conv(cfg.in_channels, c0, (3, 3), strides=(cfg.stem_stride,) * 2, padding=padding,
                             use_bias=False, rngs=rngs)
        self.bn = batch_norm_module(c0, rngs)
        self.first_dw = DepthwiseConv(c0, 3, 1, rngs, cfg.symmetric)
        self.first_bn1 = batch_norm_module(c0, rngs)
        self.first_proj = nnx.Linear(c0, c1, use_bias=False, rngs=rngs)
        self.first_bn2 = batch_norm_module(c1, rngs)
        self.first_residual = c0 == c1

    def __call__(self, x):
        z = hard_swish(self.bn(self.conv(x)))
        y = jax.nn.relu(self.first_bn1(self.first_dw(z)))
        y = self.first_bn2(self.first_proj(y))
        return y + z if self.first_residual else y


class StaticHead(nnx.Module):
    """Final 1x1 conv, pooling, feature layer and classifier: (B, H, W, C) -> (B, num_classes)."""

    def __init__(self, cfg: MobileNetV3Config, rngs: nnx.Rngs):
        self.conv = nnx.Linear(cfg.stage_channels[-1], cfg.head_channels, use_bias=False, rngs=rngs)
        self.bn = batch_norm_module(cfg.head_channels, rngs)
        self.feature = nnx.Linear(cfg.head_channels, cfg.feature_channels, use_bias=cfg.feature_bias, rngs=rngs)
        self.classifier = nnx.Linear(cfg.feature_channels, cfg.num_classes, rngs=rngs)

    def __call__(self, z):
        z = hard_swish(self.bn(self.conv(z)))
        z = jnp.mean(z, axis=(1, 2))  # (B, head)
        return self.classifier(hard_swish(self.feature(z)))


class StaticMobileNetV3(nnx.Module):
    """A standalone subnet: plain NNX layers with static shapes, batch norm in inference mode.

    ``stem``, then ``blocks`` in order, then ``head``: the latency table times exactly these.
    Input: (B, resolution, resolution, C) images already normalised (see :func:`search_spaces.layers.preprocess`).
    """

    def __init__(self, cfg: MobileNetV3Config, arch: MobileNetV3Arch, rngs: nnx.Rngs):
        self.resolution = arch.resolution
        self.stem = StaticStem(cfg, rngs)
        blocks = []
        for s, stage in enumerate(arch.stages):
            for b, (k, e) in enumerate(stage):
                cin, cout, stride = cfg.block_io(s, b)
                blocks.append(StaticBlock(cin, cout, stride, k, e, cfg.stage_acts[s], cfg.stage_se[s], rngs,
                                          symmetric=cfg.symmetric, se_divisor=cfg.se_divisor))
        self.blocks = nnx.List(blocks)
        self.head = StaticHead(cfg, rngs)

    def __call__(self, x):
        z = self.stem(x)
        for block in self.blocks:
            z = block(z)
        return self.head(z)


def load_static_weights(cfg: MobileNetV3Config, model: StaticMobileNetV3, params, stats, arch: MobileNetV3Arch):
    """Copies the subnet's slices of the supernet weights (and the given BN statistics) into ``model``."""
    c0, c1 = cfg.stem_channels, cfg.first_channels
    stem = model.stem
    stem.conv.kernel.set_value(params["stem"]["w"])
    set_batch_norm(stem.bn, params["stem"]["bn"], stats["stem"]["bn"], c0)
    stem.first_dw.kernel.set_value(params["first"]["dw"])
    set_batch_norm(stem.first_bn1, params["first"]["bn1"], stats["first"]["bn1"], c0)
    stem.first_proj.kernel.set_value(params["first"]["proj"])
    set_batch_norm(stem.first_bn2, params["first"]["bn2"], stats["first"]["bn2"], c1)
    i = 0
    for s, stage in enumerate(arch.stages):
        for b, (k, e) in enumerate(stage):
            cin, cout, _ = cfg.block_io(s, b)
            h = cin * e
            p, st = block_params(params, s, b), block_params(stats, s, b)
            blk = model.blocks[i]
            blk.expand.kernel.set_value(p["expand"][:, :h])
            set_batch_norm(blk.bn1, p["bn1"], st["bn1"], h)
            tf = {name: p[name] for name in p if name.startswith("tf")}
            blk.dw.kernel.set_value(centre_kernel(p["dw"][:, :, :h], tf, k, cfg.kernel_choices))
            set_batch_norm(blk.bn2, p["bn2"], st["bn2"], h)
            if blk.se is not None:
                m = cfg.se_mid(h)
                blk.se.reduce.kernel.set_value(p["se"]["rw"][:h, :m])
                blk.se.reduce.bias.set_value(p["se"]["rb"][:m])
                blk.se.expand.kernel.set_value(p["se"]["ew"][:m, :h])
                blk.se.expand.bias.set_value(p["se"]["eb"][:h])
            blk.proj.kernel.set_value(p["proj"][:h, :])
            set_batch_norm(blk.bn3, p["bn3"], st["bn3"], cout)
            i += 1
    head = model.head
    head.conv.kernel.set_value(params["head"]["w"])
    set_batch_norm(head.bn, params["head"]["bn"], stats["head"]["bn"], cfg.head_channels)
    head.feature.kernel.set_value(params["feature"]["w"])
    if cfg.feature_bias:
        head.feature.bias.set_value(params["feature"]["b"])
    head.classifier.kernel.set_value(params["classifier"]["w"])
    head.classifier.bias.set_value(params["classifier"]["b"])
