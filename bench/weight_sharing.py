"""Benchmark of weight-sharing supernet training against training each static subnet alone.

Prints one JSON object. For the smallest, middle (every gene at its middle choice) and largest
subnets it times a train step (forward + backward + optimizer update, batch N):

  supernet - the supernet's step for that subnet: ``--formulation composed`` (the one nas trains
             with: the space's composed trainer (cached per-block variants), a full-size gradient pytree and one
             optimizer update over the whole supernet), or ``switch`` (one jitted program: lax.switch
             per block + lax.scan per stage, the subnet chosen by run-time branch indices);
  static   - the static NNX subnet (``space.static_model``, BatchNorm in training mode) trained alone:
             jax.jit of value_and_grad over its nnx.Param state plus the same optax update.

Supernet and static steps are interleaved within each repeat so machine noise hits both, and the
medians are reported with their ratio. It also reports the first compile (``compile_s``), the time
to compile every per-block variant (``warmup_compile_s``), and ``recompiles``: growth of the
compiled-executable count over ``--subnets`` random subnets, trained and evaluated (BatchNorm
calibration + eval through SubnetEvaluator), after warm-up (must be 0). Compilations are counted
with JAX's public monitoring hooks (kernels.tests.compilations), as the tests count them.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from kernels.tests.compilations import count_compilations  # noqa: E402
from nas_cli.evaluation.subnet import SubnetEvaluator  # noqa: E402
from nas_cli.training.supernet import apply_update  # noqa: E402
from search_spaces import get_space  # noqa: E402
from search_spaces.engine import subnet_loss  # noqa: E402
from search_spaces.layers import preprocess  # noqa: E402
from search_spaces.mobilenetv3 import MobileNetV3Arch  # noqa: E402

MEAN, STD = 0.5, 0.25
SIZES = ("smallest", "middle", "largest")


def _ready(tree):
    return jax.block_until_ready(tree)


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def _median(xs) -> float:
    return round(statistics.median(xs), 3)


def make_tx() -> optax.GradientTransformation:
    # nas_cli.training.supernet.make_optimizer's chain, with a constant learning rate (the schedule is irrelevant
    # to the cost of a step).
    return optax.chain(optax.clip_by_global_norm(5.0), optax.adamw(1e-3, weight_decay=1e-4))


def middle(space) -> MobileNetV3Arch:
    return space.from_genome([len(g.choices) // 2 for g in space.genes])


def uniform_archs(space, resolution: int) -> list[MobileNetV3Arch]:
    """One max-depth arch per (kernel, expand): together they touch every (stage, first/rest, k, e)."""
    cfg = space.config
    return [MobileNetV3Arch(resolution, tuple(((k, e),) * cfg.max_depth for _ in range(cfg.num_stages)))
            for k, e in itertools.product(cfg.kernel_choices, cfg.expand_choices)]


# --- supernet formulations -------------------------------------------------------------------
class ComposedTrainer:
    """nas_cli.training.supernet's step for one subnet: zero grads, accumulate_grad, one jitted update."""

    def __init__(self, space, tx, params):
        self.space, self.tx = space, tx
        self.net = space.make_trainer(MEAN, STD, 0.0, "xla")
        # nas_cli.training.supernet also donates the gradients; no output can reuse them (XLA warns), so not here.
        self.update = jax.jit(lambda g, s, p, scale: apply_update(tx, g, s, p, scale), donate_argnums=(1, 2))
        self.zeros = jax.jit(lambda p: jax.tree.map(jnp.zeros_like, p))
        self.params, self.opt_state = params, tx.init(params)

    def sync(self):
        return _ready((self.params, self.opt_state))

    def step(self, arch, images, labels, soft=None):
        grads = self.zeros(self.params)
        loss, logits, grads = self.net.accumulate_grad(self.params, grads, arch, images, labels, soft)
        self.params, self.opt_state = self.update(grads, self.opt_state, self.params, 1.0)
        return loss, logits

    def step_split(self, arch, images, labels):
        """The same step with a sync after each phase: (zeros, grad, update) milliseconds."""
        t0 = time.perf_counter()
        grads = _ready(self.zeros(self.params))
        t1 = time.perf_counter()
        loss, _, grads = self.net.accumulate_grad(self.params, grads, arch, images, labels)
        _ready(grads)
        t2 = time.perf_counter()
        self.params, self.opt_state = _ready(self.update(grads, self.opt_state, self.params, 1.0))
        t3 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3


