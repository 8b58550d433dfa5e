"""The measured lookup table (``nas latency profile``): every piece of a space timed alone.

The table times every piece a subnet can contain (``space.latency_pieces()``: the static model's
own submodules, e.g. a stem per input resolution, every block choice at every input side, a head
per final side), each as its own program on the current device. A piece timed alone pays a call
(dispatch, arguments, thread wake-up) that the whole subnet pays only once, so each entry's ``ms``
is its median minus a per-piece call cost, and a fixed ``overhead_ms`` closes the sum; both come
from a least-squares fit to end-to-end measurements of calibration subnets (smallest, largest, a
few random), the per-piece cost bounded below by the measured dispatch cost of an almost empty
program::

    predict(arch) = overhead_ms + sum(entries[key]["ms"] for key in space.latency_keys(arch))

The fixed term is never negative. The table records how much of its predictions its pieces carry
(``quality``, :func:`table_quality`): where per-piece timing is dominated by call overhead, it says
``overhead_dominated`` and every reader (``nas latency profile``, ``nas search --latency-table``,
pareto.png's axis) says so, instead of presenting a flat front as a ranking.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import jax
import numpy as np

from predictors.files import atomic_write_json
from predictors.latency.errors import LatencyError
from predictors.latency.fileformat import FORMATS, TABLE_FORMAT, VERSION, jsonable, load_latency_model, space_spec
from predictors.latency.measure import (
    at_level,
    common_level,
    protocol_record,
    reference_archs,
    sample_archs,
    subnet_makers,
    time_archs,
)
from predictors.latency.runtime import DEFAULT_RUNTIME, get_runtime
from predictors.latency.timing import Progress, time_chunked, zeros_like_built
from search_spaces.base import LatencyPiece


def time_pieces(space, pieces: Sequence[LatencyPiece], *, batch: int = 1, repeats: int = 10, warmup: int = 3,
                rounds: int = 20, progress: Progress | None = None, references: Sequence = (),
                runtime: str = DEFAULT_RUNTIME) -> list[dict]:
    """``{"latency_ms", "iqr_ms", "repeats", "halves_ms"}`` of each piece, compiled alone (with
    ``level_ms`` when reference archs are given)."""
    rt = get_runtime(runtime)

    def make(piece):
        def build():  # built when its chunk is compiled, like the subnets
            return rt.compile(zeros_like_built(piece.build), (batch, *piece.input_shape))
        return build

    return time_chunked([make(p) for p in pieces], repeats=repeats, warmup=warmup, rounds=rounds,
                        progress=progress, references=subnet_makers(space, references, batch, runtime),
                        runtime=runtime)


def calibration_archs(space, samples: int = 4, seed: int = 0) -> list:
    """Subnets whose end-to-end latency calibrates the table: the smallest and largest at every
    resolution, then ``samples`` random ones (seeded), so the number of pieces varies."""
    small, large = space.smallest(), space.largest()
    fixed = [space.at_resolution(a, r) for r in space.resolutions for a in (small, large)]
    return fixed + sample_archs(space, samples, seed + 7919)


def profile_steps(space, calib_samples: int = 4) -> int:
    """How many progress steps :func:`profile_table` reports (for a progress bar's length)."""
    return len(space.latency_pieces()) + 1 + len(calibration_archs(space, calib_samples))


def profile_table(space, *, batch: int = 1, repeats: int = 10, warmup: int = 3, calib_samples: int = 4,
                  seed: int = 0, rounds: int = 20, options: dict | None = None,
                  progress: Progress | None = None, runtime: str = DEFAULT_RUNTIME) -> "LatencyTable":
    """Times every piece of ``space`` on the current device and calibrates the fixed overhead.

    Args:
      options: the space's construction options, recorded for ``validate``/``fit`` to rebuild it.
      calib_samples: random subnets measured end to end (besides the smallest and largest) to
        calibrate the per-piece and fixed overheads.
      rounds: interleaved timing rounds (:mod:`predictors.latency.timing`'s protocol).
      progress: called with the number of measurements done (see :func:`profile_steps`).
    """
    if batch < 1 or repeats < 1 or warmup < 0 or calib_samples < 0 or rounds < 1:
        raise LatencyError(f"batch {batch}, repeats {repeats}, warmup {warmup}, calib samples {calib_samples}, "
                           f"rounds {rounds}: need batch >= 1, repeats >= 1, warmup >= 0, calib samples >= 0, "
                           "rounds >= 1")
    rt = get_runtime(runtime)
    tick = progress or (lambda n: None)
    dispatch = rt.dispatch(batch=batch, repeats=max(repeats, 30), warmup=warmup, rounds=rounds)["latency_ms"]
    tick(1)
    pieces, refs = space.latency_pieces(), reference_archs(space)
    timed = time_pieces(space, pieces, batch=batch, repeats=repeats, warmup=warmup, rounds=rounds, progress=tick,
                        references=refs, runtime=runtime)
    archs = calibration_archs(space, calib_samples, seed)
    calib_timed = time_archs(space, archs, batch=batch, repeats=repeats, warmup=warmup, rounds=rounds,
                             progress=tick, references=refs, runtime=runtime)
    # every figure at one device speed: the median level over all chunks
    level = common_level(timed + calib_timed)
    medians = {p.key: float(m) for p, m in zip(pieces, at_level(timed, level))}
    iqrs = {p.key: t["iqr_ms"] * level / t["level_ms"] for p, t in zip(pieces, timed)}
    calib = []
    for arch, measured in zip(archs, at_level(calib_timed, level)):
        keys = space.latency_keys(arch)
        calib.append({"arch": space.encode(arch), "measured_ms": float(measured),
                      "summed_ms": float(sum(medians[k] for k in keys)), "pieces": len(keys)})
    per_piece, overhead = calibrate(calib, dispatch, min(medians.values()))
    for c in calib:
        c["predicted_ms"] = overhead + c["summed_ms"] - per_piece * c["pieces"]
    entries = {k: {"ms": medians[k] - per_piece, "median_ms": medians[k], "iqr_ms": iqrs[k]} for k in medians}
    return LatencyTable({
        "format": TABLE_FORMAT,
        "version": VERSION,
        "space": space_spec(space),
        "options": jsonable(options or {}),
        "batch": batch,
        "repeats": repeats,
        "warmup": warmup,
        "rounds": rounds,
        "device": rt.device(),
        "runtime": rt.describe(),
        "jax_version": jax.__version__,
        "dispatch_ms": dispatch,
        "reference": {"archs": [space.encode(a) for a in refs], "level_ms": level},
        "per_piece_ms": per_piece,
        "overhead_ms": overhead,
        "calibration": calib,
        "quality": table_quality(calib, overhead),
        "protocol": protocol_record(rt, source="table", batch=batch, rounds=rounds, repeats=repeats,
                                    references=[space.encode(a) for a in refs], level_ms=level),
        "entries": entries,
    }, space)


#: a table whose calibration subnets' predictions spread less than this share of their measured
#: spread (max/min - 1) is overhead-dominated: its per-piece figures cannot rank subnets
FLAT_SPREAD = 0.5


def table_quality(calib: list[dict], overhead: float) -> dict:
    """How much of a table's prediction its pieces carry, from its calibration subnets (timed end to
    end at the table's level): ``pieces_share`` (median share of a prediction that is the pieces'
    sum, not the fixed term), ``spread_measured`` / ``spread_predicted`` (largest over smallest
    latency, minus 1), ``mape`` of the predictions, and ``overhead_dominated``: the predictions
    spread less than :data:`FLAT_SPREAD` of the measured spread. Where per-piece timing is
    dominated by the cost of a call (tiny subnets, a few microseconds of work per piece), the fit
    puts nearly everything in the fixed term and every subnet predicts about the same: a flat front
    that means nothing (issue 34: 2.26-2.29 ms for subnets measured 0.43-0.85 ms)."""
    measured = np.asarray([c["measured_ms"] for c in calib], np.float64)
    predicted = np.asarray([c["predicted_ms"] for c in calib], np.float64)
    if len(calib) < 2 or not np.all(predicted > 0) or not np.all(measured > 0):
        return {"overhead_dominated": False, "n": len(calib)}
    spread_m = float(measured.max() / measured.min() - 1.0)
    spread_p = float(predicted.max() / predicted.min() - 1.0)
    share = float(np.median(1.0 - overhead / predicted))
    flat = spread_m > 0 and spread_p < FLAT_SPREAD * spread_m
    return {"overhead_dominated": bool(flat), "pieces_share": share, "spread_measured": spread_m,
            "spread_predicted": spread_p, "mape": float(np.mean(np.abs(predicted - measured) / measured) * 100.0),
            "n": len(calib)}


def calibrate(calib: list[dict], dispatch: float, smallest_piece: float) -> tuple[float, float]:
    """(per-piece cost, fixed overhead) with ``measured ~ overhead + summed - per_piece * pieces``.

    A piece timed alone pays a call (dispatch, argument handling, thread-pool wake-up) that the
    whole subnet pays once. Least squares over the calibration subnets; the per-piece cost is kept
    between the empty-jit dispatch cost and the cheapest piece, so noise cannot make it absurd.
    """
    gap = np.asarray([c["measured_ms"] - c["summed_ms"] for c in calib])
    n = np.asarray([c["pieces"] for c in calib], np.float64)
    per_piece = dispatch
    bounds = (dispatch, max(smallest_piece, dispatch))
    if len(calib) >= 2 and np.ptp(n) > 0:
        slope = np.polyfit(n, gap, 1)[0]
        per_piece = float(np.clip(-slope, *bounds))
    overhead = float(np.median(gap + per_piece * n))
    if overhead < 0:
        # the subnets run faster than their pieces' sum even after one call cost per piece: the
        # fixed term is a cost and cannot be negative (issue 34 printed -0.14 ms), so the per-piece
        # cost takes the difference (without intercept), within the same bounds
        per_piece = float(np.clip(np.median(-gap / np.maximum(n, 1)), *bounds))
        overhead = max(0.0, float(np.median(gap + per_piece * n)))
    return per_piece, overhead


class LatencyTable:
    """A profiled lookup table; ``predict(arch)`` is its overhead plus the sum of the arch's entries."""

    def __init__(self, data: dict, space):
        self.data = data
        self.space = space

    @classmethod
    def load(cls, path, space):
        """Reads a latency file and checks it against ``space``.

        A table file gives a :class:`LatencyTable`; a learned-model file (``nas latency fit``) gives a
        :class:`~predictors.latency.learned.LearnedLatencyModel`, so anything that takes a table
        (``nas search --latency-table``) takes either. Both answer ``predict(arch) -> ms``.

        Raises:
          LatencyError: the file is missing, not a latency file, or made for another space/config.
        """
        return load_latency_model(path, space)

    @property
    def batch(self) -> int:
        return int(self.data["batch"])

    @property
    def overhead_ms(self) -> float:
        return float(self.data["overhead_ms"])

    @property
    def options(self) -> dict:
        """The space options it was profiled with."""
        return dict(self.data.get("options") or {})

    @property
    def device(self) -> dict | None:
        """``{"platform", "kind"}`` of the device it was profiled on."""
        return self.data.get("device")

    @property
    def reference(self) -> dict | None:
        """``{"archs", "level_ms"}``: the reference subnets and the level its figures are at."""
        return self.data.get("reference")

    def entry(self, key: str) -> float:
        try:
            return float(self.data["entries"][key]["ms"])
        except KeyError:
            raise LatencyError(f"latency table has no entry {key!r} (it has {len(self.data['entries'])} entries); "
                               "re-profile it with `nas latency profile` for this space") from None

    def predict(self, arch) -> float:
        """Predicted latency (ms) of ``arch`` at the table's batch size."""
        return self.overhead_ms + sum(self.entry(k) for k in self.space.latency_keys(arch))

    def predict_many(self, archs: Iterable) -> np.ndarray:
        return np.asarray([self.predict(a) for a in archs], np.float64)

    def save(self, path) -> None:
        atomic_write_json(path, self.data)


FORMATS.register(TABLE_FORMAT, LatencyTable)
