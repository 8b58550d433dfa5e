"""Supernet training: sandwich rule with in-place distillation, or OFA's progressive shrinking.

Sandwich rule (BigNAS / AttentiveNAS): every step trains the largest subnet on the labels, then the
smallest and ``num_random`` sampled subnets on the largest one's soft predictions, and applies the
summed gradient once. Progressive shrinking (OFA): the largest network first, then elastic kernel,
then depth, then width, where entering the width phase sorts each block's channels by importance.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_cli import runs
from nas_cli.config import TrainConfig
from nas_cli.data import Dataset, batches
from nas_cli.errors import UserError
from nas_cli.io import append_jsonl, atomic_write_json
from nas_cli.subnet import SubnetEvaluator
from search_spaces.composed import ComposedSupernet
from search_spaces.mobilenetv3 import MobileNetV3Arch, MobileNetV3Space

# Progressive shrinking: fraction of the epochs spent in each phase, in order.
PROGRESSIVE_PHASES = (("largest", 0.25), ("kernel", 0.25), ("depth", 0.25), ("width", 0.25))


class SubnetSampler:
    """Samples subnets for a step: uniform, or complexity-aware (ElasticViT): consecutive samples
    may differ in FLOPs by at most ``max_jump`` of the space's FLOPs range, which keeps gradients of
    consecutive subnets from conflicting."""

    def __init__(self, space: MobileNetV3Space, rng: np.random.Generator, kind: str, max_jump: float):
        self.space, self.rng, self.kind, self.max_jump = space, rng, kind, max_jump
        lo, hi = space.flops(space.smallest()), space.flops(space.largest())
        self.window = max_jump * (hi - lo)
        self.previous: float | None = None
        self.genes_free = None  # progressive shrinking: which gene names may vary

    def _draw(self) -> MobileNetV3Arch:
        genes = self.space.genes
        genome = []
        for gene in genes:
            if self.genes_free is None or any(tag in gene.name for tag in self.genes_free):
                genome.append(self.rng.integers(len(gene.choices)))
            else:
                genome.append(len(gene.choices) - 1)  # held at the largest choice
        return self.space.from_genome(genome)

    def sample(self) -> MobileNetV3Arch:
        arch = self._draw()
        if self.kind == "complexity" and self.previous is not None:
            for _ in range(50):
                if abs(self.space.flops(arch) - self.previous) <= self.window:
                    break
                arch = self._draw()
        self.previous = self.space.flops(arch)
        return arch


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    total = cfg.epochs * steps_per_epoch
    warmup = min(cfg.warmup_epochs * steps_per_epoch, max(total - 1, 0))
    schedule = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total, warmup + 1), cfg.lr * 0.01)
    return optax.chain(optax.clip_by_global_norm(5.0), optax.adamw(schedule, weight_decay=cfg.weight_decay))


def resolve_kernels(kind: str) -> str:
    """auto -> pallas on GPU/TPU, xla on CPU; pallas where it cannot run is an error, never a fallback."""
    backend = jax.default_backend()
    if kind == "auto":
        return "pallas" if backend in ("gpu", "tpu") else "xla"
    if kind == "pallas" and backend not in ("gpu", "tpu"):
        raise UserError(f"--kernels pallas needs a GPU or TPU backend, but JAX runs on {backend!r}; "
                        "use --kernels xla or auto")
    return kind


def make_trainer(cfg: TrainConfig, space: MobileNetV3Space, dataset: Dataset):
    """The supernet training formulation for this backend (see search_spaces/composed.py and
    search_spaces/elastic_kernels.py for the measurements behind each)."""
    if resolve_kernels(cfg.kernels) == "pallas":
        from search_spaces.elastic_kernels import KernelSupernet

        return KernelSupernet(space.config, dataset.mean, dataset.std, cfg.label_smoothing, implementation="pallas")
    return ComposedSupernet(space.config, dataset.mean, dataset.std, cfg.label_smoothing)


def calibration_images(dataset: Dataset, n: int, seed: int) -> np.ndarray:
    """A fixed, seeded subset of the training images for BatchNorm recalibration."""
    order = np.random.default_rng(seed + 7).permutation(len(dataset.train))
    return dataset.train.images[order[: min(n, len(order))]]


def _phase(cfg: TrainConfig, epoch: int) -> str:
    if cfg.recipe != "progressive":
        return "all"
    edges = np.cumsum([f for _, f in PROGRESSIVE_PHASES]) * cfg.epochs
    for (name, _), edge in zip(PROGRESSIVE_PHASES, edges):
        if epoch < edge:
            return name
    return PROGRESSIVE_PHASES[-1][0]


_PHASE_GENES = {"largest": (), "kernel": ("kernel",), "depth": ("kernel", "depth"),
                "width": ("kernel", "depth", "expand", "resolution")}


def train_supernet(cfg: TrainConfig, out: Path, *, progress: Callable[[int, int], None] | None = None,
                   log: Callable[[str], None] = print) -> dict:
    """Trains the supernet described by ``cfg`` into run directory ``out``.

    Writes config.json, checkpoint/ after every epoch, metrics.jsonl (one line per epoch) and
    final.json (test accuracy of the largest and smallest subnets, BN recalibrated).

    Returns:
      The final metrics dict.
    """
    out = Path(out)
    if (out / runs.CONFIG).exists() and (out / runs.CHECKPOINT).exists():
        raise UserError(f"--out {out} already holds a training run; choose another folder or delete it")
    dataset = runs.load_run_dataset(cfg)
    if len(dataset.train) < cfg.batch_size:
        raise UserError(f"--batch-size {cfg.batch_size} exceeds the {len(dataset.train)} training images")
    space = runs.make_space(cfg, dataset)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / runs.CONFIG, cfg.to_json())
    metrics_path = out / runs.METRICS
    metrics_path.unlink(missing_ok=True)

    rng = np.random.default_rng(cfg.seed)
    params = space.init_supernet(jax.random.key(cfg.seed))
    steps_per_epoch = len(dataset.train) // cfg.batch_size
    tx = make_optimizer(cfg, steps_per_epoch)
    opt_state = tx.init(params)
    update = jax.jit(lambda g, s, p, scale: _apply_update(tx, g, s, p, scale), donate_argnums=(1, 2))
    zeros = jax.jit(lambda p: jax.tree.map(jnp.zeros_like, p))
    net = make_trainer(cfg, space, dataset)
    evaluator = SubnetEvaluator(space, dataset.mean, dataset.std)
    sampler = SubnetSampler(space, rng, cfg.sampler, cfg.max_flops_jump)
    calib = calibration_images(dataset, cfg.calib_images, cfg.seed)
    largest, smallest = space.largest(), space.smallest()
    fixed = space.decode(cfg.fixed_arch) if cfg.fixed_arch else None
    if fixed is not None:  # a stand-alone baseline: train and report this architecture only
        largest = smallest = fixed

    log(f"space {space.name}: {len(space.genes)} genes, largest {space.encode(largest)} "
        f"({space.flops(largest) / 1e6:.2f} MMACs), smallest {space.encode(smallest)} "
        f"({space.flops(smallest) / 1e6:.2f} MMACs); {len(dataset.train)} train / {len(dataset.val)} val images")
    record = {}
    phase = None
    for epoch in range(cfg.epochs):
        new_phase = _phase(cfg, epoch)
        if new_phase != phase:
            if new_phase == "width":  # OFA: keep the most important channels when width shrinks
                params = space.sort_channels(params)
                opt_state = tx.init(params)
            phase = new_phase
            sampler.genes_free = None if phase == "all" else _PHASE_GENES[phase]
        t0 = time.time()
        losses = []
        for step, (images, labels) in enumerate(batches(dataset.train, cfg.batch_size, rng=rng)):
            archs = [fixed] if fixed is not None else _step_archs(cfg, phase, largest, smallest, sampler)
            grads = zeros(params)
            soft = None
            step_loss = 0.0
            for i, arch in enumerate(archs):
                loss, logits, grads = net.accumulate_grad(params, grads, arch, images, labels, soft)
                if i == 0 and cfg.distill and len(archs) > 1:
                    soft = jax.nn.softmax(logits)  # the teacher: no gradient flows through it
                step_loss += loss
            params, opt_state = update(grads, opt_state, params, 1.0 / len(archs))
            losses.append(step_loss / len(archs))
            if progress is not None:
                progress(epoch * steps_per_epoch + step + 1, cfg.epochs * steps_per_epoch)
        loss = float(np.mean([float(v) for v in losses]))
        record = {"epoch": epoch + 1, "phase": phase, "loss": round(loss, 5),
                  "val_acc_largest": evaluator.calibrated_accuracy(params, largest, calib, dataset.val),
                  "val_acc_smallest": evaluator.calibrated_accuracy(params, smallest, calib, dataset.val),
                  "seconds": round(time.time() - t0, 2), "compiled_variants": net.num_compiled()}
        append_jsonl(metrics_path, record)
        runs.save_checkpoint(out, {"params": params, "opt_state": opt_state}, epoch + 1)
        log(json.dumps(record))

    final = {
        "test_acc_largest": evaluator.calibrated_accuracy(params, largest, calib, dataset.test),
        "test_acc_smallest": evaluator.calibrated_accuracy(params, smallest, calib, dataset.test),
        "largest": space.encode(largest),
        "smallest": space.encode(smallest),
        "epochs": cfg.epochs,
        **{k: record[k] for k in ("val_acc_largest", "val_acc_smallest")},
    }
    atomic_write_json(out / runs.FINAL, final)
    return final


def _step_archs(cfg: TrainConfig, phase: str, largest, smallest, sampler: SubnetSampler) -> list:
    if phase == "largest":
        return [largest]
    if phase == "all":  # sandwich rule: largest (teacher), smallest, random
        return [largest, smallest] + [sampler.sample() for _ in range(cfg.num_random)]
    # progressive shrinking: the largest teaches subnets sampled within the current phase
    return [largest] + [sampler.sample() for _ in range(max(1, cfg.num_random))]


def _apply_update(tx, grads, opt_state, params, scale):
    grads = jax.tree.map(lambda g: g * scale, grads)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state
