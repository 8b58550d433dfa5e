"""`nas train-supernet`: parse options, then call nas_cli.train.train_supernet."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from nas_cli.commands._common import user_errors


@user_errors
def train_supernet_cmd(
    out: Path = typer.Option(..., "--out", help="Run directory to create: config.json, checkpoint/, metrics.jsonl, final.json."),
    space: Optional[str] = typer.Option(None, help="Search space with a supernet: mobilenetv3, resnet or vit (28/32 px), each with a -tiny variant (8x8 digits, tests). [default: mobilenetv3-tiny]"),
    dataset: Optional[str] = typer.Option(None, help="digits (bundled, no download), mnist, fashion-mnist or cifar10. [default: digits]"),
    data_dir: Optional[Path] = typer.Option(None, help="Folder with the dataset's original files (IDX .gz for MNIST/Fashion-MNIST, data_batch_*.bin + test_batch.bin for CIFAR-10)."),
    epochs: Optional[int] = typer.Option(None, help="Training epochs. [default: 30]"),
    batch_size: Optional[int] = typer.Option(None, help="Images per step (every subnet of a step sees the same batch). [default: 64]"),
    lr: Optional[float] = typer.Option(None, help="Peak AdamW learning rate (warm-up, then cosine decay). [default: 0.003]"),
    seed: Optional[int] = typer.Option(None, help="Seed for initialisation, data order, splits and subnet sampling. [default: 0]"),
    recipe: Optional[str] = typer.Option(None, help="sandwich (largest + smallest + random subnets per step, in-place distillation) or progressive (OFA: largest, then kernel, depth, width). [default: sandwich]"),
    sampler: Optional[str] = typer.Option(None, help="uniform, or complexity (bound the FLOPs jump between consecutive samples, ElasticViT). [default: uniform]"),
    num_random: Optional[int] = typer.Option(None, help="Random subnets per step besides the largest and smallest. [default: 2]"),
    calib_images: Optional[int] = typer.Option(None, help="Training images used to recalibrate BatchNorm for each evaluated subnet. [default: 2000]"),
    width_mult: Optional[float] = typer.Option(None, help="Channel width multiplier of the mobilenetv3, resnet and vit spaces (not their -tiny variants). [default: 1.0]"),
    limit_train: Optional[int] = typer.Option(None, help="Use only the first N training images (quick experiments)."),
    kernels: Optional[str] = typer.Option(None, help="Weight-shared layer implementation: auto, xla or pallas (pallas needs a GPU/TPU). [default: auto]"),
    config: Optional[Path] = typer.Option(None, "--config", help="JSON file of training settings (keys as these options, with underscores); flags override it."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run in --out from its last finished epoch (same settings required)."),
) -> None:
    """Train one weight-sharing supernet; every subnet inherits its weights."""
    from nas_cli import runs
    from nas_cli.config import build_config
    from nas_cli.train import resolve_kernels, train_supernet

    cfg = build_config(config, dict(
        space=space, dataset=dataset, data_dir=str(data_dir) if data_dir else None, epochs=epochs,
        batch_size=batch_size, lr=lr, seed=seed, recipe=recipe, sampler=sampler, num_random=num_random,
        calib_images=calib_images, width_mult=width_mult, limit_train=limit_train, kernels=kernels))
    resolve_kernels(cfg.kernels)  # a backend that cannot run the choice fails before any work
    runs.enable_compilation_cache()
    bar, shown = None, 0

    def progress(done: int, total: int) -> None:  # called once per training step
        nonlocal bar, shown
        if bar is None:
            bar = typer.progressbar(length=total, label="training", file=sys.stderr)
            bar.__enter__()
        bar.update(done - shown)
        shown = done

    try:
        final = train_supernet(cfg, out, progress=progress, log=lambda m: typer.echo(m, err=True), resume=resume)
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
    typer.echo(f"test accuracy (BN recalibrated): largest {final['test_acc_largest']:.4f}, "
               f"smallest {final['test_acc_smallest']:.4f}")
    typer.echo(f"run written to {out}")


def register(app: typer.Typer) -> None:
    app.command("train-supernet")(train_supernet_cmd)