class SwitchTrainer:
    """The monolithic program: value_and_grad of supernet_apply(mode="train") + update, one jit."""

    def __init__(self, space, tx, params):

        def step(params, opt_state, images, labels, arr, soft, kd):
            def loss_fn(p):
                x = preprocess(images, images.shape[1], MEAN, STD)
                logits = space.supernet_apply(p, None, x, arr, mode="train")
                return subnet_loss(logits, labels, soft, kd), logits

            (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            params, opt_state = apply_update(tx, grads, opt_state, params, 1.0)
            return params, opt_state, loss, logits

        self.space = space
        self.jstep = jax.jit(step, donate_argnums=(0, 1), static_argnums=(6,))
        self.params, self.opt_state = params, tx.init(params)

    def sync(self):
        return _ready((self.params, self.opt_state))

    def step(self, arch, images, labels, soft=None):
        arr = jnp.asarray(self.space.arch_arrays(arch))
        kd = soft is not None
        soft = soft if kd else jnp.zeros((), jnp.float32)
        self.params, self.opt_state, loss, logits = self.jstep(self.params, self.opt_state, images, labels, arr,
                                                               soft, kd)
        return loss, logits


class StaticTrainer:
    """The static NNX subnet trained alone (BatchNorm in training mode)."""

    def __init__(self, space, arch, tx):
        model = space.static_model(arch, nnx.Rngs(0))
        model.train()  # use_running_average=False on every BatchNorm
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)
        resolution = arch.resolution

        def step(params, rest, opt_state, images, labels):
            def loss_fn(p):
                m = nnx.merge(graphdef, p, rest, copy=True)
                logits = m(preprocess(images, resolution, MEAN, STD))
                _, _, new_rest = nnx.split(m, nnx.Param, ...)
                return subnet_loss(logits, labels, None, False), new_rest

            (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            params, opt_state = apply_update(tx, grads, opt_state, params, 1.0)
            return params, rest, opt_state, loss

        self.jstep = jax.jit(step, donate_argnums=(0, 1, 2))
        self.params, self.rest, self.opt_state = params, rest, tx.init(params)
        self.num_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params))

    def step(self, images, labels):
        self.params, self.rest, self.opt_state, loss = self.jstep(self.params, self.rest, self.opt_state,
                                                                  images, labels)
        return loss

    def sync(self):
        return _ready((self.params, self.rest, self.opt_state))


class FusedStaticTrainer:
    """The supernet's own math at one subnet's static shapes, as ONE jitted step (forward, backward
    and the update over the full supernet pytree): composed minus its per-block dispatch."""

    def __init__(self, space, arch, tx, params):
        resolution = arch.resolution

        def forward(p, images):
            return space.subnet_apply(p, preprocess(images, resolution, MEAN, STD), arch)

        def step(params, opt_state, images, labels):
            loss, grads = jax.value_and_grad(
                lambda p: subnet_loss(forward(p, images), labels, None, False))(params)
            params, opt_state = apply_update(tx, grads, opt_state, params, 1.0)
            return params, opt_state, loss

        self.jstep = jax.jit(step, donate_argnums=(0, 1))
        self.params = jax.tree.map(jnp.copy, params)
        self.opt_state = tx.init(self.params)

    def step(self, images, labels):
        self.params, self.opt_state, loss = self.jstep(self.params, self.opt_state, images, labels)
        return loss

    def sync(self):
        return _ready((self.params, self.opt_state))


