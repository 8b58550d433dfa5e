"""``nas latency profile|validate|fit``: latency lookup tables and learned latency models."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from nas_cli.commands._common import user_errors

latency_app = typer.Typer(
    help="Profile a latency lookup table on this device, validate it end to end, fit a learned correction.",
    no_args_is_help=True,
)

_SPACE_HELP = "mobilenetv3 or mobilenetv3-tiny."


def _progress(label: str, length: int, run):
    """Runs ``run(tick)`` under a progress bar on stderr."""
    with typer.progressbar(length=length, label=label, file=sys.stderr) as bar:
        return run(bar.update)


def _fmt(m: dict) -> str:
    return f"MAPE {m['mape']:.1f}%  tau {m['kendall_tau']:.3f}  rho {m['spearman']:.3f}  n {m['n']}"


def _rounds_option():
    return typer.Option(20, "--rounds", help="Interleaved timing rounds of --repeats runs each (the device's "
                        "speed moves between rounds; many short rounds average it out).")


def _repeats_option():
    return typer.Option(10, "--repeats", help="Timed runs per subnet (or piece) and round; the median is over all.")


def _echo_repeatability(r: dict | None) -> None:
    if r is not None:
        typer.echo(f"measurement against itself (even vs odd rounds): MAPE {r['mape']:.1f}%  tau {r['kendall_tau']:.3f}")


def _check_timing(repeats: int, rounds: int) -> None:
    from nas_cli.errors import UserError

    if repeats < 1 or rounds < 1:
        raise UserError(f"--repeats {repeats} --rounds {rounds}: both must be at least 1")


@latency_app.command("profile")
@user_errors
def profile(
    space: str = typer.Option(..., "--space", help=_SPACE_HELP),
    out: Path = typer.Option(..., "--out", help="Where to write the lookup table (JSON)."),
    resolution: List[int] = typer.Option([], "--resolution", help="Input resolution (repeatable; default: the space's)."),
    batch: int = typer.Option(1, "--batch", help="Batch size to time at."),
    in_channels: Optional[int] = typer.Option(None, "--in-channels"),
    num_classes: Optional[int] = typer.Option(None, "--num-classes"),
    width_mult: Optional[float] = typer.Option(None, "--width-mult", help="mobilenetv3 only (default 1.0)."),
    repeats: int = _repeats_option(),
    rounds: int = _rounds_option(),
    warmup: int = typer.Option(3, "--warmup", help="Untimed runs before timing."),
    calib_samples: int = typer.Option(4, "--calib-samples", help="Random subnets timed end to end to calibrate "
                                      "the overheads (besides the smallest and largest)."),
    seed: int = typer.Option(0, "--seed"),
) -> None:
    """Time every block/stem/head choice of the space on this device and write a lookup table."""
    from nas_cli.errors import UserError
    from nas_cli.runs import enable_compilation_cache
    from predictors.latency import make_latency_space, profile_steps, profile_table

    sp, options = make_latency_space(space, resolutions=resolution, in_channels=in_channels,
                                     num_classes=num_classes, width_mult=width_mult)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; pass a file name such as {out / 'latency.json'}")
    enable_compilation_cache()
    table = _progress("profiling", profile_steps(sp, calib_samples), lambda tick: profile_table(
        sp, batch=batch, repeats=repeats, warmup=warmup, calib_samples=calib_samples, seed=seed,
        rounds=rounds, options=options, progress=tick))
    table.save(out)
    d = table.data
    typer.echo(f"{len(d['entries'])} entries on {d['device']['kind']} (batch {batch}); per-piece call "
               f"{d['per_piece_ms']:.4f} ms, overhead {d['overhead_ms']:.4f} ms; wrote {out}")


def _space_for(path: Path, space, resolution, in_channels, num_classes, width_mult):
    from predictors.latency import file_options, make_latency_space

    return make_latency_space(space, resolutions=resolution, in_channels=in_channels, num_classes=num_classes,
                              width_mult=width_mult, defaults=file_options(path))


@latency_app.command("validate")
@user_errors
def validate(
    lut: Path = typer.Argument(..., help="A lookup table (`nas latency profile`) or learned model (`nas latency fit`)."),
    space: str = typer.Option(..., "--space", help=_SPACE_HELP),
    samples: int = typer.Option(20, "--samples", help="Random subnets to measure end to end (never the ones "
                                "`nas latency fit` draws with the same --seed)."),
    seed: int = typer.Option(0, "--seed"),
    repeats: int = _repeats_option(),
    rounds: int = _rounds_option(),
    resolution: List[int] = typer.Option([], "--resolution", help="Default: the file's."),
    in_channels: Optional[int] = typer.Option(None, "--in-channels", help="Default: the file's."),
    num_classes: Optional[int] = typer.Option(None, "--num-classes", help="Default: the file's."),
    width_mult: Optional[float] = typer.Option(None, "--width-mult", help="Default: the file's."),
    as_json: bool = typer.Option(False, "--json", help="Print {mape, kendall_tau, spearman, rmse, n, "
                                 "uncalibrated, device_speed, repeatability, ...} as JSON."),
) -> None:
    """Measure random subnets end to end and compare with the file's predictions (MAPE, Kendall tau).

    The file's reference subnets are timed beside the samples, and its predictions are scaled by how
    fast the device runs now against when the file was made (``device_speed``); the unscaled
    predictions' error is reported too (``uncalibrated``). Also reports the measurement's own
    repeatability: MAPE and tau between the medians of the even and the odd timing rounds, the error
    floor that no latency model can go below on this machine."""
    import numpy as np

    from nas_cli.errors import UserError
    from nas_cli.runs import enable_compilation_cache
    from predictors.latency import (
        VALIDATE_STREAM,
        calibrated_predictions,
        load_latency_model,
        references_of,
        repeatability,
        sample_archs,
        score,
        time_archs,
    )

    if samples < 2:
        raise UserError(f"--samples {samples}: need at least 2 subnets to rank")
    _check_timing(repeats, rounds)
    sp, _ = _space_for(lut, space, resolution, in_channels, num_classes, width_mult)
    model = load_latency_model(lut, sp)
    enable_compilation_cache()
    archs = sample_archs(sp, samples, seed, VALIDATE_STREAM)
    batch = model.batch
    ref_space, refs = references_of(model, sp)
    timed = _progress("measuring", samples, lambda tick: time_archs(
        sp, archs, batch=batch, repeats=repeats, rounds=rounds, progress=tick, references=refs,
        reference_space=ref_space))
    measured = [t["latency_ms"] for t in timed]
    levels = [t["level_ms"] for t in timed]
    ref = model.reference
    result = {**score(measured, calibrated_predictions(model, archs, levels)),
              "uncalibrated": score(measured, model.predict_many(archs)),
              # > 1: the device runs faster now than when the file was made
              "device_speed": float(ref["level_ms"]) / float(np.median(levels)) if ref else None,
              "samples": samples, "seed": seed, "batch": batch, "rounds": rounds, "repeats": repeats,
              "repeatability": repeatability(timed)}
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"{lut} on {samples} random subnets: {_fmt(result)}")
    if ref:
        typer.echo(f"(predictions scaled to the device's speed now: {result['device_speed']:.3f}x its speed when "
                   f"the file was made; unscaled: {_fmt(result['uncalibrated'])})")
    _echo_repeatability(result["repeatability"])


@latency_app.command("fit")
@user_errors
def fit(
    space: str = typer.Option(..., "--space", help=_SPACE_HELP),
    samples: int = typer.Option(..., "--samples", help="Random subnets to measure end to end and fit on."),
    out: Path = typer.Option(..., "--out", help="Where to write the learned model (JSON)."),
    lut: Optional[Path] = typer.Option(None, "--lut", help="A lookup table: its sum becomes a feature and the model "
                                       "learns its residual."),
    model: str = typer.Option("ridge", "--model", help="A registered predictor: ridge, rbf, gp, gbt, mlp, auto."),
    seed: int = typer.Option(0, "--seed"),
    repeats: int = _repeats_option(),
    rounds: int = _rounds_option(),
    batch: int = typer.Option(1, "--batch", help="Batch size to time at (the table's, when --lut is given)."),
    resolution: List[int] = typer.Option([], "--resolution", help="Default: the table's, else the space's."),
    in_channels: Optional[int] = typer.Option(None, "--in-channels"),
    num_classes: Optional[int] = typer.Option(None, "--num-classes"),
    width_mult: Optional[float] = typer.Option(None, "--width-mult"),
    as_json: bool = typer.Option(False, "--json", help="Print the training figures as JSON."),
) -> None:
    """Fit a latency predictor on end-to-end measurements of random subnets (optionally on a table's sum)."""
    from nas_cli.errors import UserError
    from nas_cli.runs import enable_compilation_cache
    from predictors.latency import (
        FIT_STREAM,
        LatencyTable,
        at_level,
        common_level,
        current_device,
        fit_latency_model,
        load_latency_model,
        make_latency_space,
        reference_archs,
        references_of,
        repeatability,
        sample_archs,
        score,
        time_archs,
    )

    if samples < 2:
        raise UserError(f"--samples {samples}: need at least 2 measured subnets to fit")
    _check_timing(repeats, rounds)
    table = None
    if lut is not None:
        sp, options = _space_for(lut, space, resolution, in_channels, num_classes, width_mult)
        table = load_latency_model(lut, sp)
        if not isinstance(table, LatencyTable):
            raise UserError(f"--lut {lut} is a learned model; pass a table written by `nas latency profile`")
        batch = table.batch
    else:
        sp, options = make_latency_space(space, resolutions=resolution, in_channels=in_channels,
                                         num_classes=num_classes, width_mult=width_mult)
    if out.is_dir():
        raise UserError(f"--out {out} is a directory; pass a file name such as {out / 'latency-model.json'}")
    enable_compilation_cache()
    archs = sample_archs(sp, samples, seed, FIT_STREAM)
    ref_space, refs = references_of(table, sp) if table is not None else (sp, reference_archs(sp))
    timed = _progress("measuring", samples, lambda tick: time_archs(
        sp, archs, batch=batch, repeats=repeats, rounds=rounds, progress=tick, references=refs,
        reference_space=ref_space))
    # every measurement at one device speed (the chunks were timed minutes apart)
    level = common_level(timed)
    measured = at_level(timed, level)
    reference = {"archs": [ref_space.encode(a) for a in refs], "level_ms": level}
    learned = fit_latency_model(sp, archs, measured, table=table, model=model, seed=seed,
                                meta={"options": options, "samples": samples, "seed": seed, "batch": batch,
                                      "reference": reference, "device": current_device()})
    report = {"train": score(measured, learned.predict_many(archs)), "model": model, "out": str(out),
              "repeatability": repeatability(timed)}
    if table is not None:
        report["table_train"] = score(measured, table.predict_many(archs) * learned.table_scale())
    learned.meta["train"] = report["train"]
    learned.save(out)
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"{model} on {samples} subnets (training fit): {_fmt(report['train'])}")
    if table is not None:
        typer.echo(f"table on the same subnets:            {_fmt(report['table_train'])}")
    _echo_repeatability(report["repeatability"])
    typer.echo(f"wrote {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(latency_app, name="latency")
