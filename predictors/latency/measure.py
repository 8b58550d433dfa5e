"""Measuring subnets end to end at one device speed: reference subnets, levels, repeatability,
the random subnets that fits and validations draw, and the scores.

**The device's speed drifts; the references measure it.** On a shared machine (and on any laptop
with turbo and thermal limits) the same subnet's latency moves by 20-40% between two processes a
few minutes apart, and between timing rounds of one process, while the *ratios* between subnets
stay put (bench/RESULTS.md). So three fixed reference subnets (the smallest, a middle and the
largest, at the largest resolution) are timed in every round of every chunk, and the geometric mean
of their medians, the chunk's *level*, says how fast the device ran while the chunk was timed. A
table or learned model stores its measurements at one level (``reference.level_ms``, the median
over its chunks), and ``nas latency validate`` scales its predictions by the level it measures
now before comparing (reporting the uncalibrated error too)::

    calibrated(arch) = predict(arch) * level_now / reference.level_ms
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from predictors.latency.runtime import DEFAULT_RUNTIME, get_runtime
from predictors.latency.spaces import make_latency_space
from predictors.latency.timing import Progress, compile_subnet, level_of, time_chunked
from predictors.metrics import all_metrics
from search_spaces.errors import ArchError

#: the random streams of latency sampling: `nas latency fit` and `validate` draw disjoint sets of
#: subnets even with the same seed, so a model is never validated on its own training subnets
FIT_STREAM, VALIDATE_STREAM = 0x1A7F, 0x7A11


def reference_archs(space) -> list:
    """The subnets whose latency measures the device's current speed: the smallest, a middle and
    the largest, at the space's largest resolution (another space's: its smallest and largest)."""
    if not hasattr(space, "at_resolution"):
        return [space.smallest(), space.largest()]
    r = max(space.resolutions)
    return [space.at_resolution(a, r) for a in (space.smallest(), space.middle(), space.largest())]


def subnet_makers(space, archs: Sequence, batch: int, runtime: str = DEFAULT_RUNTIME) -> list[Callable]:
    """A program maker per arch (its static subnet, compiled when its chunk is timed)."""
    return [lambda a=a: compile_subnet(space, a, batch, runtime) for a in archs]


def time_archs(space, archs: Sequence, *, batch: int = 1, repeats: int = 10, warmup: int = 3, rounds: int = 20,
               progress: Progress | None = None, references: Sequence = (), reference_space=None,
               runtime: str = DEFAULT_RUNTIME) -> list[dict]:
    """``{"latency_ms", "iqr_ms", "repeats", "halves_ms"}`` of each arch's static subnet end to end,
    timed interleaved in chunks (:func:`predictors.latency.timing.time_chunked`); ``progress`` gets
    each chunk's size. With ``references`` (archs of ``reference_space``, default ``space``; e.g.
    :func:`reference_archs`), each result has ``level_ms`` too."""
    return time_chunked(subnet_makers(space, archs, batch, runtime), repeats=repeats, warmup=warmup, rounds=rounds,
                        progress=progress, runtime=runtime,
                        references=subnet_makers(reference_space or space, references, batch, runtime))


def at_level(timed: Sequence[dict], level: float) -> np.ndarray:
    """Each program's median rescaled from its chunk's level to ``level``: the latency it would
    have had with the device at that speed."""
    return np.asarray([t["latency_ms"] * level / t["level_ms"] for t in timed], np.float64)


def common_level(timed: Sequence[dict]) -> float:
    """The median of the chunks' levels: the one level a table or model records."""
    return float(np.median([t["level_ms"] for t in timed]))


def measure_archs(space, archs: Sequence, *, batch: int = 1, repeats: int = 10, warmup: int = 3, rounds: int = 20,
                  progress: Progress | None = None, references: Sequence = (),
                  runtime: str = DEFAULT_RUNTIME) -> np.ndarray:
    """End-to-end median latency (ms) of each arch's static subnet (:func:`time_archs`).

    With ``references`` (e.g. :func:`reference_archs`), every latency is put at one device speed,
    the median level of the chunks, so archs timed minutes apart are comparable."""
    timed = time_archs(space, archs, batch=batch, repeats=repeats, warmup=warmup, rounds=rounds, progress=progress,
                       references=references, runtime=runtime)
    if references:
        return at_level(timed, common_level(timed))
    return np.asarray([t["latency_ms"] for t in timed], np.float64)


def measure_level(space, archs: Sequence, *, batch: int = 1, repeats: int = 10, warmup: int = 3,
                  rounds: int = 20, runtime: str = DEFAULT_RUNTIME) -> float:
    """The device's level now: ``archs`` (reference subnets) timed interleaved, :func:`level_of`."""
    programs = [compile_subnet(space, a, batch, runtime) for a in archs]
    return level_of(get_runtime(runtime).time(programs, repeats=repeats, warmup=warmup, rounds=rounds))


def repeatability(timed: Sequence[dict]) -> dict | None:
    """How well the measurement agrees with itself: MAPE and Kendall tau between the even and the
    odd rounds' medians of the same programs (each half has half the runs, so the full
    measurement is somewhat steadier than this says). None with fewer than two rounds."""
    if not timed or "halves_ms" not in timed[0]:
        return None
    a, b = (np.asarray([t["halves_ms"][h] for t in timed]) for h in (0, 1))
    agree = score(a, b)
    return {"mape": agree["mape"], "kendall_tau": agree["kendall_tau"], "n": agree["n"]}