# --- the benchmark ---------------------------------------------------------------------------
def run(args) -> dict:
    in_channels = args.in_channels or (1 if args.space == "mobilenetv3-tiny" else 3)
    opts = dict(in_channels=in_channels, num_classes=10, resolutions=(args.resolution,))
    if args.space == "mobilenetv3":
        opts["width_mult"] = args.width_mult
    space = get_space(args.space, **opts)
    cfg = space.config
    rng = np.random.default_rng(0)
    n, r = args.batch, args.resolution
    images = jax.device_put(rng.integers(0, 256, (n, r, r, in_channels), dtype=np.uint8))
    labels = jax.device_put(rng.integers(0, 10, (n,)).astype(np.int32))
    tx = make_tx()
    params = space.init_supernet(jax.random.key(0))
    archs = {"smallest": space.smallest(), "middle": middle(space), "largest": space.largest()}
    out = {"command": " ".join([os.path.relpath(sys.argv[0], os.path.dirname(_HERE))] + sys.argv[1:]),
           "space": args.space, "formulation": args.formulation, "batch": n, "resolution": r,
           "width_mult": args.width_mult if args.space == "mobilenetv3" else None,
           "devices": str(jax.devices()), "cpu_count": os.cpu_count(),
           "supernet_params": sum(int(np.prod(a.shape)) for a in jax.tree.leaves(params)),
           "archs": {k: space.encode(a) for k, a in archs.items()},
           "mmacs": {k: round(space.flops(a) / 1e6, 3) for k, a in archs.items()}}
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if args.verbose else (lambda m: None)

    # 1. first compile (+ first run) of the first subnet's train step (the largest).
    trainer = (ComposedTrainer if args.formulation == "composed" else SwitchTrainer)(
        space, tx, jax.tree.map(jnp.copy, params))
    soft = jax.nn.softmax(jax.random.normal(jax.random.key(1), (n, cfg.num_classes)))
    with count_compilations() as train_compiled:
        t0, c0 = time.perf_counter(), time.process_time()
        trainer.step(archs["largest"], images, labels)
        trainer.sync()
        out["compile_s"] = round(time.perf_counter() - t0, 2)
        # CPU seconds of this process: on a shared machine wall time also counts other people's work.
        out["compile_cpu_s"] = round(time.process_time() - c0, 2)
        log(f"compile_s {out['compile_s']}")

        # 2. warm-up: every per-block variant and the distillation head (then the evaluator's programs).
        t0, c1 = time.perf_counter(), time.process_time()
        for arch in uniform_archs(space, r):
            trainer.step(arch, images, labels)
            trainer.sync()
        trainer.step(archs["smallest"], images, labels, soft)
        trainer.sync()
        out["warmup_compile_s"] = round(out["compile_s"] + time.perf_counter() - t0, 2)
        out["warmup_compile_cpu_s"] = round(out["compile_cpu_s"] + time.process_time() - c1, 2)
    out["train_compiled"] = train_compiled.n
    log(f"warmup_compile_s {out['warmup_compile_s']} ({out['train_compiled']} executables)")
    evaluator = SubnetEvaluator(space, MEAN, STD, batch_size=n)
    t0 = time.perf_counter()
    stats = evaluator.calibrate(trainer.params, archs["largest"], images)
    _ready(evaluator.logits(trainer.params, stats, archs["largest"], images))
    out["eval_compile_s"] = round(time.perf_counter() - t0, 2)
    log(f"eval_compile_s {out['eval_compile_s']}")

    # 3. no recompiles over random subnets, trained (with and without soft targets) and evaluated.
    t0 = time.perf_counter()
    with count_compilations() as recompiled:
        for i in range(args.subnets):
            arch = space.sample(rng)
            trainer.step(arch, images, labels, soft if i % 2 else None)
            stats = evaluator.calibrate(trainer.params, arch, images)
            evaluator.logits(trainer.params, stats, arch, images)
    out["recompiles"] = recompiled.n
    out["random_subnets"] = args.subnets
    out["random_subnets_s"] = round(time.perf_counter() - t0, 2)
    log(f"recompiles {out['recompiles']} in {out['random_subnets_s']} s")

    # 4. step times, supernet and static interleaved per repeat.
    statics, fused = {}, {}
    t0 = time.perf_counter()
    for name, arch in archs.items():
        statics[name] = StaticTrainer(space, arch, tx)
        statics[name].step(images, labels)
        statics[name].sync()
    out["static_compile_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    for name, arch in archs.items():
        fused[name] = FusedStaticTrainer(space, arch, tx, params)
        fused[name].step(images, labels)
        fused[name].sync()
    out["fused_compile_s"] = round(time.perf_counter() - t0, 2)
    out["static_params"] = {k: s.num_params for k, s in statics.items()}
    out["static_params_match_space"] = all(s.num_params == space.params(archs[k]) for k, s in statics.items())
    sup = {k: [] for k in archs}
    sta = {k: [] for k in archs}
    fus = {k: [] for k in archs}
    split = {k: {"zeros": [], "grad": [], "update": []} for k in archs}
    timing_recompiles = 0  # of the supernet trainer only (the static ones compiled above)
    for rep in range(args.repeats + 1):  # repeat 0 is a discarded warm-up
        for name, arch in archs.items():
            with count_compilations() as c:
                t0 = time.perf_counter()
                trainer.step(arch, images, labels)
                trainer.sync()
                ts = _ms(t0)
            timing_recompiles += c.n
            t0 = time.perf_counter()
            statics[name].step(images, labels)
            statics[name].sync()
            tt = _ms(t0)
            t0 = time.perf_counter()
            fused[name].step(images, labels)
            fused[name].sync()
            tf = _ms(t0)
            if rep:
                sup[name].append(ts)
                sta[name].append(tt)
                fus[name].append(tf)
            if args.formulation == "composed":
                with count_compilations() as c:
                    z, g, u = trainer.step_split(arch, images, labels)
                timing_recompiles += c.n
                if rep:
                    split[name]["zeros"].append(z)
                    split[name]["grad"].append(g)
                    split[name]["update"].append(u)
        log(f"repeat {rep}: " + ", ".join(f"{k} {sup[k][-1]:.1f}/{sta[k][-1]:.1f}/{fus[k][-1]:.1f}"
                                          for k in archs if sup[k]))
    out["repeats"] = args.repeats
    out["step_ms_supernet"] = {k: _median(v) for k, v in sup.items()}
    out["step_ms_static"] = {k: _median(v) for k, v in sta.items()}
    out["step_ms_fused_static"] = {k: _median(v) for k, v in fus.items()}
    for k in archs:
        out[f"ratio_{k}"] = round(statistics.median(sup[k]) / statistics.median(sta[k]), 3)
    out["ratio_vs_fused"] = {k: round(statistics.median(sup[k]) / statistics.median(fus[k]), 3) for k in archs}
    if args.formulation == "composed":
        out["supernet_phases_ms"] = {k: {p: _median(v) for p, v in d.items()} for k, d in split.items()}
        out["dispatches_per_step"] = {k: 2 * sum(a.depths) + 5 for k, a in archs.items()}
    out["recompiles_after_timing"] = out["recompiles"] + timing_recompiles
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", choices=["mobilenetv3", "mobilenetv3-tiny"], default="mobilenetv3")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--in-channels", type=int, default=None, help="default: 3 (mobilenetv3), 1 (tiny)")
    p.add_argument("--subnets", type=int, default=100)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--formulation", choices=["composed", "switch"], default="composed")
    p.add_argument("--verbose", action="store_true", help="progress on stderr")
    args = p.parse_args(argv)
    print(json.dumps(run(args)))


if __name__ == "__main__":
    main()
