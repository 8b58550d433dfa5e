"""What each ``nas latency`` command does, as one library call: :func:`profile_latency`,
:func:`validate_latency`, :func:`fit_latency`.

Each takes the space by name with its options (``space_options``: ``resolutions``, ``in_channels``,
``num_classes``, ``width_mult``; unset ones come from the latency file given, then from the space),
writes or reads the files, and returns what the command prints. ``progress(done, total)`` is called
as measurements finish (first with ``done = 0``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from predictors.latency.errors import LatencyError
from predictors.latency.fileformat import check_space_name, load_latency_model, read_latency_file
from predictors.latency.learned import fit_latency_model
from predictors.latency.measure import (
    FIT_STREAM,
    VALIDATE_STREAM,
    at_level,
    calibrated_predictions,
    common_level,
    reference_archs,
    references_of,
    repeatability,
    sample_archs,
    score,
    time_archs,
)
from predictors.latency.runtime import DEFAULT_RUNTIME, get_runtime, runtime_of
from predictors.latency.spaces import has_latency_pieces, make_latency_space
from predictors.latency.table import LatencyTable, profile_steps, profile_table

Progress = Callable[[int, int], None]


def _ticker(progress: Progress | None, total: int) -> Callable[[int], None]:
    """The ``tick(n)`` the measurements call, reporting ``progress(done, total)``."""
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    tick(0)
    return tick


def _check_timing(repeats: int, rounds: int) -> None:
    if repeats < 1 or rounds < 1:
        raise LatencyError(f"repeats {repeats}, rounds {rounds}: both must be at least 1")


def _file_and_space(path, space: str, space_options: dict | None):
    """(the file's data, the space, its recorded options): the space ``space`` with the options
    given, else the file's; a file made for another space is refused before the space is built."""
    source = f"latency file {path}"
    data = read_latency_file(path)
    check_space_name(data.get("space", {}), space, source)
    sp, options = make_latency_space(space, **(space_options or {}), defaults=data.get("options") or {})
    return data, sp, options


def _runtime_for(runtime, threads: int | None, data: dict):
    """``runtime`` configured with ``threads``, else with the thread count the file ``data`` was
    measured with, so a file is validated under its own session options."""
    recorded = ((data.get("runtime") or {}).get("session_options") or {}).get("intra_op_num_threads")
    rt = get_runtime(runtime)
    if threads is None and recorded is not None and rt.describe()["name"] == runtime_of(data):
        threads = int(recorded)
    return rt.configure(threads=threads)


def profile_latency(space: str, out, *, space_options: dict | None = None, batch: int = 1, repeats: int = 10,
                    rounds: int = 20, warmup: int = 3, calib_samples: int = 4, seed: int = 0,
                    progress: Progress | None = None, runtime: str = DEFAULT_RUNTIME,
                    threads: int | None = None) -> LatencyTable:
    """``nas latency profile``: times every piece of ``space`` and writes the lookup table to ``out``
    (``runtime``: the runtime's name; ``threads``: its thread count where it takes one)."""
    sp, options = make_latency_space(space, **(space_options or {}))
    runtime = get_runtime(runtime, threads=threads)
    tick = _ticker(progress, profile_steps(sp, calib_samples))
    table = profile_table(sp, batch=batch, repeats=repeats, warmup=warmup, calib_samples=calib_samples, seed=seed,
                          rounds=rounds, options=options, progress=tick, runtime=runtime)
    table.save(out)
    return table


def validate_latency(path, space: str, *, space_options: dict | None = None, samples: int = 20, seed: int = 0,
                     repeats: int = 10, rounds: int = 20, progress: Progress | None = None,
                     runtime: str = DEFAULT_RUNTIME, threads: int | None = None) -> dict:
    """``nas latency validate``: measures ``samples`` random subnets end to end (beside the file's
    reference subnets) and scores the file's predictions, scaled to the device's speed now.

    Returns:
      ``{mape, kendall_tau, spearman, rmse, n, uncalibrated, device_speed, samples, seed, batch,
      rounds, repeats, repeatability}``; ``device_speed`` > 1: the device runs faster now than
      when the file was made (None for a file without a reference level).
    """
    if samples < 2:
        raise LatencyError(f"samples {samples}: need at least 2 subnets to rank")
    _check_timing(repeats, rounds)
    data, sp, _ = _file_and_space(path, space, space_options)
    rt = _runtime_for(runtime, threads, data)
    model = load_latency_model(path, sp, data, runtime=rt.describe()["name"])
    archs = sample_archs(sp, samples, seed, VALIDATE_STREAM)
    batch = model.batch
    ref_space, refs = references_of(model, sp)
    timed = time_archs(sp, archs, batch=batch, repeats=repeats, rounds=rounds, progress=_ticker(progress, samples),
                       references=refs, reference_space=ref_space, runtime=rt)
    measured = [t["latency_ms"] for t in timed]
    levels = [t["level_ms"] for t in timed]
    ref = model.reference
    predicted = model.predict_many(archs)
    return {**score(measured, calibrated_predictions(model, archs, levels, predicted)),
            "uncalibrated": score(measured, predicted),
            "device_speed": float(ref["level_ms"]) / float(np.median(levels)) if ref else None,
            "samples": samples, "seed": seed, "batch": batch, "rounds": rounds, "repeats": repeats,
            "runtime": rt.describe(), "repeatability": repeatability(timed)}


def fit_latency(space: str, out, *, samples: int, lut=None, model: str = "ridge", space_options: dict | None = None,
                batch: int = 1, seed: int = 0, repeats: int = 10, rounds: int = 20, progress: Progress | None = None,
                runtime: str = DEFAULT_RUNTIME, threads: int | None = None) -> dict:
    """``nas latency fit``: measures ``samples`` random subnets end to end, fits ``model`` on them
    (on the residual of the table ``lut`` when given, at the table's batch size) and writes it to ``out``.

    Returns:
      ``{train, model, out, repeatability}`` (the fit on its own training subnets), with
      ``table_train`` (the table on the same subnets) when a table is given.
    """
    if samples < 2:
        raise LatencyError(f"samples {samples}: need at least 2 measured subnets to fit")
    _check_timing(repeats, rounds)
    table = None
    if lut is not None:
        data, sp, options = _file_and_space(lut, space, space_options)
        rt = _runtime_for(runtime, threads, data)
        table = load_latency_model(lut, sp, data, runtime=rt.describe()["name"])
        if not isinstance(table, LatencyTable):
            raise LatencyError(f"{lut} is a learned latency model; fitting on a table's residual needs a table "
                               "written by `nas latency profile`")
        batch = table.batch
    else:
        sp, options = make_latency_space(space, **(space_options or {}))
        rt = get_runtime(runtime, threads=threads)
    runtime = rt
    archs = sample_archs(sp, samples, seed, FIT_STREAM)
    ref_space, refs = references_of(table, sp) if table is not None else (sp, reference_archs(sp))
    timed = time_archs(sp, archs, batch=batch, repeats=repeats, rounds=rounds, progress=_ticker(progress, samples),
                       references=refs, reference_space=ref_space, runtime=runtime)
    # every measurement at one device speed (the chunks were timed minutes apart)
    level = common_level(timed)
    measured = at_level(timed, level)
    reference = {"archs": [ref_space.encode(a) for a in refs], "level_ms": level}
    learned = fit_latency_model(sp, archs, measured, table=table, model=model, seed=seed,
                                meta={"options": options, "samples": samples, "seed": seed, "batch": batch,
                                      "reference": reference, "device": rt.device(),
                                      "runtime": rt.describe()})
    report = {"train": score(measured, learned.predict_many(archs)), "model": model, "out": str(out),
              "repeatability": repeatability(timed)}
    if table is not None:
        report["table_train"] = score(measured, table.predict_many(archs) * learned.table_scale())
    learned.meta["train"] = report["train"]
    learned.save(Path(out))
    return report


# --- a device timed elsewhere (few-shot) ----------------------------------------------------------

def _fewshot_space(space: str, space_options: dict | None, defaults: dict | None = None):
    """(space, options): a supernet space with its options (:func:`make_latency_space`), or a
    tabular space (nas-bench-201), which takes none."""
    from search_spaces import get_space, supernet_space_names  # noqa: PLC0415

    if space in supernet_space_names():
        return make_latency_space(space, **(space_options or {}), defaults=defaults)
    given = {k: v for k, v in (space_options or {}).items() if v is not None}
    if given:
        raise LatencyError(f"space {space!r} is tabular; it takes no {', '.join(sorted(given))}")
    return get_space(space), {}


def _prior_defaults(priors) -> dict:
    """The space options recorded in the first latency-file prior (a column records none)."""
    for spec in priors:
        head, sep, _ = spec.rpartition(":")
        if not (sep and head.lower().endswith(".csv")) and not spec.lower().endswith(".csv"):
            return read_latency_file(spec).get("options") or {}
    return {}


def probe_latency(space: str, out_dir, *, n: int, seed: int = 0, priors=(), space_options: dict | None = None,
                  quantize: str | None = None, calib_images: int = 16) -> dict:
    """``nas latency probes``: chooses ``n`` probes (:func:`predictors.latency.fewshot.choose_probes`)
    and writes ``out_dir/probes.csv``; for a supernet space also one ONNX model per probe (seeded
    random weights, batch 1), and with ``quantize="int8"`` its int8 form (:func:`ort.quantize_int8`,
    calibrated on ``calib_images`` seeded random images: latency does not depend on the values).

    Returns:
      ``{"probes", "stratified_by", "csv", "models"}``.
    """
    from predictors.latency.fewshot import choose_probes, load_prior, probe_name, write_probes  # noqa: PLC0415

    if quantize not in (None, "int8"):
        raise LatencyError(f"quantize {quantize!r}: the only quantization is 'int8'")
    sp, options = _fewshot_space(space, space_options, _prior_defaults(priors))
    loaded = [load_prior(p, sp) for p in priors]
    archs, by = choose_probes(sp, n, seed, loaded)
    files, blobs = [], {}
    if has_latency_pieces(sp):
        from predictors.latency.ort import quantize_int8, random_weights, require_onnx, to_onnx  # noqa: PLC0415

        require_onnx()
        for i, arch in enumerate(archs):
            name = probe_name(i, len(archs))
            shape = (1, arch.resolution, arch.resolution, sp.in_channels)
            proto = to_onnx(random_weights(sp, arch, seed), shape, name=name)
            row = {"model": f"{name}.onnx"}
            blobs[row["model"]] = proto.SerializeToString()
            if quantize == "int8":
                row["model_int8"] = f"{name}.int8.onnx"
                images = np.random.default_rng([seed, i]).normal(size=(calib_images, *shape[1:])).astype(np.float32)
                blobs[row["model_int8"]] = quantize_int8(blobs[row["model"]], images)
            files.append(row)
    path = write_probes(sp, archs, out_dir, files=files, blobs=blobs, priors=loaded)
    return {"probes": [sp.encode(a) for a in archs], "stratified_by": by, "csv": str(path),
            "models": sorted(blobs), "options": options}


def fit_timings(space: str, timings, out, *, priors=(), space_options: dict | None = None, seed: int = 0,
                runtime: str | None = None, device: str | None = None, batch: int = 1) -> dict:
    """``nas latency fit --timings``: fits the few-shot model of a device on ``timings`` (a CSV of
    ``arch,latency_ms`` measured anywhere) and ``priors`` (latency files or ``TABLE.csv:COLUMN``) and
    writes it to ``out``; nothing is timed here. ``runtime``: what timed them, when it is a runtime
    of this nas (else the file says ``external``); ``device``: a name recorded in the file.

    Returns:
      ``{"model", "loo_log_rmse", "train", "n", "warnings", "out", "priors"}``.
    """
    from predictors.latency.fewshot import fit_fewshot_model, load_prior, read_timings  # noqa: PLC0415

    sp, options = _fewshot_space(space, space_options, _prior_defaults(priors))
    loaded = [load_prior(p, sp) for p in priors]
    archs, y, notes = read_timings(timings, sp)
    rt = get_runtime(runtime).describe() if runtime is not None else None
    dev = {"platform": "external", "kind": device} if device else None
    model = fit_fewshot_model(sp, archs, y, loaded, seed=seed, options=options, runtime=rt, device=dev, batch=batch)
    best = min(model.data["cross_validation"], key=lambda s: s["loo_log_rmse"])
    report = {"model": model.params["model"], "loo_log_rmse": best["loo_log_rmse"],
              "train": score(y, model.predict_many(archs)), "n": len(archs), "warnings": notes, "out": str(out),
              "left_out": len(model.data["left_out"]),
              "priors": list(priors)}
    for o in model.data["left_out"]:
        notes.append(f"timings {timings}: arch {o['arch']} timed {o['latency_ms']:g} ms, but the other timings "
                     f"predict {o['predicted_ms']:.3g} ms; left out of the fit (check that timing)")
    model.data["train"] = report["train"]
    model.save(Path(out))
    return report


def predict_latency(path, archs_csv, out) -> dict:
    """``nas latency predict``: the latency file ``path``'s prediction (ms) for every row of
    ``archs_csv`` (column ``arch``), written to ``out`` as ``arch,latency_ms``.

    Returns:
      ``{"n", "out", "space", "format"}``.
    """
    from predictors.files import atomic_write_text  # noqa: PLC0415
    from predictors.latency.fewshot import read_archs  # noqa: PLC0415

    data = read_latency_file(path)
    name = (data.get("space") or {}).get("name")
    if not isinstance(name, str):
        raise LatencyError(f"latency file {path} records no space")
    sp, _ = _fewshot_space(name, None, data.get("options") or {})
    model = load_latency_model(path, sp, data)
    archs = read_archs(archs_csv, sp)
    predicted = model.predict_many(archs) if archs else []
    lines = ["arch,latency_ms"] + [f"{sp.encode(a)},{float(ms):.6g}" for a, ms in zip(archs, predicted)]
    atomic_write_text(out, "\n".join(lines) + "\n")
    return {"n": len(archs), "out": str(out), "space": name, "format": data["format"]}
