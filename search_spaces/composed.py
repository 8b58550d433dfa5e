"""Supernet training by composing per-block static variants at run time (the CPU formulation).

Measured on the 2-core CPU (see bench/RESULTS.md): one jitted train step holding every block's
``lax.switch`` over its width x kernel branches compiled for 60-70 s even for the tiny space, and
XLA's time goes into HLO passes over the many conditionals, not into code generation. Here each
(stage, block position, kernel, expand) variant is its own small jitted function, forward and
backward (its VJP, recomputing the block's forward), compiled the first time a subnet uses it and
then reused: a bounded cache of at most ``stages x 2 x kernels x expands`` variants. A subnet's step
then runs exactly its own static shapes, so its cost is the static subnet's cost plus dispatch.

Gradients accumulate into one full-size pytree (zero outside the active slices), so the optimizer
update is a single jitted call over the whole supernet whichever subnets were sampled.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import optax

from search_spaces.mobilenetv3 import MobileNetV3Arch, MobileNetV3Config, _block, head_apply, preprocess, stem_apply


def _stem(cfg: MobileNetV3Config, p, x):
    return stem_apply(cfg, p, None, x, "train")[0]


def _head(cfg: MobileNetV3Config, p, z):
    return head_apply(cfg, p, None, z, "train")[0]


def subnet_loss(logits, labels, soft_targets, kd: bool, label_smoothing: float = 0.0):
    """Cross-entropy with the labels, or (in-place distillation) with the teacher's soft targets."""
    if kd:
        return jnp.mean(optax.softmax_cross_entropy(logits, soft_targets))
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        onehot = optax.smooth_labels(onehot, label_smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits, onehot))


_HEAD_KEYS = ("head", "feature", "classifier")
_STEM_KEYS = ("stem", "first")


class ComposedSupernet:
    """Forward/backward of any subnet as a chain of cached per-block jitted variants."""

    def __init__(self, cfg: MobileNetV3Config, mean: float, std: float, label_smoothing: float = 0.0):
        self.cfg = cfg
        self.mean, self.std = mean, std
        self.label_smoothing = label_smoothing
        self._fwd = {}
        self._bwd = {}
        self._stem_fwd = {}
        self._stem_bwd = {}
        self._head = {}

    # --- compiled pieces (each jitted once per static key) ---------------------------------
    def _stem_fns(self, resolution: int):
        if resolution not in self._stem_fwd:
            cfg, mean, std = self.cfg, self.mean, self.std

            def fwd(p, images):
                return _stem(cfg, p, preprocess(images, resolution, mean, std))

            def bwd(p, images, g, acc):
                _, pullback = jax.vjp(lambda q: fwd(q, images), p)
                (dp,) = pullback(g)
                return jax.tree.map(jnp.add, acc, dp)

            self._stem_fwd[resolution] = jax.jit(fwd)
            self._stem_bwd[resolution] = jax.jit(bwd, donate_argnums=(3,))
        return self._stem_fwd[resolution], self._stem_bwd[resolution]

    def _head_fn(self, kd: bool):
        if kd not in self._head:
            smoothing = self.label_smoothing

            def head(p, z, labels, soft, acc):
                def loss_fn(q, z):
                    logits = _head(self.cfg, q, z)
                    return subnet_loss(logits, labels, soft, kd, smoothing), logits

                (loss, logits), (dp, dz) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(p, z)
                return loss, logits, dz, jax.tree.map(jnp.add, acc, dp)

            self._head[kd] = jax.jit(head, donate_argnums=(4,))
        return self._head[kd]

    def _block_fns(self, stage: int, first: bool, k: int, e: int):
        key = (stage, first, k, e)
        if key not in self._fwd:
            cfg = self.cfg
            cin, cout, stride = cfg.block_io(stage, 0 if first else 1)
            block = partial(_block, cfg, cin=cin, cout=cout, stride=stride, k=k, e=e,
                            act=cfg.stage_acts[stage], se=cfg.stage_se[stage], mode="train")

            def pick(p, i):
                return p if first else jax.tree.map(lambda a: a[i], p)

            def fwd(p, i, x):
                return block(pick(p, i), None, x)[0]

            def bwd(p, i, x, g, acc):
                _, pullback = jax.vjp(lambda q, x: block(q, None, x)[0], pick(p, i), x)
                dp, dx = pullback(g)
                if first:
                    return dx, jax.tree.map(jnp.add, acc, dp)
                return dx, jax.tree.map(lambda a, d: a.at[i].add(d), acc, dp)

            self._fwd[key] = jax.jit(fwd)
            self._bwd[key] = jax.jit(bwd, donate_argnums=(4,))
        return self._fwd[key], self._bwd[key]

    def num_compiled(self) -> int:
        """Compiled executables across every cached variant (for no-recompile checks)."""
        fns = [*self._fwd.values(), *self._bwd.values(), *self._stem_fwd.values(),
               *self._stem_bwd.values(), *self._head.values()]
        return sum(f._cache_size() for f in fns)

    # --- one subnet's loss and gradient ------------------------------------------------
    def accumulate_grad(self, params, grads, arch: MobileNetV3Arch, images, labels, soft_targets=None):
        """Adds d(loss)/d(params) of ``arch`` on this batch into ``grads`` (donated) and returns
        (loss, logits, grads). ``soft_targets`` switches the loss to distillation."""
        stem_fwd, stem_bwd = self._stem_fns(arch.resolution)
        stem_p = {k: params[k] for k in _STEM_KEYS}
        z = stem_fwd(stem_p, images)
        tape = []
        for s, blocks in enumerate(arch.stages):
            stage_p = params["stages"][s]
            for b, (k, e) in enumerate(blocks):
                first = b == 0
                fwd, bwd = self._block_fns(s, first, k, e)
                p = stage_p["first"] if first else stage_p["rest"]
                i = jnp.int32(b - 1)
                tape.append((bwd, s, first, p, i, z))
                z = fwd(p, i, z)
        kd = soft_targets is not None
        head_p = {k: params[k] for k in _HEAD_KEYS}
        head_acc = {k: grads[k] for k in _HEAD_KEYS}
        soft = soft_targets if kd else jnp.zeros((), jnp.float32)
        loss, logits, g, head_acc = self._head_fn(kd)(head_p, z, labels, soft, head_acc)
        grads = dict(grads, **head_acc)
        stages = [dict(st) for st in grads["stages"]]
        for bwd, s, first, p, i, x in reversed(tape):
            slot = "first" if first else "rest"
            g, stages[s][slot] = bwd(p, i, x, g, stages[s][slot])
        grads["stages"] = stages
        stem_acc = stem_bwd(stem_p, images, g, {k: grads[k] for k in _STEM_KEYS})
        grads.update(stem_acc)
        return loss, logits, grads
