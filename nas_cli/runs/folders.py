"""A training run directory: config.json, checkpoint/ (orbax), metrics.jsonl, and loading it back."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from nas_cli.runs import identity
from nas_cli.config import NORMALIZATIONS, TrainConfig
from nas_cli.data import Dataset, data_identity, load_dataset
from nas_cli.errors import UserError
from nas_cli.runs.imported import IMPORTED, fixed_stats, synthetic_dataset
from search_spaces import ArchError, get_space
from search_spaces.base import SupernetSpace, default_resolutions

CONFIG = "config.json"
CHECKPOINT = "checkpoint"
METRICS = "metrics.jsonl"
FINAL = "final.json"


def make_space(cfg: TrainConfig, dataset: Dataset) -> SupernetSpace:
    side, channels = dataset.image_shape[0], dataset.image_shape[2]
    options: dict[str, Any] = dict(in_channels=channels, num_classes=dataset.num_classes,
                                   resolutions=tuple(cfg.resolutions or default_resolutions(cfg.space, side)))
    if cfg.width_mult != 1.0:
        options["width_mult"] = cfg.width_mult
    try:
        return get_space(cfg.space, **options)
    except ArchError as e:
        raise UserError(str(e)) from None


def load_run_dataset(cfg: TrainConfig) -> Dataset:
    dataset = load_dataset(cfg.dataset, cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed,
                           limit_train=cfg.limit_train, image_size=cfg.image_size)
    return normalized(dataset, cfg)


def normalized(dataset: Dataset, cfg: TrainConfig) -> Dataset:
    """``dataset`` with the run's normalisation (``cfg.normalize``): its own statistics, or fixed ones."""
    if NORMALIZATIONS[cfg.normalize] is None:
        return dataset
    mean, std = fixed_stats(cfg, dataset.image_shape[2])
    return dataclasses.replace(dataset, mean=mean, std=std)


def save_checkpoint(run_dir: Path, items: dict[str, Any], step: int) -> None:
    """Saves each named pytree under checkpoint/<step>/<name>; orbax writes to a temporary folder
    and renames it when complete, so an interrupted save never replaces the last good checkpoint.
    The step's checksums are recorded once it is complete (nas_cli.runs.identity)."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=2, create=True)
    try:
        with ocp.CheckpointManager((run_dir / CHECKPOINT).absolute(), options=options) as mngr:
            mngr.save(step, args=ocp.args.Composite(**{k: ocp.args.StandardSave(v) for k, v in items.items()}))
            mngr.wait_until_finished()
            kept = list(mngr.all_steps())
    except (ValueError, RuntimeError) as e:
        # TensorStore reports a full disk as a ValueError of hundreds of lines: make it the OSError it
        # is (one line, exit 1, errors.one_line); the unfinished step is removed by --resume
        if _disk_full(e):
            raise OSError(errno.ENOSPC, "No space left on device", str(run_dir / CHECKPOINT / str(step))) from None
        raise
    if jax.process_index() == 0:
        identity.record_step(run_dir / CHECKPOINT, step, kept)


#: what orbax appends to a step folder while it is being written (``1.orbax-checkpoint-tmp-<time>``)
UNFINISHED = ".orbax-checkpoint-tmp"


def discard_unfinished(run_dir: Path) -> bool:
    """Removes every step whose save never finished and says whether a finished step remains to
    resume from. Unfinished: a folder orbax was still writing when the process died (orbax renames a
    step into place only once it is complete), or a step newer than every one ``checksums.json``
    records (the process died between orbax's rename and the record). Nothing in either was ever
    used, and training that epoch again gives it back exactly.

    Only process 0 removes (the others only look), so several processes never race on one folder.

    Raises:
      UserError: ``checksums.json`` is missing or damaged (see :func:`identity.read_checksums`).
    """
    ckpt = run_dir / CHECKPOINT
    if not ckpt.is_dir():
        return False
    steps = sorted(int(e.name) for e in ckpt.iterdir() if e.name.isdigit() and e.is_dir())
    unrecorded = identity.unrecorded_steps(ckpt, steps)
    if jax.process_index() == 0:
        for entry in ckpt.iterdir():
            if UNFINISHED in entry.name:
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
        for step in unrecorded:
            print(f"warning: checkpoint step {step}'s save did not finish (no checksums recorded); "
                  "removed it, that epoch is trained again", file=sys.stderr)
            shutil.rmtree(ckpt / str(step), ignore_errors=True)
    return bool(set(steps) - set(unrecorded))


def start_checksums(run_dir: Path) -> None:
    """Starts a run's (empty) checksum record; see :func:`identity.start_record`."""
    identity.start_record(run_dir / CHECKPOINT)


def _disk_full(e: BaseException) -> bool:
    text = str(e)
    return "RESOURCE_EXHAUSTED" in text or "No space left on device" in text or "Disk quota exceeded" in text


def intact_step(run_dir: Path, *, fall_back: bool) -> int:
    """The newest finished checkpoint step whose files match their checksums.

    With ``fall_back`` (resuming training), a damaged newer step is moved aside to
    ``checkpoint-damaged/`` (kept, never deleted) and the newest intact one is returned.

    Raises:
      UserError: no finished checkpoint; or (without ``fall_back``) the newest one is damaged,
        naming the step, the file and what to do.
    """
    import orbax.checkpoint as ocp

    ckpt = (run_dir / CHECKPOINT).absolute()
    if not ckpt.is_dir():
        raise UserError(f"{run_dir} has no {CHECKPOINT}/ folder; was training interrupted before the first epoch ended?")
    with ocp.CheckpointManager(ckpt) as mngr:
        steps = sorted(mngr.all_steps(), reverse=True)
    if not steps:
        raise UserError(f"{ckpt} holds no finished checkpoint")
    for i, step in enumerate(steps):
        wrong = identity.damage(ckpt, step)
        if wrong is None:
            return int(step)
        if not fall_back:
            older = next((s for s in steps[i + 1:] if identity.damage(ckpt, s) is None), None)
            hint = (f"resume training with `nas train-supernet --out {run_dir} --resume` (it falls back to "
                    f"intact step {older})" if older is not None else "no intact step is left; train again")
            raise UserError(f"checkpoint step {step} of {run_dir} is damaged ({wrong}); {hint}")
        aside = run_dir / (CHECKPOINT + "-damaged") / str(step)
        aside.parent.mkdir(exist_ok=True)
        shutil.rmtree(aside, ignore_errors=True)
        os.replace(ckpt / str(step), aside)
        print(f"warning: checkpoint step {step} is damaged ({wrong}); moved it to {aside} and "
              "resumed from the step before", file=sys.stderr)
    raise UserError(f"every checkpoint step of {run_dir} is damaged ({', '.join(map(str, steps))}); train again")


def restore_checkpoint(run_dir: Path, targets: dict[str, Any], *, fall_back: bool = False) -> tuple[dict, int]:
    """Restores the named items (a subset of what was saved) shaped like ``targets`` from the
    newest intact step (see :func:`intact_step`)."""
    import orbax.checkpoint as ocp

    ckpt = (run_dir / CHECKPOINT).absolute()
    step = intact_step(run_dir, fall_back=fall_back)
    args = {k: ocp.args.StandardRestore(jax.tree.map(ocp.utils.to_shape_dtype_struct, v))
            for k, v in targets.items()}
    try:
        with ocp.CheckpointManager(ckpt) as mngr:
            state = mngr.restore(step, args=ocp.args.Composite(**args))
    except Exception as e:  # noqa: BLE001 - TensorStore/orbax raise many kinds, with pages of detail
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UserError(f"checkpoint step {step} of {run_dir} cannot be read ({first}); it was written by "
                        "another version or damaged without checksums") from None
    return {k: state[k] for k in targets}, int(step)


@dataclasses.dataclass
class Run:
    """A finished (or checkpointed) training run, loaded for search and export."""

    path: Path
    config: TrainConfig
    dataset: Dataset
    space: SupernetSpace
    params: Any
    epoch: int
    #: what measures: the weights' identity (checkpoint step and content hash) and the data's; not
    #: the path, so a copy keeps it
    weights: dict = dataclasses.field(default_factory=dict)


def read_config(run_dir: str | Path) -> TrainConfig:
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG
    if not run_dir.is_dir() or not cfg_path.is_file():
        raise UserError(f"{run_dir} is not a training run: expected {CONFIG} and {CHECKPOINT}/ written by "
                        f"`nas train-supernet --out {run_dir}`")
    try:
        data = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_path} is not valid JSON ({e}); it is damaged") from None
    if not isinstance(data, dict):
        raise UserError(f"{cfg_path} does not hold a JSON object; it is damaged")
    return TrainConfig.from_json(data, source=str(cfg_path))


