"""Fine-tuning one subnet of a trained supernet as a standalone model (``nas finetune``).

The chosen subnet starts from its inherited weights and trains alone, on the run's own data and
augmentation, with knowledge distillation from the supernet's largest subnet (Once-for-All fine-tunes
its specialised subnets the same way: its model names say ``finetune@25``).

How, and why so:

- The subnet trains through the space's composed trainer with one fixed architecture, on a copy of the
  supernet's weights: each step runs exactly the subnet's static-shape pieces (what the standalone
  model computes), the gradient is zero outside the subnet's slices, and the weights it does not use
  are never read again. This reuses what train-supernet has (the data-parallel step under
  ``--devices``, the orbax checkpoint, resume, the lock, metrics.jsonl, TensorBoard), and the export
  at the end is the one ``nas export subnet`` does, parity checks included: the output folder is
  itself a training run (``config.json`` with ``fixed_arch``, ``checkpoint/``) whose weights
  ``nas_cli.export.export_subnet`` extracts.
- Distillation (OFA's ``kd_ratio``, default 1): loss = cross-entropy with the (smoothed) labels +
  ``distill_weight`` x cross-entropy with the teacher's softmax. The teacher is the run's largest
  subnet, frozen with the run's weights and BatchNorm statistics recalibrated once (the teacher that
  ``nas export subnet`` would export), run as the extracted static model. Cross-entropy is linear in
  its targets, so the sum is one cross-entropy with the targets ``labels + w * softmax(teacher)``: one
  forward and backward per step.
- BatchNorm: training uses batch statistics, as the supernet did; every evaluation (each epoch's
  validation accuracy, the before/after figures, the export) recalibrates the statistics on the run's
  calibration images, as every other measurement of a subnet here does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from nas_cli import distributed as dist
from nas_cli import runs
from nas_cli.config import MAX_EPOCHS, MAX_INT, MAX_SEED, TrainConfig, in_range
from nas_cli.data import DATA_INFO, calibration_images, dataset_info
from nas_cli.errors import FieldError, UserError
from nas_cli.export import FORMATS, export_subnet, read_front, resolve_arch
from nas_cli.export.record import SUBNET_JSON
from predictors.files import append_jsonl, atomic_write_json, atomic_write_text, read_json, read_jsonl
from nas_cli.data.input_pipeline import StreamOptions, train_stream
from nas_cli.evaluation.subnet import SubnetEvaluator
from nas_cli.runs.tensorboard import TB_DIR, EventWriter
from nas_cli.training.supernet import (
    TrainState,
    check_finite,
    lr_schedule,
    make_optimizer,
    make_trainer,
    resolve_kernels,
    restore_state,
    sync_losses,
    write_steps,
    zero_grads,
)
from search_spaces.layers import preprocess
from search_spaces.programs import jit

#: the fine-tuning's own settings and the accuracies it started from (config.json holds the training's)
FINETUNE_JSON = "finetune.json"
#: Once-for-All's ``kd_ratio`` (train_ofa_net.py): loss = CE(labels) + 1.0 x CE(teacher's softmax)
DEFAULT_DISTILL_WEIGHT = 1.0
#: the default learning rate is the run's peak learning rate times this. A tenth was tried first (the
#: weights are trained already); on Fashion-MNIST with 128 steps (bench/RESULTS.md, issue 32) the run's
#: own rate ended 8-12 points higher, with and without distillation, and no lower than training alone
DEFAULT_LR_FRACTION = 1.0


@dataclasses.dataclass(frozen=True)
class FinetuneSettings:
    """What decides a fine-tuning besides the run's own settings (recorded in ``finetune.json``;
    ``--resume`` must be given the same).

    Raises:
      FieldError: (when built) a value out of range, naming its field (the CLI names the flag).
    """

    run: str  # the source run, absolute
    arch: str  # canonical
    epochs: int
    lr: float
    batch_size: int
    seed: int
    distill_weight: float
    rank: int | None = None

    def __post_init__(self) -> None:
        for message in (in_range("epochs", self.epochs, 1, MAX_EPOCHS),
                        in_range("batch_size", self.batch_size, 2, MAX_INT, " (BatchNorm needs a batch)"),
                        in_range("seed", self.seed, 0, MAX_SEED)):
            if message is not None:
                raise FieldError(message)
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise FieldError(f"{{lr}} {self.lr} must be a finite number > 0")
        if not (math.isfinite(self.distill_weight) and 0 <= self.distill_weight <= 1e6):
            raise FieldError(f"{{distill_weight}} {self.distill_weight} must be a finite number in 0..1000000 "
                             "(0 turns distillation off)")


def check_request(*, arch: str | None, rank: int | None, epochs: int, distill_weight: float,
                  lr: float | None, batch_size: int | None, seed: int | None, format: str) -> None:
    """The checks that need no run (so bad flags fail before anything is loaded or created)."""
    if (arch is None) == (rank is None):
        raise UserError("give exactly one of --arch ARCH or --rank K")
    if rank is not None and rank < 1:
        raise UserError(f"--rank {rank} must be at least 1 (1 = the front's most accurate subnet)")
    if format not in FORMATS:
        raise UserError(f"--format {format!r}: expected one of {', '.join(FORMATS)}")
    # the same bounds the settings check once the run has filled the defaults in
    FinetuneSettings("", "", epochs, 1.0 if lr is None else lr, 2 if batch_size is None else batch_size,
                     0 if seed is None else seed, distill_weight)


def training_config(source: TrainConfig, settings: FinetuneSettings) -> TrainConfig:
    """The run's config as the fine-tuning trains it: one fixed architecture for ``epochs``.

    The seed stays the run's: it also draws the validation and test hold-outs and the calibration
    images, which must be the run's own (the fine-tuning's seed orders and augments the batches).
    No warm-up: the weights are trained already.
    """
    return dataclasses.replace(source, epochs=settings.epochs, lr=settings.lr, batch_size=settings.batch_size,
                               fixed_arch=settings.arch, distill=settings.distill_weight > 0, warmup_epochs=0,
                               recipe="sandwich", num_random=0)


def _targets_fn(graphdef, mean, std, resolution: int, num_classes: int, smoothing: float, weight: float):
    """One program: the teacher's forward on the (uint8) batch and the distillation targets
    ``smoothed one-hot(labels) + weight * softmax(teacher logits)``."""
    mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def targets(state, images, labels):
        logits = nnx.merge(graphdef, state)(preprocess(images, resolution, jnp.asarray(mean), jnp.asarray(std)))
        onehot = jax.nn.one_hot(labels, num_classes)
        if smoothing:
            onehot = optax.smooth_labels(onehot, smoothing)
        return onehot + weight * jax.nn.softmax(logits)

    return jit(targets)


def _accuracies(evaluator: SubnetEvaluator, params, arch, calib, dataset) -> dict[str, float]:
    stats = evaluator.calibrate(params, arch, calib)
    return {"accuracy": evaluator.accuracy(params, stats, arch, dataset.val),
            "test_accuracy": evaluator.accuracy(params, stats, arch, dataset.test)}


def finetune(run_dir: str | Path, out: str | Path, *, epochs: int, arch: str | None = None,
             rank: int | None = None, search_dir: Path | None = None,
             distill_weight: float = DEFAULT_DISTILL_WEIGHT, lr: float | None = None,
             batch_size: int | None = None, seed: int | None = None, format: str = "all",
             resume: bool = False, progress: Callable[[int, int], None] | None = None,
             log: Callable[[str], None] = print, data_workers: int | None = None,
             devices: int | None = None) -> dict:
    """Fine-tunes one subnet of ``run_dir`` into ``out`` and exports it there.

    Writes (``out``): config.json (the run's settings with ``fixed_arch``, the fine-tuning's epochs,
    batch and learning rate), finetune.json (the source run and its weights' identity, the arch, the
    seed, the distillation weight, the accuracies before), checkpoint/ (orbax, every epoch),
    metrics.jsonl, tb/, data.json, final.json, and what ``nas export subnet`` writes (model/,
    model.onnx and/or model.stablehlo, subnet.json, which adds ``finetune``: the accuracies on the
    validation and test splits before and after).

    Args:
      run_dir: a training run of ``nas train-supernet``.
      out: the folder to create (or, with ``resume``, to continue).
      epochs: training epochs.
      arch, rank: the subnet: a canonical arch string, or rank K of the run's search's pareto.json.
      search_dir: where that pareto.json is (default ``run_dir/search``).
      distill_weight: weight of the distillation term (0: labels only).
      lr: peak AdamW learning rate (default: the run's times :data:`DEFAULT_LR_FRACTION`), cosine decay.
      batch_size, seed: default the run's; the seed orders and augments the batches.
      format: the export's formats (``nas export subnet --format``).
      resume: continue an interrupted fine-tuning in ``out`` (the same arguments must be given).
      progress: ``progress(images done, images in all)``.
      devices: local devices to train on, data parallel (default all).

    Returns:
      The export's record (``subnet.json``).

    Raises:
      UserError: bad arguments, a missing run or search, an unknown arch or rank, an ``out`` that holds
        something else, a locked ``out``, a non-finite loss, a failed parity check.
    """
    check_request(arch=arch, rank=rank, epochs=epochs, distill_weight=distill_weight, lr=lr,
                  batch_size=batch_size, seed=seed, format=format)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder")
    if Path(out).resolve() == Path(run_dir).resolve():
        raise UserError(f"--out {out} is the run itself; choose a new folder")
    if (out / SUBNET_JSON).exists() and not resume:
        raise UserError(f"{out} already holds an exported subnet ({SUBNET_JSON}); choose another --out")
    runs.read_config(run_dir)  # a folder that is no run says so first
    row = read_front(Path(run_dir), rank, search_dir) if rank is not None else None
    # a bad --arch fails before the weights are read
    source = runs.open_run(run_dir, check=(lambda sp: sp.canonical(arch)) if arch is not None else None)
    arch_str = resolve_arch(source, arch, row)
    settings = FinetuneSettings(
        run=str(Path(run_dir).resolve()), arch=arch_str, epochs=epochs,
        lr=lr if lr is not None else source.config.lr * DEFAULT_LR_FRACTION,
        batch_size=batch_size if batch_size is not None else source.config.batch_size,
        seed=seed if seed is not None else source.config.seed, distill_weight=distill_weight, rank=rank)
    cfg = training_config(source.config, settings)
    resolve_kernels(cfg.kernels)
    mesh = dist.make_mesh(devices)
    dist.check_batch(cfg.batch_size, mesh)
    if len(source.dataset.train) < cfg.batch_size:
        raise UserError(f"--batch-size {cfg.batch_size} exceeds the run's {len(source.dataset.train)} training images")

    from nas_cli.runs import locks  # noqa: PLC0415

    out.mkdir(parents=True, exist_ok=True)
    with locks.locked(out, what="fine-tuning run"):
        trained = _resume_point(out, cfg, settings, source, resume)
        if trained != "finished":
            _train(out, cfg, settings, source, mesh, resuming=trained == "resume", progress=progress, log=log,
                   data_workers=data_workers)
        # finished but not exported (killed during the export): the export is written again whole
        return _export(out, settings, format, log, force=trained == "finished")


def _resume_point(out: Path, cfg: TrainConfig, settings: FinetuneSettings, source: runs.Run,
                  resume: bool) -> str:
    """"fresh", "resume" (a finished epoch to continue from) or "finished" (trained, not yet exported);
    refuses anything else in ``out``."""
    has_config = (out / runs.CONFIG).exists()
    if not resume:
        if has_config or (out / runs.CHECKPOINT).exists():
            raise UserError(f"--out {out} already holds a training or fine-tuning run; continue a fine-tuning with --resume, or choose "
                            "another folder")
        return "fresh"
    if not has_config or not (out / FINETUNE_JSON).is_file():
        raise UserError(f"--resume: {out} holds no fine-tuning run to continue (no {FINETUNE_JSON}); drop --resume "
                        "to start one there")
    record = read_json(out / FINETUNE_JSON, "fine-tuning record", "start it again in a new --out")
    saved = record.get("settings") if isinstance(record, dict) else None
    if not isinstance(saved, dict):
        raise UserError(f"{out / FINETUNE_JSON} is damaged; start the fine-tuning again in a new --out")
    now = dataclasses.asdict(settings)
    differ = [f"{k}: {saved.get(k)!r} in the run, {v!r} now" for k, v in now.items() if saved.get(k) != v]
    if record.get("source_weights") != source.weights:
        differ.append(f"the source run's weights changed since ({source.path})")
    if differ:
        raise UserError(f"--resume: {out} was fine-tuned with other settings ({'; '.join(differ)}); pass the same "
                        "settings, or choose another --out")
    if runs.read_config(out) != cfg:
        raise UserError(f"--resume: {out / runs.CONFIG} differs from the run's settings now; choose another --out")
    if (out / runs.FINAL).exists():
        if "finetune" in (read_json(out / SUBNET_JSON, "export record", "") if (out / SUBNET_JSON).is_file() else {}):
            raise UserError(f"--resume: {out} is already finished ({SUBNET_JSON} exists); nothing to continue")
        return "finished"
    # killed during the first save, a run holds only an unfinished step: it starts from the beginning
    return "resume" if runs.discard_unfinished(out) else "fresh"


def _train(out: Path, cfg: TrainConfig, settings: FinetuneSettings, source: runs.Run, mesh, *, resuming: bool,
           progress, log, data_workers) -> None:
    """The epoch loop (train-supernet's, for one fixed architecture with a frozen teacher)."""
    space, dataset = source.space, source.dataset
    arch = space.decode(settings.arch)
    eval_mesh = dist.local_mesh(mesh)
    evaluator = SubnetEvaluator(space, dataset.mean, dataset.std, mesh=eval_mesh)
    calib = calibration_images(dataset, cfg.calib_images, cfg.seed)  # the export's calibration images
    metrics_path = out / runs.METRICS
    steps_per_epoch = len(dataset.train) // cfg.batch_size
    tx = make_optimizer(cfg, steps_per_epoch)
    start = 0
    if resuming:
        state, start, done = restore_state(out, TrainState.create(source.params, tx), tx, mesh)
        atomic_write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in done))
        log(f"resuming {out} after epoch {start} of {cfg.epochs}")
    else:
        # a copy: each update donates the student's weights, and the run's (the teacher's, and those of
        # the accuracies before) may share buffers with what device_put gives back
        state = TrainState.create(dist.replicate(jax.tree.map(np.array, source.params), mesh), tx)
        state = state._replace(opt_state=dist.replicate(state.opt_state, mesh))
        log(f"measuring the inherited subnet {settings.arch} (BatchNorm recalibrated on {len(calib)} images)")
        before = _accuracies(evaluator, source.params, arch, calib, dataset)
        log(f"before fine-tuning: val accuracy {before['accuracy']:.4f}, test accuracy {before['test_accuracy']:.4f}")
        # written once every setting is known to work: a refused run leaves nothing
        atomic_write_json(out / runs.CONFIG, cfg.to_json())
        runs.start_checksums(out)
        metrics_path.unlink(missing_ok=True)
        atomic_write_json(out / FINETUNE_JSON, {
            "settings": dataclasses.asdict(settings), "source_weights": source.weights,
            "teacher": space.encode(space.largest()) if settings.distill_weight > 0 else None,
            "before": before})
    atomic_write_json(out / DATA_INFO, dataset_info(dataset))

    net = make_trainer(cfg, space, dataset, mesh)
    targets = None
    if settings.distill_weight > 0:
        teacher_arch = space.largest()
        log(f"teacher: the largest subnet {space.encode(teacher_arch)}, distillation weight {settings.distill_weight:g}")
        stats = evaluator.calibrate(source.params, teacher_arch, calib)
        graphdef, teacher_state = nnx.split(space.extract(source.params, stats, teacher_arch))
        teacher_state = dist.replicate(teacher_state, mesh)
        targets = _targets_fn(graphdef, dataset.mean, dataset.std, teacher_arch.resolution, dataset.num_classes,
                              cfg.label_smoothing, settings.distill_weight)
    log(f"{mesh.devices.size} device(s), {cfg.batch_size // mesh.devices.size} images per device per step; "
        f"{steps_per_epoch} steps per epoch, lr {cfg.lr:g}")

    total = cfg.epochs * steps_per_epoch * cfg.batch_size
    if start and progress is not None:
        progress(start * steps_per_epoch * cfg.batch_size, total)
    schedule = lr_schedule(cfg, steps_per_epoch)
    options = StreamOptions(cfg.batch_size, settings.seed, cfg.augment, workers=data_workers)
    with contextlib.closing(train_stream(dataset.train, options, start, cfg.epochs)) as stream, \
            EventWriter(out / TB_DIR, purge_step=start * steps_per_epoch + 1 if start else None) as events:
        for epoch in range(start, cfg.epochs):
            t0 = time.time()
            losses, stamps, written = [], [], 0
            for step in range(steps_per_epoch):
                images, labels, failed = next(stream)
                if failed:
                    dataset.train.note_failures(failed, log)
                images, labels = dist.shard_batch(mesh, (images, labels))
                grads = zero_grads(state.params)
                soft = targets(teacher_state, images, labels) if targets is not None else None
                loss, _, grads = net.accumulate_grad(state.params, grads, arch, images, labels, soft)
                state = state.apply_gradients(grads, 1.0)
                losses.append(loss)
                stamps.append(time.time())
                written = sync_losses(losses, stamps, written, epoch, steps_per_epoch, cfg.lr, events, schedule)
                if progress is not None:
                    progress((epoch * steps_per_epoch + step + 1) * cfg.batch_size, total)
            losses = check_finite(losses, epoch * steps_per_epoch, epoch, cfg.lr)  # before the checkpoint
            train_seconds = time.time() - t0
            write_steps(events, schedule, epoch * steps_per_epoch, written, losses[written:], stamps)
            val = evaluator.calibrated_accuracy(dist.on_mesh(state.params, eval_mesh), arch, calib, dataset.val)
            record = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5), "val_acc": val,
                      "seconds": round(time.time() - t0, 2), "compiled_variants": net.num_compiled(),
                      "images_per_s": round(steps_per_epoch * cfg.batch_size / train_seconds, 1)}
            events.scalars((epoch + 1) * steps_per_epoch, {
                "val/acc": val, "train/step_time_ms": 1000 * train_seconds / steps_per_epoch,
                "train/images_per_s": record["images_per_s"]})
            events.flush()
            append_jsonl(metrics_path, record)
            runs.save_checkpoint(out, state.checkpoint_items(), epoch + 1)
            log(json.dumps(record))
    # final.json as a fixed-arch training run writes it (its test accuracy is the export's)
    last = read_jsonl(metrics_path)[-1]
    atomic_write_json(out / runs.FINAL, {"largest": settings.arch, "smallest": settings.arch, "epochs": cfg.epochs,
                                        "class_names": list(dataset.class_names),
                                        "val_acc_largest": last["val_acc"], "val_acc_smallest": last["val_acc"]})


