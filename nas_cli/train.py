"""Supernet training: sandwich rule with in-place distillation, or OFA's progressive shrinking.

Sandwich rule (BigNAS / AttentiveNAS): every step trains the largest subnet on the labels, then the
smallest and ``num_random`` sampled subnets on the largest one's soft predictions, and applies the
summed gradient once. Progressive shrinking (OFA): the largest network first, then elastic kernel,
then depth, then width, where entering the width phase sorts each block's channels by importance.
"""

from __future__ import annotations

import dataclasses
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
from nas_cli.io import append_jsonl, read_jsonl
from predictors.files import atomic_write_json, atomic_write_text
from nas_cli.subnet import SubnetEvaluator
from search_spaces.base import Arch, ArchError, SupernetSpace


class SubnetSampler:
    """Samples subnets for a step: uniform, or complexity-aware (ElasticViT): consecutive samples
    may differ in FLOPs by at most ``max_jump`` of the space's FLOPs range, which keeps gradients of
    consecutive subnets from conflicting."""

    def __init__(self, space: SupernetSpace, rng: np.random.Generator, kind: str, max_jump: float):
        self.space, self.rng, self.kind, self.max_jump = space, rng, kind, max_jump
        lo, hi = space.flops(space.smallest()), space.flops(space.largest())
        self.window = max_jump * (hi - lo)
        self.previous: float | None = None
        self.genes_free = None  # progressive shrinking: which gene names may vary

    def _draw(self) -> Arch:
        genes = self.space.genes
        genome = []
        for gene in genes:
            if self.genes_free is None or any(tag in gene.name for tag in self.genes_free):
                genome.append(self.rng.integers(len(gene.choices)))
            else:
                genome.append(len(gene.choices) - 1)  # held at the largest choice
        return self.space.from_genome(genome)

    def sample(self) -> Arch:
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


def resolve_kernels(kind: str, space: SupernetSpace | None = None) -> str:
    """auto -> pallas on GPU/TPU (where the space has a Pallas formulation), xla otherwise; pallas
    where it cannot run is an error, never a fallback."""
    backend = jax.default_backend()
    accelerated = backend in ("gpu", "tpu")
    if kind == "auto":
        return "pallas" if accelerated and (space is None or space.has_pallas()) else "xla"
    if kind == "pallas" and not accelerated:
        raise UserError(f"--kernels pallas needs a GPU or TPU backend, but JAX runs on {backend!r}; "
                        "use --kernels xla or auto")
    if kind == "pallas" and space is not None and not space.has_pallas():
        raise UserError(f"--kernels pallas: space {space.name!r} has no Pallas formulation; use --kernels xla or auto")
    return kind


def make_trainer(cfg: TrainConfig, space: SupernetSpace, dataset: Dataset):
    """The space's supernet training formulation for this backend (for mobilenetv3 see
    search_spaces/composed.py and search_spaces/elastic_kernels.py for the measurements behind each)."""
    kernels = resolve_kernels(cfg.kernels, space)
    try:
        return space.make_trainer(dataset.mean, dataset.std, cfg.label_smoothing, kernels)
    except ArchError as e:
        raise UserError(str(e)) from None


def calibration_images(dataset: Dataset, n: int, seed: int) -> np.ndarray:
    """A fixed, seeded subset of the training images for BatchNorm recalibration."""
    order = np.random.default_rng(seed + 7).permutation(len(dataset.train))
    return dataset.train.images[order[: min(n, len(order))]]


def progressive_phases(space: SupernetSpace) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """OFA progressive shrinking: the largest network alone, then the space's elastic phases, each
    an equal share of the epochs; a phase's gene-name tags say which genes may vary in it."""
    return (("largest", ()),) + tuple(space.progressive_phases)


