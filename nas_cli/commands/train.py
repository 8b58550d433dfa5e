"""`nas train-supernet`: parse options, then call nas_cli.training.supernet.train_supernet."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nas_cli.commands._common import (
    coordinator_option,
    given_options,
    init_timeout_option,
    num_processes_option,
    process_id_option,
    removed_if_refused,
    user_errors,
)
from nas_cli.commands.help_texts import (
    AUGMENTATIONS,
    DATASETS,
    DEFAULT_IMAGE_SIZE,
    KERNELS,
    RECIPES,
    SAMPLERS,
    SUPERNET_SPACES,
    TRAIN_DEFAULTS as _D,
    choices,
)


@user_errors
def train_supernet_cmd(
    ctx: typer.Context,
    out: Path = typer.Option(..., "--out", help="Run directory to create: config.json, checkpoint/, metrics.jsonl, final.json."),
    space: str = typer.Option(_D["space"], help=f"Search space with a supernet: {', '.join(SUPERNET_SPACES)} (full spaces: 28/32 px; -tiny: 8x8 digits, tests)."),
    dataset: str = typer.Option(_D["dataset"], help=f"{', '.join(DATASETS)} (digits is bundled, no download; folder and npz are your own images)."),
    data_dir: Optional[Path] = typer.Option(None, help="Folder with the dataset's files: IDX .gz for MNIST/Fashion-MNIST, data_batch_*.bin + test_batch.bin for CIFAR-10; folder: train/<class>/*.jpg|png (optional val/, test/; else seeded splits of train); npz: train.npz (optional val.npz, test.npz) or one .npz with images uint8 (N,H,W,C) and labels 0..K-1.", show_default="none: digits is bundled, the others need one"),
    image_size: Optional[int] = typer.Option(None, help="folder only: the side images are resized to (centre square of the shorter side), before augmentation.", show_default=f"the largest --resolutions, else {DEFAULT_IMAGE_SIZE}"),
    augment: Optional[str] = typer.Option(None, help=f"Training augmentation: {choices(AUGMENTATIONS)}.", show_default="standard for cifar10, folder and npz; none for digits, mnist, fashion-mnist"),
    data_workers: Optional[int] = typer.Option(None, help="Processes decoding folder images for training (results do not depend on it).", show_default="cores - 1, at most 4; in-memory datasets and folders of up to 10,000 files and 64 MB: a prefetch thread"),
    epochs: int = typer.Option(_D["epochs"], help="Training epochs."),
    batch_size: int = typer.Option(_D["batch_size"], help="Images per step (every subnet of a step sees the same batch)."),
    lr: float = typer.Option(_D["lr"], help="Peak AdamW learning rate (warm-up, then cosine decay)."),
    seed: int = typer.Option(_D["seed"], help="Seed for initialisation, data order, splits and subnet sampling: the same seed and settings give the same weights and accuracies on the same machine and JAX version."),
    recipe: str = typer.Option(_D["recipe"], help=f"{choices(RECIPES)}."),
    sampler: str = typer.Option(_D["sampler"], help=f"{choices(SAMPLERS)}."),
    num_random: int = typer.Option(_D["num_random"], help="Random subnets per step besides the largest and smallest."),
    calib_images: int = typer.Option(_D["calib_images"], help="Training images used to recalibrate BatchNorm for each evaluated subnet."),
    width_mult: float = typer.Option(_D["width_mult"], help="Channel width multiplier of the full spaces (not their -tiny variants)."),
    limit_train: Optional[int] = typer.Option(None, help="Use only the first N training images (quick experiments).", show_default="all"),
    resolutions: Optional[str] = typer.Option(None, help="Input resolutions the supernet trains at, comma-separated (e.g. 24,28,32); each multiplies the compiled programs.", show_default="the image side and 8 and 4 px less for full spaces; the image side for -tiny spaces"),
    kernels: str = typer.Option(_D["kernels"], help=f"Weight-shared layer implementation: {', '.join(KERNELS)} (pallas needs a GPU/TPU)."),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON file of training settings (keys as these options, with underscores); flags given override it.", show_default="none"),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out from its last intact epoch, with the run's own settings (options given again must match)."),
    devices: Optional[int] = typer.Option(None, "--devices", help="Local devices per process to train on, data parallel (the batch is split over them).", show_default="all"),
    coordinator: Optional[str] = coordinator_option(),
    num_processes: Optional[int] = num_processes_option("train together"),
    process_id: Optional[int] = process_id_option("the run's files"),
    init_timeout: int = init_timeout_option(),
) -> None:
    """Train one weight-sharing supernet; every subnet inherits its weights."""
    from nas_cli.commands._progress import StepProgress, note

    note(f"preparing {out}: loading JAX, the data set and the search space")
    from nas_cli import runs
    from nas_cli.config import build_config, resume_config
    from nas_cli.distributed import Parallel
    from nas_cli.errors import UserError
    from nas_cli.training.supernet import train_supernet

    # a default is not a flag given: the config file (or the resumed run) decides what was not given
    flags = given_options(ctx, dict(
        space=space, dataset=dataset, data_dir=str(data_dir) if data_dir else None, epochs=epochs,
        batch_size=batch_size, lr=lr, seed=seed, recipe=recipe, sampler=sampler, num_random=num_random,
        calib_images=calib_images, width_mult=width_mult, limit_train=limit_train, kernels=kernels,
        augment=augment, image_size=image_size, resolutions=parse_resolutions(resolutions)))
    if data_workers is not None and data_workers < 0:
        raise UserError(f"--data-workers {data_workers} must be >= 0")
    if resume and (out / runs.CONFIG).is_file():  # the run's own settings; ones given again must match
        cfg = resume_config(runs.read_config(out), config, flags)
    else:
        cfg = build_config(config, flags)
    parallel = Parallel(devices, coordinator, num_processes, process_id, init_timeout)
    runs.enable_compilation_cache(parallel.multi_process)
    with removed_if_refused(out), StepProgress("training", epochs=cfg.epochs) as display:
        final = train_supernet(cfg, out, progress=display, log=display.log, resume=resume,
                               data_workers=data_workers, parallel=parallel)
    typer.echo(f"test accuracy (BN recalibrated): largest {final['test_acc_largest']:.4f}, "
               f"smallest {final['test_acc_smallest']:.4f}")
    typer.echo(f"run written to {out}")


def parse_resolutions(text: str | None) -> list[int] | None:
    """``--resolutions 24,28,32`` as a list of positive integers (None when not given)."""
    from nas_cli.errors import UserError  # noqa: PLC0415 -- no JAX for --help
    if text is None:
        return None
    parts = [t.strip() for t in text.split(",")]
    if not parts or not all(t.isdigit() and int(t) > 0 for t in parts):
        raise UserError(f"--resolutions {text!r} must be positive integers separated by commas, e.g. 24,28,32")
    return [int(t) for t in parts]


def register(app: typer.Typer) -> None:
    app.command("train-supernet")(train_supernet_cmd)