def open_run(run_dir: str | Path, check: Callable[[SupernetSpace], Any] | None = None, *,
             without_data: bool = False) -> Run:
    """Loads a run's config, dataset, space and supernet parameters; ``check(space)`` validates
    what depends on the space (an ``--arch``) before the weights are read.

    An imported run without data (`nas import ofa` without ``--data-dir``) opens only with
    ``without_data`` (export), its dataset then a few synthetic images (``dataset.name`` is
    "synthetic"); otherwise that is a UserError saying how to give it data."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    if cfg.data_dir is None and (run_dir / IMPORTED).is_file():
        if not without_data:
            raise UserError(f"{run_dir} is an imported supernet without data; import it again with --dataset "
                            "folder --data-dir DIR (ImageNet's images or your own, one folder per class) to "
                            "search or fine-tune it")
        dataset = synthetic_dataset(run_dir, cfg)
    else:
        dataset = load_run_dataset(cfg)
    space = make_space(cfg, dataset)
    if check is not None:
        check(space)
    target = jax.eval_shape(space.init_supernet, jax.random.key(0))
    if jax.process_count() > 1:
        # one whole copy on this process's first device: where the checkpoint was saved (its recorded
        # sharding) may name devices of another process, which orbax refuses as a topology mismatch
        here = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=here), target)
    else:
        target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), target)
    state, step = restore_checkpoint(run_dir, {"params": target})
    return Run(run_dir, cfg, dataset, space, state["params"], step, measured_by(run_dir, step, dataset))


def measured_by(run_dir: Path, step: int, dataset: Dataset) -> dict:
    """What every measured accuracy of a run depends on: the weights' identity (step and content
    hash) and the data's (:func:`nas_cli.data.data_identity`); each cached accuracy records it, and a
    record of other weights or other data is never used."""
    try:
        data = data_identity(dataset)
    except OSError as e:
        raise UserError(f"the data of {run_dir} changed while it was read ({e.filename}: {e.strerror}); "
                        "run the command again") from None
    return {**identity.weights_identity(run_dir / CHECKPOINT, step), "data": data}


def space_spec(spec: str | Path) -> str | tuple[str, dict]:
    """``--space`` of the predictor tools: a registered space name, or a training run directory,
    which gives that run's space with its options (width, resolutions, channels, classes)."""
    path = Path(spec)
    if not (path / CONFIG).is_file():
        return str(spec)
    cfg = read_config(path)
    space = make_space(cfg, load_run_dataset(cfg))
    return space.name, dict(space.options)