def _phase(cfg: TrainConfig, epoch: int, space: SupernetSpace) -> str:
    if cfg.recipe != "progressive":
        return "all"
    phases = progressive_phases(space)
    return phases[min(epoch * len(phases) // cfg.epochs, len(phases) - 1)][0]


def _resume_point(cfg: TrainConfig, out: Path, resume: bool) -> bool:
    """Whether ``out`` holds an unfinished run of this very config to continue; refuses to touch
    anything else (a finished run, another config, or an existing run without ``resume``)."""
    if not (out / runs.CONFIG).exists():
        return False
    if not resume:
        if (out / runs.CHECKPOINT).exists():
            raise UserError(f"--out {out} already holds a training run; continue it with --resume, "
                            "or choose another folder")
        return False
    saved, now = runs.read_config(out).validate(), cfg.validate()
    differ = [f"{k}: {v!r} in the run, {getattr(now, k)!r} now"
              for k, v in dataclasses.asdict(saved).items() if v != getattr(now, k)]
    if differ:
        raise UserError(f"--resume: {out} was trained with other settings ({'; '.join(differ)}); "
                        "pass the same settings, or choose another --out")
    if (out / runs.FINAL).exists():
        raise UserError(f"--resume: {out} is already finished ({runs.FINAL} exists); nothing to continue")
    return (out / runs.CHECKPOINT).exists()


def train_supernet(cfg: TrainConfig, out: Path, *, progress: Callable[[int, int], None] | None = None,
                   log: Callable[[str], None] = print, resume: bool = False) -> dict:
    """Trains the supernet described by ``cfg`` into run directory ``out``.

    Writes config.json, checkpoint/ after every epoch, metrics.jsonl (one line per epoch) and
    final.json (test accuracy of the largest and smallest subnets, BN recalibrated). With
    ``resume``, an interrupted run of the same config continues from its last finished epoch and
    ends exactly where an uninterrupted run would (data order and sampling are seeded per epoch).

    Returns:
      The final metrics dict.
    """
    out = Path(out)
    resuming = _resume_point(cfg, out, resume)
    dataset = runs.load_run_dataset(cfg)
    if len(dataset.train) < cfg.batch_size:
        raise UserError(f"--batch-size {cfg.batch_size} exceeds the {len(dataset.train)} training images")
    space = runs.make_space(cfg, dataset)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / runs.METRICS

    params = space.init_supernet(jax.random.key(cfg.seed))
    steps_per_epoch = len(dataset.train) // cfg.batch_size
    tx = make_optimizer(cfg, steps_per_epoch)
    opt_state = tx.init(params)
    start, done = 0, []
    if resuming:
        state, start = runs.restore_checkpoint(out, {"params": params, "opt_state": opt_state})
        params, opt_state = jax.tree.map(jnp.asarray, (state["params"], state["opt_state"]))
        done = [r for r in read_jsonl(metrics_path) if r.get("epoch", start + 1) <= start]  # drop a half-written epoch
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in done))
        log(f"resuming {out} after epoch {start} of {cfg.epochs}")
    else:
        atomic_write_json(out / runs.CONFIG, cfg.to_json())
        metrics_path.unlink(missing_ok=True)
    update = jax.jit(lambda g, s, p, scale: _apply_update(tx, g, s, p, scale), donate_argnums=(1, 2))
    zeros = jax.jit(lambda p: jax.tree.map(jnp.zeros_like, p))
    net = make_trainer(cfg, space, dataset)
    evaluator = SubnetEvaluator(space, dataset.mean, dataset.std)
    sampler = SubnetSampler(space, np.random.default_rng(cfg.seed), cfg.sampler, cfg.max_flops_jump)
    calib = calibration_images(dataset, cfg.calib_images, cfg.seed)
    largest, smallest = space.largest(), space.smallest()
    fixed = space.decode(cfg.fixed_arch) if cfg.fixed_arch else None
    if fixed is not None:  # a stand-alone baseline: train and report this architecture only
        largest = smallest = fixed

    log(f"space {space.name}: {len(space.genes)} genes, largest {space.encode(largest)} "
        f"({space.flops(largest) / 1e6:.2f} MMACs), smallest {space.encode(smallest)} "
        f"({space.flops(smallest) / 1e6:.2f} MMACs); {len(dataset.train)} train / {len(dataset.val)} val images")
    record = done[-1] if done else {}
    phase_genes = dict(progressive_phases(space))
    phase = _phase(cfg, start - 1, space) if start else None
    if phase is not None:
        sampler.genes_free = None if phase == "all" else phase_genes[phase]
    if start and progress is not None:
        progress(start * steps_per_epoch, cfg.epochs * steps_per_epoch)
    for epoch in range(start, cfg.epochs):
        # Each epoch's data order and subnet samples come from (seed, epoch) alone, so a resumed
        # run repeats exactly what an uninterrupted one does.
        rng = np.random.default_rng([cfg.seed, epoch])
        sampler.rng, sampler.previous = rng, None
        new_phase = _phase(cfg, epoch, space)
        if new_phase != phase:
            if new_phase == "width":  # OFA: keep the most important channels when width shrinks
                params = space.sort_channels(params)
                opt_state = tx.init(params)
            phase = new_phase
            sampler.genes_free = None if phase == "all" else phase_genes[phase]
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
        val_largest, val_smallest = _both(evaluator, params, largest, smallest, calib, dataset.val)
        record = {"epoch": epoch + 1, "phase": phase, "loss": round(loss, 5),
                  "val_acc_largest": val_largest, "val_acc_smallest": val_smallest,
                  "seconds": round(time.time() - t0, 2), "compiled_variants": net.num_compiled()}
        append_jsonl(metrics_path, record)
        runs.save_checkpoint(out, {"params": params, "opt_state": opt_state}, epoch + 1)
        log(json.dumps(record))

    test_largest, test_smallest = _both(evaluator, params, largest, smallest, calib, dataset.test)
    final = {
        "test_acc_largest": test_largest,
        "test_acc_smallest": test_smallest,
        "largest": space.encode(largest),
        "smallest": space.encode(smallest),
        "epochs": cfg.epochs,
        **{k: record[k] for k in ("val_acc_largest", "val_acc_smallest") if k in record},
    }
    atomic_write_json(out / runs.FINAL, final)
    return final


def _both(evaluator: SubnetEvaluator, params, largest, smallest, calib, split) -> tuple[float, float]:
    """Calibrated accuracy of the largest and smallest subnets (one evaluation for a fixed arch)."""
    a = evaluator.calibrated_accuracy(params, largest, calib, split)
    return a, (a if smallest == largest else evaluator.calibrated_accuracy(params, smallest, calib, split))


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
