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
from predictors.latency.spaces import make_latency_space
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