def _export(out: Path, settings: FinetuneSettings, format: str, log, *, force: bool = False) -> dict:
    """``nas export subnet`` of the fine-tuned weights into ``out`` itself, then subnet.json's
    ``finetune`` record (before and after)."""
    log(f"exporting the fine-tuned subnet into {out}")
    info = export_subnet(out, out, arch=settings.arch, format=format, log=log, force=force)
    record = read_json(out / FINETUNE_JSON, "fine-tuning record", "start it again in a new --out")
    after = {"accuracy": info["accuracy"], "test_accuracy": info["test_accuracy"]}
    info["finetune"] = {**dataclasses.asdict(settings), "source_weights": record["source_weights"],
                        "teacher": record["teacher"], "before": record["before"], "after": after}
    final = read_json(out / runs.FINAL, "final record", "resume the fine-tuning with --resume")
    final.update(test_acc_largest=after["test_accuracy"], test_acc_smallest=after["test_accuracy"])
    atomic_write_json(out / runs.FINAL, final)
    atomic_write_json(out / SUBNET_JSON, info)  # last: its presence marks a finished fine-tuning
    return info


def summary(info: dict) -> dict[str, Any]:
    """The before/after accuracies of a fine-tuned subnet's record, for printing."""
    ft = info["finetune"]
    return {"arch": info["arch"], "before": ft["before"], "after": ft["after"]}
