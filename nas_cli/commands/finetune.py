"""`nas finetune`: parse options, then call nas_cli.training.finetune.finetune."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nas_cli.commands._common import removed_if_refused, user_errors
from nas_cli.commands.help_texts import FINETUNE_DEFAULTS as _D


@user_errors
def finetune_cmd(
    run_dir: Path = typer.Argument(..., help="The training run (from `nas train-supernet --out`)."),
    out: Path = typer.Option(..., "--out", help="Folder to create: the fine-tuning run (config.json, finetune.json, "
                             "checkpoint/, metrics.jsonl, tb/) and the export (model/, model.onnx, model.stablehlo, "
                             "subnet.json with the accuracies before and after)."),
    epochs: int = typer.Option(..., "--epochs", help="Fine-tuning epochs over the run's training images."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Canonical architecture string, as in pareto.csv."),
    rank: Optional[int] = typer.Option(None, "--rank", help="Take the K-th subnet of the search's pareto.json "
                                       "(1 = most accurate within budget)."),
    search_dir: Optional[Path] = typer.Option(None, "--search-dir", help="Where `nas search` wrote pareto.json.",
                                              show_default="RUN_DIR/search"),
    distill_weight: float = typer.Option(_D["distill_weight"], "--distill-weight", help="Weight of the distillation "
                                         "loss from the supernet's largest subnet (frozen), added to the label loss "
                                         "(Once-for-All's kd_ratio); 0 turns distillation off."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak AdamW learning rate (cosine decay, no warm-up).",
                                       show_default="the run's --lr" + ("" if _D["lr_fraction"] == 1 else f" x {_D['lr_fraction']:g}")),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Images per step.",
                                             show_default="the run's"),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed of the batches' order and augmentation (the "
                                       "validation and test splits stay the run's).", show_default="the run's"),
    format: str = typer.Option("all", "--format", help="Export formats: onnx (model.onnx, checked in onnxruntime; "
                               "needs the 'onnx' extra), stablehlo (model.stablehlo), or all."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted fine-tuning in --out from its last "
                                "intact epoch (give the same options again)."),
    devices: Optional[int] = typer.Option(None, "--devices", help="Local devices to train on, data parallel (the "
                                          "batch is split over them).", show_default="all"),
    data_workers: Optional[int] = typer.Option(None, "--data-workers", help="Processes decoding folder images for "
                                               "training (results do not depend on it).",
                                               show_default="cores - 1, at most 4; in-memory datasets: a thread"),
) -> None:
    """Fine-tune one subnet alone from its inherited weights, with distillation from the largest
    subnet, and export it (what `nas export subnet` writes)."""
    from nas_cli.commands._progress import StepProgress, note

    note(f"preparing {out}: loading JAX, the run and its data set")
    from nas_cli import runs
    from nas_cli.distributed import Parallel
    from nas_cli.errors import UserError
    from nas_cli.training.finetune import check_request, finetune

    check_request(arch=arch, rank=rank, epochs=epochs, distill_weight=distill_weight, lr=lr,
                  batch_size=batch_size, seed=seed, format=format)  # before anything is created
    if data_workers is not None and data_workers < 0:
        raise UserError(f"--data-workers {data_workers} must be >= 0")
    Parallel(devices)  # checks --devices
    runs.enable_compilation_cache()
    with removed_if_refused(out), StepProgress("fine-tuning", epochs=epochs, item="image") as display:
        info = finetune(run_dir, out, epochs=epochs, arch=arch, rank=rank, search_dir=search_dir,
                        distill_weight=distill_weight, lr=lr, batch_size=batch_size, seed=seed, format=format,
                        resume=resume, progress=display, log=display.log, data_workers=data_workers,
                        devices=devices)
    ft = info["finetune"]
    typer.echo(f"fine-tuned {info['arch']}: val accuracy {ft['before']['accuracy']:.4f} -> "
               f"{ft['after']['accuracy']:.4f}, test accuracy {ft['before']['test_accuracy']:.4f} -> "
               f"{ft['after']['test_accuracy']:.4f}")
    typer.echo(f"exported: latency {info['latency_ms']:.3f} ms, {info['flops'] / 1e6:.2f} MMACs, "
               f"{info['params']} params")
    typer.echo(f"fine-tuned subnet written to {out}")


def register(app: typer.Typer) -> None:
    app.command("finetune")(finetune_cmd)
