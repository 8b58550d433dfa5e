"""Supernet training: sandwich rule with in-place distillation, or OFA's progressive shrinking.

Sandwich rule (BigNAS / AttentiveNAS): every step trains the largest subnet on the labels, then the
smallest and ``num_random`` sampled subnets on the largest one's soft predictions, and applies the
summed gradient once. Progressive shrinking (OFA): the largest network first, then elastic kernel,
then depth, then width, where entering the width phase sorts each block's channels by importance.

The named steps: :func:`sample_subnet` (a pure function of the sampler state and a generator),
:func:`train_step` (one optimiser step over a :class:`TrainState`), and :func:`train_supernet`,
the epoch loop that checkpoints, logs and resumes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from nas_cli import distributed as dist
from nas_cli import runs
from nas_cli.config import TrainConfig
from nas_cli.data import DATA_INFO, Dataset, calibration_images, dataset_info
from nas_cli.errors import UserError
from predictors.files import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from nas_cli.data.input_pipeline import StreamOptions, train_stream
from nas_cli.evaluation.subnet import SubnetEvaluator
from nas_cli.runs.tensorboard import TB_DIR, EventWriter
from search_spaces.base import Arch, SupernetSpace, Trainer
from search_spaces.engine import placed_like
from search_spaces.programs import jit

# --- the subnet sampler: (state, rng) -> (arch, state) ------------------------------------------


class SamplerState(NamedTuple):
    """What the subnet sampler carries from one sample to the next.

    Uniform sampling draws every free gene uniformly; complexity-aware sampling (ElasticViT)
    redraws (up to 50 times) until the FLOPs differ from the previous sample's by at most
    ``window``, which keeps gradients of consecutive subnets from conflicting.
    """

    kind: str  # "uniform" | "complexity"
    window: float  # the largest FLOPs jump between consecutive samples (complexity)
    genes_free: tuple[str, ...] | None = None  # progressive shrinking: tags of the genes that may vary
    previous: float | None = None  # FLOPs of the last sample


def init_sampler(space: SupernetSpace, kind: str, max_jump: float) -> SamplerState:
    """A sampler state; ``max_jump`` is a fraction of the space's FLOPs range (smallest to largest)."""
    lo, hi = space.flops(space.smallest()), space.flops(space.largest())
    return SamplerState(kind, max_jump * (hi - lo))


def _draw(space: SupernetSpace, genes_free: tuple[str, ...] | None, rng: np.random.Generator) -> Arch:
    genome = []
    for gene in space.genes:
        if genes_free is None or any(tag in gene.name for tag in genes_free):
            genome.append(rng.integers(len(gene.choices)))
        else:
            genome.append(len(gene.choices) - 1)  # held at the largest choice
    return space.from_genome(genome)


def sample_subnet(space: SupernetSpace, state: SamplerState, rng: np.random.Generator) -> tuple[Arch, SamplerState]:
    """One subnet drawn with ``rng`` (which it advances) and the sampler state after it."""
    arch = _draw(space, state.genes_free, rng)
    if state.kind == "complexity" and state.previous is not None:
        for _ in range(50):
            if abs(space.flops(arch) - state.previous) <= state.window:
                break
            arch = _draw(space, state.genes_free, rng)
    return arch, state._replace(previous=space.flops(arch))


def sample_subnets(space: SupernetSpace, state: SamplerState, rng: np.random.Generator,
                   n: int) -> tuple[list[Arch], SamplerState]:
    """``n`` consecutive samples of :func:`sample_subnet`."""
    archs = []
    for _ in range(n):
        arch, state = sample_subnet(space, state, rng)
        archs.append(arch)
    return archs, state


# --- one optimiser step -----------------------------------------------------------------------


