"""A space written once: a plan of blocks, one block function, and the implementation switch it
computes through.

A supernet space describes a subnet as its *plan*, a tuple of :class:`BlockSpec` (the stem, every
active block with its static choices, the head), and computes every block with ONE pure function
``block(spec, ops, x) -> y``. The function never touches parameter arrays itself: it asks ``ops``
for each layer by the name of its weights in the supernet pytree and the layer's active sizes
(``ops.dense("expand", x, cin, hidden)``). What a layer then does is the implementation's:

* :class:`SliceOps`: the active slices of the supernet's weights, at static sizes, in the three
  modes of a supernet forward ("train", "calib" returning the batch statistics, "eval"): the
  composed trainer's pieces and the evaluation forward (:mod:`search_spaces.planned`);
* :class:`KernelOps`: the whole weights with the active sizes chosen at run time, through the
  elastic kernels (kernels/), Pallas or their masking XLA paths: the one-program trainer;
* :class:`RecipeOps`: under ``jax.eval_shape``, the list of :class:`Layer` s a block holds, from
  which its FLOPs and parameter count, the deployable NNX model (:class:`ModuleOps` runs the same
  function over plain NNX layers) and the weights it takes from the supernet all follow.

So the block's math exists once; training, evaluation, the exported model and the cost counts
cannot drift apart. Each implementation reproduces the operations the per-space modules used
before it, in the same order, so the results are bit for bit those of the per-space code.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Hashable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax
from jax.sharding import PartitionSpec as P

from search_spaces.layers import (
    batch_norm,
    batch_norm_module,
    batch_norm_train,
    centre_kernel,
    conv_padding,
    depthwise_conv,
)


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """One block of a subnet's plan, all static.

    Attributes:
      kind: which case of the space's block function computes it ("stem", "block", "head", ...).
      slot: where in the network it sits (a position that one of several variants may fill, or
        that elastic depth may leave empty); equal slots of two plans are the same position.
      args: the block's static arguments (its choices and shapes) as (name, value) pairs.
      path: where its parameters sit in the supernet's pytree ...
      keys: ... restricted to these top-level keys when given ...
      index: ... and row ``index`` of a stacked subtree when given (blocks of equal shape stacked
        along a leading axis; every row computes the same function).
      name: its latency-table key, ``{side}`` standing for its input's side in pixels and
        ``{channels}`` for its input's channels.
      group: the part of the network it belongs to ("stem", "stage1", "head"), for the structure
        features' summaries.
      summary: the names of ``args`` whose mean and max the structure features report per group.
    """

    kind: str
    slot: Hashable
    args: tuple[tuple[str, Any], ...] = ()
    path: tuple = ()
    keys: tuple[str, ...] | None = None
    index: int | None = None
    name: str = ""
    group: str = ""
    summary: tuple[str, ...] = ()

    @functools.cached_property
    def a(self) -> dict:
        """``args`` as a dict."""
        return dict(self.args)

    @property
    def key(self) -> Hashable:
        """Equal keys compute the same function of the same parameters (every row of a stack)."""
        return (self.kind, self.path, self.keys, self.args)


def subtree(tree, spec: BlockSpec):
    """The parameters (or statistics) of ``spec`` in the supernet's pytree, row ``index`` not taken.
    The statistics tree holds only the nodes with a BatchNorm: a block without one gets ``{}``."""
    for k in spec.path:
        if isinstance(tree, dict) and k not in tree:
            return {}
        tree = tree[k]
    return {k: tree[k] for k in spec.keys if k in tree} if spec.keys is not None else tree


def _at(tree, name: str):
    for part in name.split("/"):
        tree = tree[part]
    return tree


def _parent(tree, name: str):
    """The dict that holds the leaf ``name`` (its siblings: a depthwise kernel's transforms)."""
    parts = name.split("/")
    for part in parts[:-1]:
        tree = tree[part]
    return tree


def _matmul(x, w):
    # the einsum of a 1x1 conv over (B, H, W, C) maps, and ``@`` on pooled (B, C) vectors: the
    # operations the spaces always used, so the sums run in the same order as before
    return jnp.einsum("bhwc,cd->bhwd", x, w) if x.ndim == 4 else x @ w


class Ops:
    """The layers a block function computes with; each implementation below is one way to run them.

    ``static`` is True where sizes are Python ints (everything but :class:`KernelOps`)."""

    static = True

    def dense(self, name: str, x, n_in, n_out, bias: str | None = None, view: Callable | None = None):
        """``x``'s last axis (``n_in`` active) times weights ``name`` (in, out), ``n_out`` active,
        plus bias ``bias`` when given: a 1x1 conv or a linear layer. ``view(w, b)``, when given,
        makes the active (n_in, n_out) matrix and (n_out,) bias from weights of another layout
        (attention's per-head projections)."""
        raise NotImplementedError

    def conv(self, name: str, x, stride: int, symmetric: bool = False, n_out=None, *, valid: bool = False,
             bias: str | None = None):
        """A convolution (weights (kh, kw, in, out)) over all of ``x``'s channels, with ``n_out``
        active output channels (all when None): 'SAME' padding, PyTorch's ``symmetric`` one, or
        none (``valid``); plus bias ``bias`` when given."""
        raise NotImplementedError

    def dwconv(self, name: str, x, c, k, stride: int, kernel_choices: Sequence[int], symmetric: bool = False):
        """A depthwise conv over ``c`` active channels with Once-for-All's elastic kernel: the centre
        ``k`` x ``k`` of weights ``name`` (K, K, C) through the transforms ``tf{size}`` beside it."""
        raise NotImplementedError

    def bn(self, name: str, x, c):
        """BatchNorm over ``c`` active channels with the parameters (and statistics) at ``name``."""
        raise NotImplementedError

    def ln(self, name: str, x, c):
        """LayerNorm over ``x``'s last axis (``c`` channels) with the first ``c`` of ``name``'s
        scale and bias."""
        raise NotImplementedError

    def param(self, name: str, view: Callable):
        """A raw parameter: ``view`` of the supernet's array at ``name`` (its active slice)."""
        raise NotImplementedError

    def attention(self, q, k, v):
        """Scaled dot-product attention over (B, N, heads, head_dim) queries, keys and values."""
        return attention(q, k, v)


class SliceOps(Ops):
    """The active slices of the supernet's weights at static sizes (:func:`batch_norm`'s modes).

    In "calib" mode the batch statistics of every BatchNorm are kept in :attr:`stats` (full width,
    at their names); in "eval" mode they are read from ``stats``."""

    def __init__(self, params, stats=None, mode: str = "train"):
        self.p, self.s, self.mode = params, stats, mode
        self.stats: dict = {}

    def weights(self, name, n_in, n_out, bias=None, view=None):
        """The active (n_in, n_out) matrix of ``name`` and its bias (None without one)."""
        w, b = _at(self.p, name), _at(self.p, bias) if bias is not None else None
        if view is not None:
            return view(w, b)
        return w[:n_in, :n_out], (b[:n_out] if b is not None else None)

    def dense(self, name, x, n_in, n_out, bias=None, view=None):
        w, b = self.weights(name, n_in, n_out, bias, view)
        y = _matmul(x, w)
        return y + b if b is not None else y

    def conv(self, name, x, stride, symmetric=False, n_out=None, *, valid=False, bias=None):
        w = _at(self.p, name)[:, :, : x.shape[-1], :n_out]
        if valid:
            pads = [(0, 0), (0, 0)]
        else:
            pads = [conv_padding(x.shape[axis], w.shape[axis - 1], stride, symmetric)[:2] for axis in (1, 2)]
        y = lax.conv_general_dilated(x, w, (stride, stride), pads, dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return y + _at(self.p, bias)[: w.shape[-1]] if bias is not None else y

    def kernel(self, name, c, k, kernel_choices):
        """The (k, k, c) depthwise kernel of ``name`` (Once-for-All's transformed centre)."""
        parent, leaf = _parent(self.p, name), name.split("/")[-1]
        tf = {n: parent[n] for n in parent if n.startswith("tf")}
        return centre_kernel(parent[leaf][:, :, :c], tf, k, kernel_choices)

    def dwconv(self, name, x, c, k, stride, kernel_choices, symmetric=False):
        return depthwise_conv(x, self.kernel(name, c, k, kernel_choices), stride, symmetric)

    def bn(self, name, x, c):
        s = _at(self.s, name) if self.mode == "eval" else None
        y, stats = batch_norm(x, _at(self.p, name), s, c, self.mode)
        if stats is not None:
            self.stats[name] = stats
        return y

    def ln(self, name, x, c):
        p = _at(self.p, name)
        return layer_norm(x, p["scale"][:c], p["bias"][:c])

    def param(self, name, view):
        return view(_at(self.p, name))


def _per_shard(fn, mesh, *args):
    """``fn(*args)`` where the first argument's leading (batch) axis is split over ``mesh`` and the
    rest replicated: on every device, over its own rows (None: no mesh, a plain call)."""
    if mesh is None:
        return fn(*args)
    batch = P(mesh.axis_names[0])
    # without the varying-axes check: a pallas_call's out_shape names none, and jax 0.10 refuses that under it
    return jax.shard_map(fn, mesh=mesh, in_specs=(batch,) + (P(),) * (len(args) - 1), out_specs=batch,
                         check_vma=False)(*args)


class KernelOps(Ops):
    """The whole weights with the active sizes given at run time (int32 scalars), through the
    elastic kernels: Pallas skips the inactive tiles, the XLA paths mask them. Inactive channels
    are exactly zero after every layer and BatchNorm uses the active channels' batch statistics, so
    a block equals its :class:`SliceOps` form in training mode, zero-padded to full width. Under a
    device mesh, each Pallas call runs per device shard (GSPMD cannot split a ``pallas_call``)."""

    static = False

    def __init__(self, params, implementation: str, interpret: bool = False, mesh=None):
        self.p, self.kw = params, dict(implementation=implementation, interpret=interpret)
        self.mesh = mesh if implementation == "pallas" else None  # GSPMD partitions the XLA paths itself

    def dense(self, name, x, n_in, n_out, bias=None, view=None):
        assert view is None, "the elastic kernels take weights in (in, out) layout"
        from kernels import elastic_matmul  # noqa: PLC0415  (the kernels load only for this trainer)

        w = _at(self.p, name)
        b = _at(self.p, bias) if bias is not None else None
        lead = x.shape[:-1]
        kw = self.kw
        y = _per_shard(lambda x, w, b, k, n: elastic_matmul(x, w, b, k=k, n=n, **kw), self.mesh,
                       x.reshape(-1, x.shape[-1]), w, b, n_in, n_out)
        return y.reshape(*lead, w.shape[1])

    def conv(self, name, x, stride, symmetric=False, n_out=None, *, valid=False, bias=None):
        return SliceOps(self.p).conv(name, x, stride, symmetric, n_out, valid=valid, bias=bias)

    def dwconv(self, name, x, c, k, stride, kernel_choices, symmetric=False):
        from kernels import elastic_dwconv  # noqa: PLC0415

        # every kernel size's transformed centre, padded to the largest and picked at run time:
        # weights only, cheap next to the conv
        parent, leaf = _parent(self.p, name), name.split("/")[-1]
        tf = {n: parent[n] for n in parent if n.startswith("tf")}
        kmax = max(kernel_choices)
        stacked = []
        for size in kernel_choices:
            wk = centre_kernel(parent[leaf], tf, size, kernel_choices)
            pad = (kmax - size) // 2
            stacked.append(jnp.pad(wk, ((pad, pad), (pad, pad), (0, 0))))
        w = jnp.stack(stacked)[jnp.argmax(jnp.asarray(kernel_choices, jnp.int32) == k)]
        kw = self.kw
        return _per_shard(lambda x, w, c, ks: elastic_dwconv(x, w, c=c, ks=ks, stride=stride, **kw), self.mesh,
                          x, w, c, k)

    def bn(self, name, x, c):
        p = _at(self.p, name)
        y, _, _ = batch_norm_train(x, p["scale"], p["bias"])  # the supernet's own: one reduction each way
        return jnp.where(jnp.arange(x.shape[-1]) < c, y, 0.0)


# ----------------------------------------------------------------------------------------------
# Layers: what a block holds, derived from its function
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Layer:
    """One weighted layer of a block at static sizes, as :class:`RecipeOps` saw it.

    ``sizes``: the static sizes of its call (``n_in``/``n_out``, ``c``/``k``, the conv's weight
    shape); ``bias``: the bias's name or None; ``macs``: multiply-accumulates at batch 1."""

    op: str
    name: str
    sizes: tuple
    stride: int = 1
    symmetric: bool = False
    bias: str | None = None
    kernel_choices: tuple = ()
    macs: int = 0
    valid: bool = False
    view: Callable | None = dataclasses.field(default=None, compare=False)

    @property
    def attr(self) -> str:
        """Its attribute on the static NNX block (the weight's name, ``/`` as ``_``)."""
        return self.name.replace("/", "_")

    @property
    def params(self) -> int:
        """Trainable parameters of the static layer (BatchNorm: scale and bias)."""
        if self.op == "dense":
            n_in, n_out = self.sizes
            return n_in * n_out + (n_out if self.bias is not None else 0)
        if self.op == "conv":
            return math.prod(self.sizes) + (self.sizes[-1] if self.bias is not None else 0)
        if self.op == "dwconv":
            c, k = self.sizes
            return k * k * c
        if self.op == "param":
            return math.prod(self.sizes)
        if self.op == "attention":
            return 0
        return 2 * self.sizes[0]  # bn, ln: scale and bias

    def module(self, rngs: nnx.Rngs) -> nnx.Module:
        """The deployable NNX layer (fresh weights)."""
        if self.op == "dense":
            n_in, n_out = self.sizes
            # a 1x1 conv as Linear over the channel axis: the same dot_general as the supernet's
            # einsum, so both sum in the same order (BatchNorm on small maps amplifies any difference)
            return nnx.Linear(n_in, n_out, use_bias=self.bias is not None, rngs=rngs)
        if self.op == "conv":
            kh, kw, cin, cout = self.sizes
            padding = "VALID" if self.valid else ((kh // 2,) * 2, (kw // 2,) * 2) if self.symmetric else "SAME"
            return nnx.Conv(cin, cout, (kh, kw), strides=(self.stride,) * 2, padding=padding,
                            use_bias=self.bias is not None, rngs=rngs)
        if self.op == "dwconv":
            c, k = self.sizes
            return DepthwiseConv(c, k, self.stride, rngs, self.symmetric)
        if self.op == "param":
            return nnx.Param(0.02 * jax.random.normal(rngs.params(), self.sizes))
        if self.op == "ln":
            return LayerNorm(self.sizes[0])
        return batch_norm_module(self.sizes[0], rngs)

    def load(self, module: nnx.Module, params, stats) -> None:
        """Copies this layer's slice of the supernet's ``params`` (and BatchNorm ``stats``) into ``module``."""
        if self.op == "dense":
            w, b = SliceOps(params).weights(self.name, *self.sizes, self.bias, self.view)
            module.kernel.set_value(w)
            if b is not None:
                module.bias.set_value(b)
        elif self.op == "conv":
            _, _, cin, cout = self.sizes
            module.kernel.set_value(_at(params, self.name)[:, :, :cin, :cout])
            if self.bias is not None:
                module.bias.set_value(_at(params, self.bias)[:cout])
        elif self.op == "param":
            module.set_value(self.view(_at(params, self.name)))
        elif self.op == "ln":
            c = self.sizes[0]
            p = _at(params, self.name)
            module.scale.set_value(p["scale"][:c])
            module.bias.set_value(p["bias"][:c])
        elif self.op == "dwconv":
            c, k = self.sizes
            module.kernel.set_value(SliceOps(params).kernel(self.name, c, k, self.kernel_choices))
        else:
            c = self.sizes[0]
            p, s = _at(params, self.name), _at(stats, self.name)
            module.scale.set_value(p["scale"][:c])
            module.bias.set_value(p["bias"][:c])
            module.mean.set_value(s["mean"][:c])
            module.var.set_value(s["var"][:c])


def _spatial(shape) -> int:
    return math.prod(shape[1:-1])  # the positions a layer's weights are applied at (batch excluded)


class RecipeOps(SliceOps):
    """:class:`SliceOps` (eval) that also lists the block's :class:`Layer` s; run under
    ``jax.eval_shape`` on a batch of one, where it costs a trace and no compute."""

    def __init__(self, params, stats):
        super().__init__(params, stats, "eval")
        self.layers: list[Layer] = []

    def dense(self, name, x, n_in, n_out, bias=None, view=None):
        y = super().dense(name, x, n_in, n_out, bias, view)
        self.layers.append(Layer("dense", name, (n_in, n_out), bias=bias, macs=_spatial(x.shape) * n_in * n_out,
                                 view=view))
        return y

    def conv(self, name, x, stride, symmetric=False, n_out=None, *, valid=False, bias=None):
        y = super().conv(name, x, stride, symmetric, n_out, valid=valid, bias=bias)
        shape = (*_at(self.p, name).shape[:2], x.shape[-1], y.shape[-1])
        self.layers.append(Layer("conv", name, shape, stride, symmetric, bias=bias, valid=valid,
                                 macs=_spatial(y.shape) * math.prod(shape)))
        return y

    def dwconv(self, name, x, c, k, stride, kernel_choices, symmetric=False):
        y = super().dwconv(name, x, c, k, stride, kernel_choices, symmetric)
        self.layers.append(Layer("dwconv", name, (c, k), stride, symmetric, kernel_choices=tuple(kernel_choices),
                                 macs=_spatial(y.shape) * k * k * c))
        return y

    def bn(self, name, x, c):
        self.layers.append(Layer("bn", name, (c,)))
        return super().bn(name, x, c)

    def ln(self, name, x, c):
        self.layers.append(Layer("ln", name, (c,)))
        return super().ln(name, x, c)

    def param(self, name, view):
        y = super().param(name, view)
        self.layers.append(Layer("param", name, tuple(y.shape), view=view))
        return y

    def attention(self, q, k, v):
        # q k^T and the weights times v: 2 N^2 MACs per head and head channel (batch 1)
        self.layers.append(Layer("attention", "", (), macs=2 * q.shape[1] * k.shape[1] * q.shape[2] * q.shape[3]))
        return super().attention(q, k, v)


class ModuleOps(Ops):
    """The layers of a static NNX block (:class:`StaticBlock`), each called on its input."""

    def __init__(self, block: "StaticBlock"):
        self.block = block

    def _layer(self, name):
        return getattr(self.block, name.replace("/", "_"))

    def dense(self, name, x, n_in, n_out, bias=None, view=None):
        return self._layer(name)(x)

    def conv(self, name, x, stride, symmetric=False, n_out=None, *, valid=False, bias=None):
        return self._layer(name)(x)

    def dwconv(self, name, x, c, k, stride, kernel_choices, symmetric=False):
        return self._layer(name)(x)

    def bn(self, name, x, c):
        return self._layer(name)(x)

    def ln(self, name, x, c):
        return self._layer(name)(x)

    def param(self, name, view):
        return self._layer(name)[...]


def attention(q, k, v):
    """(B, N, h, hd) each -> (B, N, h, hd)."""
    q = q * (q.shape[-1] ** -0.5)
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k)
    return jnp.einsum("bhqk,bkhc->bqhc", jax.nn.softmax(logits, axis=-1), v)


LN_EPS = 1e-6


def layer_norm(x, scale, bias):
    """LayerNorm over the last axis, in nnx.LayerNorm's operation order (use_fast_variance=False)."""
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
    return (x - mean) * (lax.rsqrt(var + LN_EPS) * scale) + bias


class LayerNorm(nnx.Module):
    """LayerNorm with the supernet's operation order (:func:`layer_norm`)."""

    def __init__(self, c: int):
        self.scale = nnx.Param(jnp.ones((c,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((c,), jnp.float32))

    def __call__(self, x):
        return layer_norm(x, self.scale[...], self.bias[...])


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
    """One block of a deployable subnet: its :class:`Layer` s as plain NNX layers (attributes named
    after their weights), computed by the space's block function through :class:`ModuleOps`."""

    def __init__(self, fn: Callable, spec: BlockSpec, layers: Sequence[Layer], rngs: nnx.Rngs):
        self.fn, self.spec = fn, spec
        self.layer_list = tuple(layers)
        for layer in self.weighted:
            setattr(self, layer.attr, layer.module(rngs))

    def load(self, params, stats) -> None:
        """Copies the block's slices of the supernet's weights and ``stats`` into its layers."""
        p, s = subtree(params, self.spec), subtree(stats, self.spec)
        if self.spec.index is not None:
            p, s = jax.tree.map(lambda a: a[self.spec.index], (p, s))
        for layer in self.weighted:
            layer.load(getattr(self, layer.attr), p, s)

    @property
    def weighted(self) -> tuple[Layer, ...]:
        """Its layers that hold weights (attention holds none)."""
        return tuple(layer for layer in self.layer_list if layer.name)

    def __call__(self, x):
        return self.fn(self.spec, ModuleOps(self), x)


class StaticSubnet(nnx.Module):
    """A standalone subnet: plain NNX layers with static shapes, BatchNorm in inference mode.

    ``stem``, then ``blocks`` in order, then ``head``: the latency table times exactly these.
    Input: (B, resolution, resolution, C) images already normalised (see
    :func:`search_spaces.layers.preprocess`)."""

    def __init__(self, resolution: int, stem: StaticBlock, blocks: Sequence[StaticBlock], head: StaticBlock):
        self.resolution = resolution
        self.stem = stem
        self.blocks = nnx.List(list(blocks))
        self.head = head

    def __call__(self, x):
        z = self.stem(x)
        for block in self.blocks:
            z = block(z)
        return self.head(z)
