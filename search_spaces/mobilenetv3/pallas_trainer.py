"""Supernet training through the elastic kernels (kernels/): one program, sizes chosen at run time.

This is the accelerator formulation (``--kernels pallas``): every elastic layer takes its active
sizes (hidden width, kernel size) as int32 scalars, and the Pallas kernels skip the inactive tiles,
so a small subnet costs what it computes with no recompilation. Skipped blocks go through
``lax.cond``. With ``implementation="xla"`` the same program runs the kernels' XLA paths, which
mask instead of skipping (the largest network's price); it exists for comparison and for testing.

Numerically it equals :func:`search_spaces.mobilenetv3.supernet.supernet_apply` in training mode:
inactive channels are exactly zero after every layer, and BatchNorm uses the active channels' batch
statistics. The stem and head are supernet.py's own (fixed shapes); only the elastic block is a
different formulation, through the kernels.

Under a device mesh (:meth:`KernelSupernet.shard_over`) GSPMD partitions everything but the
``pallas_call`` s, which it cannot split: each kernel call then runs under ``jax.shard_map`` on its
device's rows of the batch with the weights replicated, and the BatchNorms, outside the kernels,
keep the statistics of the global batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import PartitionSpec as P

from kernels import elastic_dwconv as _dwconv
from kernels import elastic_matmul as _matmul
from search_spaces.engine import placed_like, subnet_loss
from search_spaces.layers import ACTIVATIONS, batch_norm_train, centre_kernel, hard_sigmoid, preprocess
from search_spaces.mobilenetv3.config import MobileNetV3Arch, MobileNetV3Config
from search_spaces.programs import jit
from search_spaces.mobilenetv3.supernet import block_params, head_apply, stem_apply


def _masked_bn(x, p, active: jax.Array):
    """Training-mode BatchNorm over channels where ``active`` (bool, (Cmax,)); others stay zero."""
    y, _, _ = batch_norm_train(x, p["scale"], p["bias"])  # the supernet's own: one reduction each way
    return jnp.where(active, y, 0.0)


def _per_shard(fn, mesh, *args):
    """``fn(*args)`` where the first argument's leading (batch) axis is split over ``mesh`` and the
    rest replicated: on every device, over its own rows (None: no mesh, a plain call)."""
    if mesh is None:
        return fn(*args)
    batch = P(mesh.axis_names[0])
    # without the varying-axes check: a pallas_call's out_shape names none, and jax 0.10 refuses that under it
    return jax.shard_map(fn, mesh=mesh, in_specs=(batch,) + (P(),) * (len(args) - 1), out_specs=batch,
                         check_vma=False)(*args)


def _elastic_block(cfg: MobileNetV3Config, p, x, k_idx, e_idx, *, cin, cout, stride, act, se, impl, interpret,
                   mesh=None):
    """One block at run-time (kernel index, expand index): the kernels skip (Pallas) or mask (XLA)
    the inactive channels. With a ``mesh``, each kernel call runs per device shard."""
    kw = dict(implementation=impl, interpret=interpret)
    mesh = mesh if impl == "pallas" else None  # GSPMD partitions the XLA paths itself

    def elastic_matmul(x, w, b=None, *, k, n, **kw):
        return _per_shard(lambda x, w, b, k, n: _matmul(x, w, b, k=k, n=n, **kw), mesh, x, w, b, k, n)

    def elastic_dwconv(x, w, *, c, ks, stride, **kw):
        return _per_shard(lambda x, w, c, ks: _dwconv(x, w, c=c, ks=ks, stride=stride, **kw), mesh, x, w, c, ks)

    hmax = p["expand"].shape[1]
    h = jnp.int32(cin) * jnp.asarray(cfg.expand_choices, jnp.int32)[e_idx]
    ks = jnp.asarray(cfg.kernel_choices, jnp.int32)[k_idx]
    on = jnp.arange(hmax) < h
    act_fn = ACTIVATIONS[act]
    b, hh, ww, _ = x.shape
    z = elastic_matmul(x.reshape(-1, cin), p["expand"], k=cin, n=h, **kw).reshape(b, hh, ww, hmax)
    z = act_fn(_masked_bn(z, p["bn1"], on))
    # OFA kernel transforms for every size, then pick: weights only, cheap next to the conv.
    kmax = max(cfg.kernel_choices)
    tf = {name: p[name] for name in p if name.startswith("tf")}
    stacked = []
    for kc in cfg.kernel_choices:
        wk = centre_kernel(p["dw"], tf, kc, cfg.kernel_choices)
        pad = (kmax - kc) // 2
        stacked.append(jnp.pad(wk, ((pad, pad), (pad, pad), (0, 0))))
    w = jnp.stack(stacked)[k_idx]
    z = elastic_dwconv(z, w, c=h, ks=ks, stride=stride, **kw)
    z = act_fn(_masked_bn(z, p["bn2"], on))
    if se:
        m = jnp.maximum(h // 4, 1)
        pooled = jnp.mean(z, axis=(1, 2))  # (B, hmax), zero past h
        r = elastic_matmul(pooled, p["se"]["rw"], p["se"]["rb"], k=h, n=m, **kw)
        r = jax.nn.relu(r)
        g = elastic_matmul(r, p["se"]["ew"], p["se"]["eb"], k=m, n=h, **kw)
        gate = jnp.where(on, hard_sigmoid(g), 0.0)
        z = z * gate[:, None, None, :]
    ho, wo = z.shape[1], z.shape[2]
    y = elastic_matmul(z.reshape(-1, hmax), p["proj"], k=h, n=cout, **kw).reshape(b, ho, wo, cout)
    y = _masked_bn(y, p["bn3"], jnp.ones((cout,), bool))
    if stride == 1 and cin == cout:
        y = y + x
    return y


def kernel_supernet_logits(cfg: MobileNetV3Config, params, x, sizes, *, impl: str, interpret: bool = False,
                           mesh=None):
    """Training-mode logits; ``sizes`` (stages, max_depth, 3) int32 holds (active, kernel idx, expand idx);
    ``mesh``: the batch's device mesh, if any."""
    z = stem_apply(cfg, params, None, x, "train")[0]
    for s in range(cfg.num_stages):
        for b in range(cfg.max_depth):
            cin, cout, stride = cfg.block_io(s, b)
            p = block_params(params, s, b)
            blk = lambda p, z, s=s, cin=cin, cout=cout, stride=stride: _elastic_block(  # noqa: E731
                cfg, p, z, sizes[s, b, 1], sizes[s, b, 2], cin=cin, cout=cout, stride=stride,
                act=cfg.stage_acts[s], se=cfg.stage_se[s], impl=impl, interpret=interpret, mesh=mesh)
            if b == 0:  # the first block of a stage is always active
                z = blk(p, z)
            else:
                z = lax.cond(sizes[s, b, 0] > 0, blk, lambda p, z: z, p, z)
    return head_apply(cfg, params, None, z, "train")[0]