def sample_archs(space, n: int, seed: int, stream: int | None = None) -> list:
    """``n`` random subnets (uniform genomes), deterministic per (seed, stream)."""
    rng = np.random.default_rng(seed if stream is None else [seed, stream])
    return [space.sample(rng) for _ in range(n)]


def references_of(model, space) -> tuple:
    """(space, archs): the reference subnets a table or model was measured against (else
    ``space``'s own, :func:`reference_archs`) and the space to build them in."""
    if not model.reference:
        return space, reference_archs(space)
    ref_space = reference_space(model, space)
    return ref_space, [ref_space.decode(a) for a in model.reference["archs"]]


def reference_space(model, space):
    """The space to build a file's reference subnets in: ``space``, or, where the file covers a
    resolution ``space`` does not use (check_space allows that), the file's own space at the
    references' resolutions."""
    archs = model.reference["archs"] if model.reference else []
    try:
        for a in archs:
            space.decode(a)
        return space
    except ArchError:
        pass  # a resolution the space does not use: read the references in the file's own space
    made_in = make_latency_space(space.name, defaults=model.options)[0]
    resolutions = sorted({made_in.decode(a).resolution for a in archs})
    return make_latency_space(space.name, resolutions=resolutions, defaults=model.options)[0]


def calibrated_predictions(model, archs: Sequence, levels, predicted=None) -> np.ndarray:
    """``model``'s predictions scaled from its recorded level to ``levels`` (each arch's chunk
    level, measured now); unscaled for a model that records no level. ``predicted``: the model's
    predictions of ``archs`` when the caller has them already."""
    predicted = model.predict_many(archs) if predicted is None else np.asarray(predicted)
    ref = model.reference
    if not ref:
        return predicted
    return predicted * np.asarray(levels, np.float64) / float(ref["level_ms"])


def mape(measured, predicted) -> float:
    """Mean absolute percentage error, in percent."""
    a, b = np.asarray(measured, np.float64), np.asarray(predicted, np.float64)
    return float(np.mean(np.abs(b - a) / a) * 100.0)


def score(measured, predicted) -> dict:
    """``{"mape", "kendall_tau", "spearman", "rmse", "n"}`` of predictions against measurements."""
    return {"mape": mape(measured, predicted), **all_metrics(measured, predicted)}


# --- one protocol per reported latency (issue 34) ------------------------------------------------


def protocol_record(runtime=DEFAULT_RUNTIME, *, source: str = "measured", batch: int = 1, rounds: int, repeats: int,
                    references: Sequence[str] | None = None, level_ms: float | None = None, **extra) -> dict:
    """What a reported latency is, as the files record it (pareto.json's ``latency_measurement``,
    subnet.json's ``latency_protocol``, a table's ``protocol``): its ``source`` ("measured" end to end
    here, "table" for a latency file's estimate), the runtime (name, version, session options), the
    device, the batch, the timing (``rounds`` interleaved rounds of ``repeats`` runs) and the device
    speed it is put at: ``level_ms`` of the ``references`` (reference subnets' geometric-mean
    latency), None when the figures are as timed."""
    rt = get_runtime(runtime)
    return {"source": source, "runtime": rt.describe(), "device": rt.device(), "batch": int(batch),
            "rounds": int(rounds), "repeats": int(repeats),
            "references": list(references) if references is not None else None,
            "level_ms": None if level_ms is None else float(level_ms), **extra}


def runtime_for(protocol: dict):
    """The runtime a protocol record names, with the thread count it records (where it has one)."""
    described = protocol.get("runtime") or {}
    threads = (described.get("session_options") or {}).get("intra_op_num_threads")
    return get_runtime(described.get("name", DEFAULT_RUNTIME), threads=threads)


def measure_as(space, archs: Sequence, protocol: dict) -> list[dict]:
    """Each of ``archs`` timed end to end under ``protocol`` (a :func:`protocol_record`: runtime,
    threads, batch, rounds x repeats, interleaved beside its reference subnets), put at its level
    where the protocol has one and was measured on this kind of device, so the figures compare with
    the ones the protocol's owner (a search, a table) reported.

    Returns per arch:
      ``{"latency_ms"`` (at the protocol's level, else as timed), ``"measured_ms"`` (as timed now),
      ``"iqr_ms"``, ``"level_now_ms"``, ``"protocol"`` (the record of this measurement)``}``.
    """
    rt = runtime_for(protocol)
    try:
        refs = [space.decode(a) for a in protocol.get("references") or []]
    except ArchError:
        refs = []  # references of resolutions this space does not use: time beside its own
    if not refs:
        refs = reference_archs(space)
    batch, rounds = int(protocol.get("batch") or 1), int(protocol.get("rounds") or 20)
    repeats = int(protocol.get("repeats") or 10)
    timed = time_archs(space, list(archs), batch=batch, repeats=repeats, rounds=rounds, references=refs, runtime=rt)
    level = protocol.get("level_ms")
    same_kind = (protocol.get("device") or {}).get("kind") in (None, rt.device()["kind"])
    names = [space.encode(a) for a in refs]
    put_at = level is not None and same_kind and names == list(protocol.get("references") or [])
    record = protocol_record(rt, batch=batch, rounds=rounds, repeats=repeats, references=names,
                             level_ms=float(level) if put_at else None)
    return [{"latency_ms": float(t["latency_ms"] * level / t["level_ms"] if put_at else t["latency_ms"]),
             "measured_ms": float(t["latency_ms"]), "iqr_ms": float(t["iqr_ms"]),
             "level_now_ms": float(t["level_ms"]), "protocol": record} for t in timed]
