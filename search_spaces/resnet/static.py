"""The static resnet subnet (Flax NNX) and slicing supernet weights into it.

:class:`StaticResNet` is ``stem``, then ``blocks`` in forward order, then ``head``; the latency
table times exactly these submodules (``ResNetSpace.latency_pieces``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from search_spaces.layers import batch_norm_module, set_batch_norm
from search_spaces.resnet.config import ResNetArch, ResNetConfig


class StaticStem(nnx.Module):
    """The 3x3 stem conv, BatchNorm and ReLU: (B, R, R, C) images -> (B, R', R', c0)."""

    def __init__(self, cin: int, c0: int, stride: int, rngs: nnx.Rngs):
        self.conv = nnx.Conv(cin, c0, (3, 3), strides=(stride, stride), padding="SAME", use_bias=False, rngs=rngs)
        self.bn = batch_norm_module(c0, rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.conv(x)))


class StaticBottleneck(nnx.Module):
    """One bottleneck block (1x1, 3x3, 1x1 convs; a strided 1x1-conv shortcut if ``shortcut``)."""

    def __init__(self, cin: int, cout: int, mid: int, stride: int, shortcut: bool, rngs: nnx.Rngs):
        self.stride = stride
        # 1x1 convs as Linear over the channel axis: the same dot_general as the supernet's einsum
        self.conv1 = nnx.Linear(cin, mid, use_bias=False, rngs=rngs)
        self.bn1 = batch_norm_module(mid, rngs)
        self.conv2 = nnx.Conv(mid, mid, (3, 3), strides=(stride, stride), padding="SAME", use_bias=False, rngs=rngs)
        self.bn2 = batch_norm_module(mid, rngs)
        self.conv3 = nnx.Linear(mid, cout, use_bias=False, rngs=rngs)
        self.bn3 = batch_norm_module(cout, rngs)
        self.down = nnx.Linear(cin, cout, use_bias=False, rngs=rngs) if shortcut else None
        self.bn_down = batch_norm_module(cout, rngs) if shortcut else None

    def __call__(self, x):
        z = jax.nn.relu(self.bn1(self.conv1(x)))
        z = jax.nn.relu(self.bn2(self.conv2(z)))
        y = self.bn3(self.conv3(z))
        sc = x if self.down is None else self.bn_down(self.down(x[:, :: self.stride, :: self.stride, :]))
        return jax.nn.relu(y + sc)


class StaticHead(nnx.Module):
    """Global average pooling and the classifier: (B, H, W, C) -> (B, num_classes)."""

    def __init__(self, channels: int, num_classes: int, rngs: nnx.Rngs):
        self.classifier = nnx.Linear(channels, num_classes, rngs=rngs)

    def __call__(self, z):
        return self.classifier(jnp.mean(z, axis=(1, 2)))


class StaticResNet(nnx.Module):
    """A standalone subnet: plain NNX layers with static shapes, batch norm in inference mode.

    Input: (B, resolution, resolution, C) images already normalised (see ``preprocess``).
    """

    def __init__(self, cfg: ResNetConfig, arch: ResNetArch, rngs: nnx.Rngs):
        self.resolution = arch.resolution
        self.stem = StaticStem(cfg.in_channels, cfg.stem_width(arch.stem_width), cfg.stem_stride, rngs)
        self.blocks = nnx.List([StaticBottleneck(b.cin, b.cout, b.mid, b.stride, b.index == 0, rngs)
                                for b in cfg.block_shapes(arch)])
        self.head = StaticHead(cfg.head_width(arch), cfg.num_classes, rngs)

    def __call__(self, x):
        z = self.stem(x)
        for block in self.blocks:
            z = block(z)
        return self.head(z)


def load_static_weights(cfg: ResNetConfig, model: StaticResNet, params, stats, arch: ResNetArch) -> None:
    """Copies the subnet's slices of the supernet weights (and the given BN statistics) into ``model``."""
    c0 = cfg.stem_width(arch.stem_width)
    model.stem.conv.kernel.set_value(params["stem"]["w"][..., :c0])
    set_batch_norm(model.stem.bn, params["stem"]["bn"], stats["stem"]["bn"], c0)
    for blk, shape in zip(model.blocks, cfg.block_shapes(arch)):
        s, b, cin, cout, mid = shape.stage, shape.index, shape.cin, shape.cout, shape.mid
        if b == 0:
            p, st = params["stages"][s]["first"], stats["stages"][s]["first"]
        else:
            p = jax.tree.map(lambda a, b=b: a[b - 1], params["stages"][s]["rest"])
            st = jax.tree.map(lambda a, b=b: a[b - 1], stats["stages"][s]["rest"])
        blk.conv1.kernel.set_value(p["conv1"][:cin, :mid])
        set_batch_norm(blk.bn1, p["bn1"], st["bn1"], mid)
        blk.conv2.kernel.set_value(p["conv2"][:, :, :mid, :mid])
        set_batch_norm(blk.bn2, p["bn2"], st["bn2"], mid)
        blk.conv3.kernel.set_value(p["conv3"][:mid, :cout])
        set_batch_norm(blk.bn3, p["bn3"], st["bn3"], cout)
        if b == 0:
            blk.down.kernel.set_value(p["down"][:cin, :cout])
            set_batch_norm(blk.bn_down, p["bn_down"], st["bn_down"], cout)
    classifier = model.head.classifier
    c_last = classifier.kernel.shape[0]
    classifier.kernel.set_value(params["classifier"]["w"][:c_last])
    classifier.bias.set_value(params["classifier"]["b"])
