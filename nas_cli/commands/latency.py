"""``nas latency profile|validate|fit``: parse options, call one function of
predictors.latency.workflow, print what it returns."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import List, Optional

import typer

from nas_cli.commands._common import prepare_out, user_errors
from nas_cli.commands.help_texts import PREDICTORS, SUPERNET_SPACES

latency_app = typer.Typer(
    help="Profile a latency lookup table on this device, validate it end to end, fit a learned correction; "
    "probes, fit --timings and predict for a device timed elsewhere.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _space_help() -> str:
    return f"A supernet space: {', '.join(SUPERNET_SPACES)}."


def _fmt(m: dict) -> str:
    return f"MAPE {m['mape']:.1f}%  tau {m['kendall_tau']:.3f}  rho {m['spearman']:.3f}  n {m['n']}"


def _space_option():
    return typer.Option(..., "--space", help=_space_help())


def _rounds_option():
    return typer.Option(20, "--rounds", help="Interleaved timing rounds of --repeats runs each (the device's "
                        "speed moves between rounds; many short rounds average it out).")


def _repeats_option():
    return typer.Option(10, "--repeats", help="Timed runs per subnet (or piece) and round; the median is over all.")


def _runtime_option():
    return typer.Option("jax", "--runtime", help="What runs the subnets: jax (XLA on this JAX device) or "
                        "onnxruntime (the exported ONNX model in an onnxruntime CPU session; needs the 'onnx' extra) or "
                        "onnxruntime-int8 (that model statically quantized to int8 by onnxruntime).")


def _threads_option():
    return typer.Option(None, "--threads", help="onnxruntime intra-op threads (0: onnxruntime's own choice). "
                        "Recorded in the file.", show_default="1, or the file's for validate/fit --lut")


def _in_channels_option(default: str):
    return typer.Option(None, "--in-channels", help="Channels of the input images (1: grey, 3: colour).",
                        show_default=default)


def _num_classes_option(default: str):
    return typer.Option(None, "--num-classes", help="Classes of the classifier head.", show_default=default)


def _width_mult_option(default: str):
    return typer.Option(None, "--width-mult", help="Channel width multiplier; full spaces only, not their -tiny "
                        "variants.", show_default=default)


def _resolution_option(default: str):
    return typer.Option([], "--resolution", help="Input resolution (repeatable).", show_default=default)


@contextlib.contextmanager
def _progress_bar(label: str):
    """A ``progress(done, total)`` for the library: a redrawn line on a terminal, log lines otherwise,
    compile phases shown (nas_cli/commands/_progress.py)."""
    from nas_cli.commands._progress import StepProgress

    with StepProgress(label, item="measurement") as display:
        yield display


def _space_options(resolution, in_channels, num_classes, width_mult) -> dict:
    return {"resolutions": resolution or None, "in_channels": in_channels, "num_classes": num_classes,
            "width_mult": width_mult}


def _echo_repeatability(r: dict | None) -> None:
    if r is not None:
        typer.echo(f"measurement against itself (even vs odd rounds): MAPE {r['mape']:.1f}%  tau {r['kendall_tau']:.3f}")


def _check_timing(repeats: int, rounds: int) -> None:
    from nas_cli.errors import UserError

    if repeats < 1 or rounds < 1:
        raise UserError(f"--repeats {repeats} --rounds {rounds}: both must be at least 1")


def _check_out(out: Path, example: str) -> None:
    from nas_cli.errors import UserError

    if out.is_dir():
        raise UserError(f"--out {out} is a directory; pass a file name such as {out / example}")
    prepare_out(out, folder=False)


def _check_samples(samples: int, need: str) -> None:
    from nas_cli.errors import UserError

    if samples < 2:
        raise UserError(f"--samples {samples}: need at least 2 {need}")


@latency_app.command("profile")
@user_errors
def profile(
    space: str = _space_option(),
    out: Path = typer.Option(..., "--out", help="Where to write the lookup table (JSON)."),
    resolution: List[int] = _resolution_option("the space's"),
    batch: int = typer.Option(1, "--batch", help="Batch size to time at."),
    in_channels: Optional[int] = _in_channels_option("the space's: 1 for -tiny, else 3"),
    num_classes: Optional[int] = _num_classes_option("the space's: 10"),
    width_mult: Optional[float] = _width_mult_option("1.0"),
    repeats: int = _repeats_option(),
    rounds: int = _rounds_option(),
    warmup: int = typer.Option(3, "--warmup", help="Untimed runs before timing."),
    calib_samples: int = typer.Option(4, "--calib-samples", help="Random subnets timed end to end to calibrate "
                                      "the overheads (besides the smallest and largest)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random calibration subnets."),
    runtime: str = _runtime_option(),
    threads: Optional[int] = _threads_option(),
) -> None:
    """Time every piece (stem, block, head choice) of the space on this device and write a lookup table."""
    from nas_cli.runs import enable_compilation_cache
    from predictors.latency import profile_latency

    _check_out(out, "latency.json")
    enable_compilation_cache()
    with _progress_bar("profiling") as progress:
        table = profile_latency(space, out, space_options=_space_options(resolution, in_channels, num_classes,
                                                                         width_mult),
                                batch=batch, repeats=repeats, rounds=rounds, warmup=warmup,
                                calib_samples=calib_samples, seed=seed, progress=progress, runtime=runtime,
                                threads=threads)
    d = table.data
    typer.echo(f"{len(d['entries'])} entries on {d['device']['kind']} in {d['runtime']['name']} (batch {batch}); "
               f"per-piece call {d['per_piece_ms']:.4f} ms, fixed term {d['overhead_ms']:.4f} ms; wrote {out}")
    quality = d.get("quality") or {}
    if quality.get("overhead_dominated"):
        typer.echo(f"warning: {out} is overhead-dominated: its calibration subnets measure "
                   f"{quality['spread_measured']:.0%} apart end to end but predict only {quality['spread_predicted']:.0%} "
                   f"apart (pieces carry {quality['pieces_share']:.0%} of a prediction; timing each piece alone "
                   "measures mostly the cost of a call): a search on it would give a flat front. Search without "
                   "--latency-table (end-to-end measurement), or fit an end-to-end model: `nas latency fit`", err=True)


@latency_app.command("validate")
@user_errors
def validate(
    lut: Path = typer.Argument(..., help="A lookup table (`nas latency profile`) or learned model (`nas latency fit`)."),
    space: str = _space_option(),
    samples: int = typer.Option(20, "--samples", help="Random subnets to measure end to end (never the ones "
                                "`nas latency fit` draws with the same --seed)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random subnets."),
    repeats: int = _repeats_option(),
    rounds: int = _rounds_option(),
    resolution: List[int] = _resolution_option("the file's"),
    in_channels: Optional[int] = _in_channels_option("the file's"),
    num_classes: Optional[int] = _num_classes_option("the file's"),
    width_mult: Optional[float] = _width_mult_option("the file's"),
    as_json: bool = typer.Option(False, "--json", help="Print {mape, kendall_tau, spearman, rmse, n, "
                                 "uncalibrated, device_speed, repeatability, ...} as JSON."),
    runtime: str = _runtime_option(),
    threads: Optional[int] = _threads_option(),
) -> None:
    """Measure random subnets end to end and compare with the file's predictions (MAPE, Kendall tau).

    The file's reference subnets are timed beside the samples, and its predictions are scaled by how
    fast the device runs now against when the file was made (``device_speed``); the unscaled
    predictions' error is reported too (``uncalibrated``). Also reports the measurement's own
    repeatability: MAPE and tau between the medians of the even and the odd timing rounds, the error
    floor that no latency model can go below on this machine."""
    from nas_cli.runs import enable_compilation_cache
    from predictors.latency import validate_latency

    _check_samples(samples, "subnets to rank")
    _check_timing(repeats, rounds)
    enable_compilation_cache()
    with _progress_bar("measuring") as progress:
        result = validate_latency(lut, space, space_options=_space_options(resolution, in_channels, num_classes,
                                                                           width_mult),
                                  samples=samples, seed=seed, repeats=repeats, rounds=rounds, progress=progress,
                                  runtime=runtime, threads=threads)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"{lut} on {samples} random subnets: {_fmt(result)}")
    if result["device_speed"] is not None:
        typer.echo(f"(predictions scaled to the device's speed now: {result['device_speed']:.3f}x its speed when "
                   f"the file was made; unscaled: {_fmt(result['uncalibrated'])})")
    _echo_repeatability(result["repeatability"])


@latency_app.command("fit")
@user_errors
def fit(
    space: str = _space_option(),
    samples: Optional[int] = typer.Option(None, "--samples", help="Random subnets to measure end to end and fit "
                                          "on (not with --timings)."),
    out: Path = typer.Option(..., "--out", help="Where to write the learned model (JSON)."),
    lut: Optional[Path] = typer.Option(None, "--lut", help="A lookup table: its sum becomes a feature and the model "
                                       "learns its residual."),
    model: str = typer.Option("ridge", "--model", help=f"A registered predictor: {', '.join(PREDICTORS)}."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random subnets."),
    repeats: int = _repeats_option(),
    rounds: int = _rounds_option(),
    batch: int = typer.Option(1, "--batch", help="Batch size to time at (the table's, when --lut is given)."),
    resolution: List[int] = _resolution_option("the table's, else the space's"),
    in_channels: Optional[int] = _in_channels_option("the table's, else the space's"),
    num_classes: Optional[int] = _num_classes_option("the table's, else the space's"),
    width_mult: Optional[float] = _width_mult_option("the table's, else 1.0"),
    as_json: bool = typer.Option(False, "--json", help="Print the training figures as JSON."),
    runtime: str = _runtime_option(),
    threads: Optional[int] = _threads_option(),
    timings: Optional[Path] = typer.Option(None, "--timings", help="A CSV of arch,latency_ms timed anywhere (e.g. "
                                           "the probes of `nas latency probes` on a phone): fit the few-shot model "
                                           "of that device on them; nothing is timed here.", show_default=False),
    prior: List[str] = typer.Option([], "--prior", help="With --timings (repeatable): what is known of another "
                                    "device, a latency file (`nas latency profile|fit`) or a benchmark table's "
                                    "column as TABLE.csv:COLUMN.", show_default=False),
    device_name: Optional[str] = typer.Option(None, "--device-name", help="With --timings: the device's name, "
                                              "recorded in the file.", show_default=False),
) -> None:
    """Fit a latency predictor on end-to-end measurements of random subnets (optionally on a table's sum),
    or, with --timings, on timings taken elsewhere, transferring from --prior files of other devices."""
    from nas_cli.runs import enable_compilation_cache
    from predictors.latency import fit_latency

    if timings is not None:
        return _fit_timings(space, timings, out, prior, samples, lut, model, seed, batch, runtime, threads,
                            device_name, _space_options(resolution, in_channels, num_classes, width_mult), as_json)
    if prior or device_name:
        from nas_cli.errors import UserError

        raise UserError("--prior and --device-name go with --timings (a fit on timings taken elsewhere)")
    if samples is None:
        from nas_cli.errors import UserError

        raise UserError("nas latency fit needs --samples N (subnets to time here) or --timings T.csv (timed elsewhere)")
    _check_samples(samples, "measured subnets to fit")
    _check_timing(repeats, rounds)
    _check_out(out, "latency-model.json")
    enable_compilation_cache()
    with _progress_bar("measuring") as progress:
        report = fit_latency(space, out, samples=samples, lut=lut, model=model, batch=batch, seed=seed,
                             repeats=repeats, rounds=rounds, progress=progress, runtime=runtime, threads=threads,
                             space_options=_space_options(resolution, in_channels, num_classes, width_mult))
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"{model} on {samples} subnets (training fit): {_fmt(report['train'])}")
    if "table_train" in report:
        typer.echo(f"table on the same subnets:            {_fmt(report['table_train'])}")
    _echo_repeatability(report["repeatability"])
    typer.echo(f"wrote {out}")


def _fit_timings(space, timings, out, prior, samples, lut, model, seed, batch, runtime, threads, device_name,
                 space_options, as_json) -> None:
    """``nas latency fit --timings``: nothing is timed; the options that time things are refused."""
    from nas_cli.errors import UserError
    from predictors.latency import fit_timings

    clash = [f for f, v in (("--samples", samples), ("--lut", lut), ("--threads", threads)) if v is not None]
    if model != "ridge":
        clash.append("--model")
    if clash:
        raise UserError(f"{', '.join(clash)} time subnets here or choose their model; with --timings the model is "
                        "chosen by cross-validation on the timings: drop them")
    _check_out(out, "device-latency.json")
    report = fit_timings(space, timings, out, priors=prior, space_options=space_options, seed=seed,
                         runtime=None if runtime == "jax" else runtime, device=device_name, batch=batch)
    for note in report["warnings"]:
        typer.echo(f"warning: {note}", err=True)
    if as_json:
        typer.echo(json.dumps(report))
        return
    typer.echo(f"{report['model']} chosen by leave-one-out on {report['n']} timings (log-latency RMSE "
               f"{report['loo_log_rmse']:.3f}); training fit: {_fmt(report['train'])}; wrote {out}")


@latency_app.command("probes")
@user_errors
def probes(
    space: str = typer.Option(..., "--space", help="A supernet space, or nas-bench-201."),
    n: int = typer.Option(10, "--n", help="How many probe architectures.", show_default=True),
    seed: int = typer.Option(0, "--seed", help="Seed of the choice within each cost stratum: the same seed, "
                             "space and priors give the same probes.", show_default=True),
    out: Path = typer.Option(..., "--out", help="A folder: probes.csv (column arch) and, for a supernet space, "
                             "one ONNX model per probe named by its row (probe-00.onnx ...)."),
    prior: List[str] = typer.Option([], "--prior", help="Latency files or TABLE.csv:COLUMN of other devices "
                                    "(repeatable): probes are spread over their predicted latency (else "
                                    "over FLOPs).", show_default=False),
    quantize: Optional[str] = typer.Option(None, "--quantize", help="int8: also write each probe's int8 model "
                                           "(probe-00.int8.onnx, onnxruntime static quantization).",
                                           show_default=False),
    resolution: List[int] = typer.Option([], "--resolution", help="Input resolution (repeatable; default: the "
                                         "space's).", show_default=False),
    in_channels: Optional[int] = _in_channels_option("the space's: 1 for -tiny, else 3"),
    num_classes: Optional[int] = _num_classes_option("the space's: 10"),
    width_mult: Optional[float] = _width_mult_option("1.0"),
) -> None:
    """Choose N informative architectures to time on a device nas cannot run on (spread over the space's
    cost range), and write them (with ONNX models for a supernet space) for the device's own tool."""
    from nas_cli.errors import UserError
    from predictors.latency import probe_latency

    if quantize not in (None, "int8"):
        raise UserError(f"--quantize {quantize}: the only choice is int8")
    prepare_out(out, folder=True)
    report = probe_latency(space, out, n=n, seed=seed, priors=prior, quantize=quantize,
                           space_options=_space_options(resolution, in_channels, num_classes, width_mult))
    typer.echo(f"{n} probes (stratified by {report['stratified_by']}) in {report['csv']}"
               + (f", {len(report['models'])} ONNX models in {out}" if report["models"] else "")
               + "; time them on the device, add a column latency_ms, then `nas latency fit --timings`")


@latency_app.command("predict")
@user_errors
def predict(
    lut: Path = typer.Argument(..., help="A latency file: a table, a learned model, or a device's few-shot model."),
    archs: Path = typer.Option(..., "--archs", help="A CSV with a column arch."),
    out: Path = typer.Option(..., "--out", help="Where to write arch,latency_ms (CSV)."),
) -> None:
    """Predict the latency (ms) of every architecture of a CSV with a latency file."""
    from predictors.latency import predict_latency

    _check_out(out, "predicted.csv")
    report = predict_latency(lut, archs, out)
    typer.echo(f"predicted {report['n']} architectures of {report['space']}; wrote {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(latency_app, name="latency")