def lr_schedule(cfg: TrainConfig, steps_per_epoch: int) -> optax.Schedule:
    """Linear warm-up and cosine decay to 1% of ``cfg.lr``: the learning rate of each step."""
    total = cfg.epochs * steps_per_epoch
    warmup = min(cfg.warmup_epochs * steps_per_epoch, max(total - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, max(total, warmup + 1), cfg.lr * 0.01)


def make_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """Gradient clipping, then AdamW on :func:`lr_schedule`."""
    schedule = lr_schedule(cfg, steps_per_epoch)
    return optax.chain(optax.clip_by_global_norm(5.0), optax.adamw(schedule, weight_decay=cfg.weight_decay))


def apply_update(tx: optax.GradientTransformation, grads, opt_state, params, scale):
    """``tx``'s update for ``grads * scale``, applied to ``params``: (params, opt_state)."""
    grads = jax.tree.map(lambda g: g * scale, grads)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state


# tx is static (a tuple of functions): one program per optimiser, parameters and state donated
_update = jit(apply_update, static_argnums=(0,), donate_argnums=(2, 3))


@functools.lru_cache(maxsize=16)
def _zeros(treedef, shardings: tuple | None) -> Callable:
    # zeros depend on no input, so without out_shardings jit leaves them uncommitted on the first
    # device: under a mesh every piece's first backward then took JAX's slow dispatch path and
    # copied its gradient slot to all devices (bench/RESULTS.md, issue 16)
    if shardings is None:
        return jit(lambda p: jax.tree.map(jnp.zeros_like, p))
    return jit(lambda p: jax.tree.map(jnp.zeros_like, p), out_shardings=jax.tree.unflatten(treedef, shardings))


def zero_grads(params):
    """A zero gradient pytree shaped and placed like ``params`` (committed to the same devices, or
    placed by default as they are)."""
    leaves, treedef = jax.tree.flatten(params)
    if not all(getattr(a, "committed", False) for a in leaves):  # placed by default: so are they
        return _zeros(treedef, None)(params)
    return _zeros(treedef, tuple(a.sharding for a in leaves))(params)


class TrainState(NamedTuple):
    """The supernet weights and optimiser state (what a checkpoint saves), with the optimiser."""

    params: Any
    opt_state: Any
    tx: optax.GradientTransformation

    @classmethod
    def create(cls, params, tx: optax.GradientTransformation) -> "TrainState":
        """``params`` with a fresh optimiser state."""
        return cls(params, tx.init(params), tx)

    def apply_gradients(self, grads, scale: float) -> "TrainState":
        """One optimiser update with ``grads * scale``; the old params and opt_state are donated."""
        scale = placed_like(scale, jax.tree.leaves(self.params)[0], np.float32)
        params, opt_state = _update(self.tx, grads, self.opt_state, self.params, scale)
        return self._replace(params=params, opt_state=opt_state)

    def update_ahead(self, num_archs: int) -> list:
        """The optimiser update of a step over ``num_archs`` subnets as a job to compile ahead
        (search_spaces.programs.jit.ahead), or none once it is compiled."""
        scale = placed_like(1.0 / num_archs, jax.tree.leaves(self.params)[0], np.float32)
        job = _update.ahead(self.tx, self.params, self.opt_state, self.params, scale)
        return [job] if job is not None else []

    def checkpoint_items(self) -> dict[str, Any]:
        """The pytrees a checkpoint saves and restores."""
        return {"params": self.params, "opt_state": self.opt_state}


def train_step(state: TrainState, trainer: Trainer, archs: Sequence[Arch], batch, *,
               distill: bool = True) -> tuple[TrainState, dict[str, Any]]:
    """One step over one batch: every arch's gradient summed, then one update scaled by 1/len(archs).

    With ``distill`` and more than one arch, the first arch's softmax (no gradient flows through
    it) is the soft target of the others: in-place distillation.

    Args:
      state: the weights and optimiser state before the step (donated).
      trainer: the space's training formulation.
      archs: the subnets of this step, the teacher first.
      batch: (images, labels).

    Returns:
      The state after the step and ``{"loss": mean loss over archs}`` (a device scalar).
    """
    images, labels = batch
    # a formulation that can (the composed engine) compiles the step's programs first
    trainer.prepare(state.params, archs, images, labels, distill, also=lambda: state.update_ahead(len(archs)))
    grads = zero_grads(state.params)
    soft = None
    losses = []
    for i, arch in enumerate(archs):
        loss, logits, grads = trainer.accumulate_grad(state.params, grads, arch, images, labels, soft)
        if i == 0 and distill and len(archs) > 1:
            soft = _softmax(logits)  # the teacher: no gradient flows through it
        losses.append(loss)
    state = state.apply_gradients(grads, 1.0 / len(archs))
    return state, {"loss": _mean(losses)}


# one program each, not a handful of eager ops (each a launch on every device under a mesh)
_softmax = jit(jax.nn.softmax)
_mean = jit(lambda xs: sum(xs) / len(xs))


# --- the recipe: phases and the subnets of a step ---------------------------------------------


def progressive_phases(space: SupernetSpace) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """OFA progressive shrinking: the largest network alone, then the space's elastic phases, each
    an equal share of the epochs; a phase's gene-name tags say which genes may vary in it."""
    return (("largest", ()),) + tuple(space.progressive_phases)


def training_phase(cfg: TrainConfig, epoch: int, space: SupernetSpace) -> str:
    """The phase of (0-based) ``epoch``: "all" for the sandwich rule, else a progressive phase."""
    if cfg.recipe != "progressive":
        return "all"
    phases = progressive_phases(space)
    return phases[min(epoch * len(phases) // cfg.epochs, len(phases) - 1)][0]


def step_archs(cfg: TrainConfig, phase: str, largest: Arch, smallest: Arch, space: SupernetSpace,
               sampler: SamplerState, rng: np.random.Generator) -> tuple[list[Arch], SamplerState]:
    """The subnets of one step in ``phase``, the teacher (largest) first, and the sampler state after."""
    if phase == "largest":
        return [largest], sampler
    if phase == "all":  # sandwich rule: largest (teacher), smallest, random
        sampled, sampler = sample_subnets(space, sampler, rng, cfg.num_random)
        return [largest, smallest] + sampled, sampler
    # progressive shrinking: the largest teaches subnets sampled within the current phase
    sampled, sampler = sample_subnets(space, sampler, rng, max(1, cfg.num_random))
    return [largest] + sampled, sampler


# --- pieces of the run ------------------------------------------------------------------------


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


def make_trainer(cfg: TrainConfig, space: SupernetSpace, dataset: Dataset, mesh=None) -> Trainer:
    """The space's supernet training formulation for this backend (each space's package documents
    the measurements behind its formulations). Under a mesh of several devices, a trainer whose
    Pallas kernels GSPMD cannot partition (``shard_over``) runs them per device shard."""
    net = space.make_trainer(dataset.mean, dataset.std, cfg.label_smoothing, resolve_kernels(cfg.kernels, space))
    if mesh is not None and mesh.devices.size > 1:
        net.shard_over(mesh)
    return net


def resume_point(cfg: TrainConfig, out: Path, resume: bool) -> bool:
    """Whether ``out`` holds an unfinished run of this very config to continue; refuses to touch
    anything else (a finished run, another config, or an existing run without ``resume``)."""
    if not (out / runs.CONFIG).exists():
        if resume:
            raise UserError(f"--resume: {out} holds no training run to continue (no {runs.CONFIG}); "
                            "drop --resume to start one there")
        return False
    if not resume:
        if (out / runs.CHECKPOINT).exists():
            raise UserError(f"--out {out} already holds a training run; continue it with --resume, "
                            "or choose another folder")
        return False
    if (out / "finetune.json").exists():  # nas_cli.training.finetune.FINETUNE_JSON: its own training, resumed by it
        raise UserError(f"--resume: {out} is a fine-tuning run; continue it with `nas finetune RUN ... --out {out} "
                        "--resume`")
    saved = runs.read_config(out)
    differ = [f"{k}: {v!r} in the run, {getattr(cfg, k)!r} now"
              for k, v in dataclasses.asdict(saved).items() if v != getattr(cfg, k)]
    if differ:
        raise UserError(f"--resume: {out} was trained with other settings ({'; '.join(differ)}); "
                        "pass the same settings, or choose another --out")
    if (out / runs.FINAL).exists():
        raise UserError(f"--resume: {out} is already finished ({runs.FINAL} exists); nothing to continue")
    # killed during the first save, a run holds only an unfinished step: it starts from the beginning
    return runs.discard_unfinished(out)


#: steps between checks that the loss is finite (each check waits for the device once)
FINITE_EVERY = 32


def check_finite(losses: Sequence, first_step: int, epoch: int, lr: float) -> list[float]:
    """The losses as floats; a UserError naming the first non-finite one's (1-based) step. Raised
    before the epoch's checkpoint, so the last one saved keeps finite weights."""
    values = [float(v) for v in losses]
    bad = next((i for i, v in enumerate(values) if not np.isfinite(v)), None)
    if bad is not None:
        raise UserError(f"training diverged: the loss is {values[bad]} at step {first_step + bad + 1} "
                        f"(epoch {epoch + 1}); nothing of this epoch was saved. Try a smaller --lr (now {lr:g}) "
                        "or --batch-size")
    return values


def _both(evaluator: SubnetEvaluator, params, largest, smallest, calib, split) -> tuple[float, float]:
    """Calibrated accuracy of the largest and smallest subnets (one evaluation for a fixed arch)."""
    a = evaluator.calibrated_accuracy(params, largest, calib, split)
    return a, (a if smallest == largest else evaluator.calibrated_accuracy(params, smallest, calib, split))


# --- the run ----------------------------------------------------------------------------------


def run_settings(cfg: TrainConfig, out: Path, resume: bool, parallel: dist.Parallel) -> dict[str, Any]:
    """What every process of one run must be started with alike (compared across processes)."""
    return {**cfg.to_json(), "out": str(Path(out).absolute()), "resume": resume, "devices": parallel.devices}


def train_supernet(cfg: TrainConfig, out: Path, *, progress: Callable[[int, int], None] | None = None,
                   log: Callable[[str], None] = print, resume: bool = False,
                   data_workers: int | None = None, parallel: dist.Parallel | None = None) -> dict:
    """:func:`train_locked` holding ``out``'s lock (one writer per run; a second is refused, naming
    the first; process 0 holds it for all processes of a data-parallel run)."""

    from nas_cli.runs import locks

    parallel = parallel or dist.Parallel()
    out = Path(out)
    # before anything asks jax.process_index(); processes started alike meet before JAX starts
    dist.initialize(parallel, run_settings(cfg, out, resume, parallel))
    out.mkdir(parents=True, exist_ok=True)
    lock = locks.locked(out, what="training run") if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
        return train_locked(cfg, out, progress=progress, log=log, resume=resume, data_workers=data_workers,
                            parallel=parallel)


def train_locked(cfg: TrainConfig, out: Path, *, progress: Callable[[int, int], None] | None = None,
                 log: Callable[[str], None] = print, resume: bool = False,
                 data_workers: int | None = None, parallel: dist.Parallel | None = None) -> dict:
    """Trains the supernet described by ``cfg`` into run directory ``out``.

    Writes config.json, checkpoint/ after every epoch, metrics.jsonl (one line per epoch) and
    final.json (test accuracy of the largest and smallest subnets, BN recalibrated), data.json (the
    classes, split sizes and per-channel mean/std) and TensorBoard events in tb/. With
    ``resume``, an interrupted run of the same config continues from its last finished epoch and
    ends exactly where an uninterrupted run would (data order, augmentation and sampling are seeded
    per epoch). ``data_workers``: the input pipeline's decoding processes (None: its default).

    Data parallel (``parallel``, default: every local device of one process): each step's global
    batch of ``cfg.batch_size`` is split over the devices of all processes (each process feeds its
    own slice), the weights and optimiser state are replicated, and only process 0 writes the run's
    files except the checkpoint, which every process writes its part of (orbax).

    Returns:
      The final metrics dict.

    Raises:
      UserError: kernels this backend cannot run, an ``out`` that holds another or a finished run,
        a batch larger than the training set, missing data, a batch that does not split over the
        devices, processes started with different settings or unable to reach each other.
    """
    parallel = parallel or dist.Parallel()
    dist.initialize(parallel, run_settings(cfg, out, resume, parallel))
    resolve_kernels(cfg.kernels)  # a backend that cannot run the choice fails before any work
    mesh = dist.make_mesh(parallel.devices)
    dist.check_batch(cfg.batch_size, mesh)
    out = Path(out)
    dist.check_same_settings(run_settings(cfg, out, resume, parallel))
    main = dist.is_main()
    resuming = resume_point(cfg, out, resume)
    dist.barrier("nas-resume-point")  # every process has looked at `out` before process 0 writes there
    dataset = runs.load_run_dataset(cfg)
    if len(dataset.train) < cfg.batch_size:
        raise UserError(f"--batch-size {cfg.batch_size} exceeds the {len(dataset.train)} training images")
    space = runs.make_space(cfg, dataset)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path = out / runs.METRICS

    steps_per_epoch = len(dataset.train) // cfg.batch_size
    tx = make_optimizer(cfg, steps_per_epoch)

    def fresh(params) -> TrainState:
        # the optimiser's step count starts on one device; placed like the weights (where the update
        # leaves it), the second step reuses the first step's update program instead of compiling
        # it again (measured: 14-28 s on the loaded 2-core CPU for resnet-tiny)
        state = TrainState.create(dist.replicate(params, mesh), tx)
        return state._replace(opt_state=dist.replicate(state.opt_state, mesh))

    state = fresh(space.init_supernet(jax.random.key(cfg.seed)))
    start, done = 0, []
    if resuming:
        state, start, done = restore_state(out, state, tx, mesh)
        if main:
            atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in done))
            log(f"resuming {out} after epoch {start} of {cfg.epochs}")
    net = make_trainer(cfg, space, dataset, mesh)
    # every process measures on its own devices (the same numbers everywhere, no communication)
    eval_mesh = dist.local_mesh(mesh)
    evaluator = SubnetEvaluator(space, dataset.mean, dataset.std, mesh=eval_mesh)
    sampler = init_sampler(space, cfg.sampler, cfg.max_flops_jump)
    calib = calibration_images(dataset, cfg.calib_images, cfg.seed)
    largest, smallest = space.largest(), space.smallest()
    fixed = space.decode(cfg.fixed_arch) if cfg.fixed_arch else None
    if fixed is not None:  # a stand-alone baseline: train and report this architecture only
        largest = smallest = fixed
    if not resuming and main:  # written once every setting is known to work: a refused run leaves nothing
        atomic_write_json(out / runs.CONFIG, cfg.to_json())
        runs.start_checksums(out)
        metrics_path.unlink(missing_ok=True)
    if main:
        atomic_write_json(out / DATA_INFO, dataset_info(dataset))
    log = log if main else (lambda message: None)
    log(f"{mesh.devices.size} device(s) in {dist.process_count()} process(es), "
        f"{cfg.batch_size // mesh.devices.size} images per device per step")

    log(f"space {space.name}: {len(space.genes)} genes, largest {space.encode(largest)} "
        f"({space.flops(largest) / 1e6:.2f} MMACs), smallest {space.encode(smallest)} "
        f"({space.flops(smallest) / 1e6:.2f} MMACs); {len(dataset.train)} train / {len(dataset.val)} val images")
    record = done[-1] if done else {}
    phase_genes = dict(progressive_phases(space))
    phase = training_phase(cfg, start - 1, space) if start else None
    if phase is not None:
        sampler = sampler._replace(genes_free=None if phase == "all" else phase_genes[phase])
    if start and progress is not None:
        progress(start * steps_per_epoch, cfg.epochs * steps_per_epoch)
    schedule = lr_schedule(cfg, steps_per_epoch)
    # each process decodes only its own rows of every global batch
    options = StreamOptions(cfg.batch_size, cfg.seed, cfg.augment, shard_index=dist.process_index(),
                            shard_count=dist.process_count(), workers=data_workers)
    with contextlib.closing(train_stream(dataset.train, options, start, cfg.epochs)) as stream, \
            (EventWriter(out / TB_DIR, purge_step=start * steps_per_epoch + 1 if start else None) if main
             else _NoEvents()) as events:
        for epoch in range(start, cfg.epochs):
            # Each epoch's data order, augmentation and subnet samples come from (seed, epoch) alone,
            # so a resumed run repeats exactly what an uninterrupted one does.
            rng = np.random.default_rng([cfg.seed, epoch])
            sampler = sampler._replace(previous=None)
            new_phase = training_phase(cfg, epoch, space)
            if new_phase != phase:
                if new_phase == "width":  # OFA: keep the most important channels when width shrinks
                    state = fresh(space.sort_channels(state.params))
                phase = new_phase
                sampler = sampler._replace(genes_free=None if phase == "all" else phase_genes[phase])
            t0 = time.time()
            losses, stamps = [], []  # stamps: when each step was dispatched (its TensorBoard wall time)
            written = 0  # the epoch's steps already in the event file
            for step in range(steps_per_epoch):
                images, labels, failed = next(stream)
                if failed:
                    # warned once each; every read of the split counts against its 1% (issue 31)
                    dataset.train.note_failures(failed, log)
                if fixed is not None:
                    archs = [fixed]
                else:
                    archs, sampler = step_archs(cfg, phase, largest, smallest, space, sampler, rng)
                batch = dist.shard_batch(mesh, (images, labels))  # the stream gave this process's rows
                state, metrics = train_step(state, net, archs, batch, distill=cfg.distill)
                losses.append(metrics["loss"])
                stamps.append(time.time())
                written = sync_losses(losses, stamps, written, epoch, steps_per_epoch, cfg.lr, events, schedule)
                if progress is not None:
                    progress(epoch * steps_per_epoch + step + 1, cfg.epochs * steps_per_epoch)
            losses = check_finite(losses, epoch * steps_per_epoch, epoch, cfg.lr)  # before the checkpoint
            train_seconds = time.time() - t0
            write_steps(events, schedule, epoch * steps_per_epoch, written, losses[written:], stamps)
            if epoch == start:  # the first evaluation compiles its own programs: say what the wait is
                log(f"epoch {epoch + 1}: evaluating the largest and smallest subnets on {len(dataset.val)} "
                    f"validation images (BatchNorm recalibrated on {len(calib)} training images)")
            val_largest, val_smallest = _both(evaluator, dist.on_mesh(state.params, eval_mesh), largest, smallest,
                                              calib, dataset.val)
            record = {"epoch": epoch + 1, "phase": phase, "loss": round(float(np.mean(losses)), 5),
                      "val_acc_largest": val_largest, "val_acc_smallest": val_smallest,
                      "seconds": round(time.time() - t0, 2), "compiled_variants": net.num_compiled(),
                      "images_per_s": round(steps_per_epoch * cfg.batch_size / train_seconds, 1)}
            events.scalars((epoch + 1) * steps_per_epoch, {
                "val/acc_largest": val_largest, "val/acc_smallest": val_smallest,
                "train/step_time_ms": 1000 * train_seconds / steps_per_epoch,
                "train/images_per_s": record["images_per_s"]})
            events.flush()
            if main:
                append_jsonl(metrics_path, record)
            runs.save_checkpoint(out, state.checkpoint_items(), epoch + 1)  # every process saves its part
            log(json.dumps(record))

    test_largest, test_smallest = _both(evaluator, dist.on_mesh(state.params, eval_mesh), largest, smallest,
                                        calib, dataset.test)
    final = {
        "test_acc_largest": test_largest,
        "test_acc_smallest": test_smallest,
        "largest": space.encode(largest),
        "smallest": space.encode(smallest),
        "epochs": cfg.epochs,
        "class_names": list(dataset.class_names),
        **{k: record[k] for k in ("val_acc_largest", "val_acc_smallest") if k in record},
    }
    if main:
        atomic_write_json(out / runs.FINAL, final)
    dist.barrier("nas-final")  # no process leaves (and may be restarted) before final.json exists
    return final


def restore_state(out: Path, template: TrainState, tx, mesh) -> tuple[TrainState, int, list[dict]]:
    """``out``'s last intact checkpoint as a state replicated over ``mesh`` (``template``: the
    state's structure), the number of epochs it finished, and their metrics.jsonl records (a
    half-written epoch's dropped) - for train-supernet's and finetune's ``--resume``."""
    saved, start = runs.restore_checkpoint(out, template.checkpoint_items(), fall_back=True)
    params, opt_state = dist.replicate((saved["params"], saved["opt_state"]), mesh)
    done = [r for r in read_jsonl(out / runs.METRICS) if r.get("epoch", start + 1) <= start]
    return TrainState(params, opt_state, tx), start, done


def sync_losses(losses: list, stamps: list, written: int, epoch: int, steps_per_epoch: int, lr: float,
                events, schedule) -> int:
    """Every FINITE_EVERY steps (one host sync each, not one per step): stops on a non-finite loss
    among the last FINITE_EVERY (:func:`check_finite`) and writes them to TensorBoard now, so that a
    long epoch can be watched live. Returns how many of the epoch's losses are written."""
    if len(losses) % FINITE_EVERY:
        return written
    values = check_finite(losses[-FINITE_EVERY:], epoch * steps_per_epoch + len(losses) - FINITE_EVERY, epoch, lr)
    return write_steps(events, schedule, epoch * steps_per_epoch, written, values, stamps)


def write_steps(events, schedule, epoch_start: int, written: int, values: Sequence[float],
                 stamps: Sequence[float]) -> int:
    """Writes the per-step scalars of the epoch's steps ``written`` .. ``written + len(values)`` (loss,
    learning rate), each at the wall time its step was dispatched; returns the new ``written``."""
    for i, v in enumerate(values, start=written):
        step = epoch_start + i + 1  # global step numbers count updates, from 1
        events.scalars(step, {"train/loss": v, "train/lr": float(schedule(step - 1))}, walltime=stamps[i])
    return written + len(values)


class _NoEvents(contextlib.nullcontext):
    """TensorBoard for processes other than 0: they write nothing."""

    def __enter__(self):
        return self

    def scalars(self, step, values, walltime=None) -> None:
        pass

    def flush(self) -> None:
        pass