def arch_sizes(cfg: MobileNetV3Config, arch: MobileNetV3Arch) -> np.ndarray:
    """(stages, max_depth, 3) int32: (active, kernel index, expand index) of every block slot."""
    out = np.zeros((cfg.num_stages, cfg.max_depth, 3), np.int32)
    for s, blocks in enumerate(arch.stages):
        for b, (k, e) in enumerate(blocks):
            out[s, b] = (1, cfg.kernel_choices.index(k), cfg.expand_choices.index(e))
    return out


class KernelSupernet:
    """``accumulate_grad`` like :class:`search_spaces.mobilenetv3.trainer.ComposedSupernet`, as one
    jitted program per (resolution, distillation) through the elastic kernels."""

    def __init__(self, cfg: MobileNetV3Config, mean: float, std: float, label_smoothing: float = 0.0, *,
                 implementation: str = "pallas", interpret: bool = False):
        self.cfg, self.mean, self.std = cfg, mean, std
        self.label_smoothing = label_smoothing
        self.impl, self.interpret = implementation, interpret
        self._steps = {}
        self._signatures: set = set()
        self.mesh = None

    def shard_over(self, mesh) -> None:
        """Run the kernels per device shard of a batch split over ``mesh`` (one axis)."""
        self.mesh, self._steps = mesh, {}

    def _step(self, resolution: int, kd: bool):
        key = (resolution, kd)
        if key not in self._steps:
            cfg, mean, std = self.cfg, self.mean, self.std

            def step(params, acc, images, labels, soft, sizes):
                def loss_fn(p):
                    x = preprocess(images, resolution, mean, std)
                    logits = kernel_supernet_logits(cfg, p, x, sizes, impl=self.impl, interpret=self.interpret,
                                                    mesh=self.mesh)
                    return subnet_loss(logits, labels, soft, kd, self.label_smoothing), logits

                (loss, logits), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
                return loss, logits, jax.tree.map(jnp.add, acc, g)

            self._steps[key] = jit(step, donate_argnums=(1,))
        return self._steps[key]

    def num_compiled(self) -> int:
        """Programs compiled so far: one per (resolution, distillation, batch shapes) called. Counted
        here, as the composed engine does; the tests check the real compilations with JAX's hooks."""
        return len(self._signatures)

    def accumulate_grad(self, params, grads, arch: MobileNetV3Arch, images, labels, soft_targets=None):
        """Adds d(loss)/d(params) of ``arch`` on this batch into ``grads`` (donated) and returns
        (loss, logits, grads); ``soft_targets`` switches the loss to distillation."""
        kd = soft_targets is not None
        like = jax.tree.leaves(params)[0]
        soft = soft_targets if kd else placed_like(0.0, like, np.float32)
        sizes = placed_like(arch_sizes(self.cfg, arch), like)
        self._signatures.add((arch.resolution, kd, images.shape, images.dtype, labels.shape, soft.shape))
        return self._step(arch.resolution, kd)(params, grads, images, labels, soft, sizes)
