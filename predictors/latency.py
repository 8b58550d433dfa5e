"""Latency models of a space's static subnets: a measured lookup table and a learned correction.

The lookup table (``nas latency profile``) times every piece a subnet can contain, each as its own
jitted static NNX module on the current device: the stem with the fixed first block (per input
resolution), every block (stage, position first/rest, kernel, expand, input side) and the head (per
final side). A piece timed alone pays a call (dispatch, arguments, thread wake-up) that the whole
subnet pays only once, so each entry's ``ms`` is its median minus a per-piece call cost, and a fixed
``overhead_ms`` closes the sum; both come from a least-squares fit to end-to-end measurements of
calibration subnets (smallest, largest, a few random), the per-piece cost bounded below by the
measured dispatch cost of an almost empty jitted function::

    predict(arch) = overhead_ms + sum(entries[key]["ms"] for key in pieces(arch))

The learned model (``nas latency fit``) is a registered predictor fitted on end-to-end measurements
of random subnets: on ``space.features(arch)``, the count of each table piece in the subnet (so a
linear model learns each piece's cost inside the whole program, fusion and all, instead of alone),
and the table's sum when a table is given, predicting the residual ``measured - table`` (so the
table's error is what it learns).

Both are JSON files; :func:`load_latency_model` reads either and checks it against the space.

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

import dataclasses
import json
from pathlib import Path
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nas_cli.errors import UserError
from predictors.files import atomic_write_json
from nas_cli.latency import compile_forward, compile_subnet, time_compiled, time_interleaved
from predictors.base import from_state, get_predictor, predictor_names
from predictors.metrics import all_metrics
from search_spaces.base import LatencyPiece

TABLE_FORMAT = "nas-latency-table"
MODEL_FORMAT = "nas-latency-model"
VERSION = 2  # 2: tables and models record their reference level

Progress = Callable[[int], None]


# ----------------------------------------------------------------------------------------------
# The pieces: the static subnet's own submodules, as each space lists them
# ----------------------------------------------------------------------------------------------
def _zeros_like_built(make: Callable[[], nnx.Module]) -> nnx.Module:
    """``make()``'s module with zero weights, built without running its initialisers.

    Latency does not depend on the weights' values, and eager initialisation compiles a small
    kernel per new parameter shape, which cost more than the timing itself.
    """
    graphdef, state = nnx.split(nnx.eval_shape(make))
    state = jax.tree.map(lambda a: jax.device_put(np.zeros(a.shape, a.dtype)), state)
    return nnx.merge(graphdef, state)


# ----------------------------------------------------------------------------------------------
# Measuring
# ----------------------------------------------------------------------------------------------
#: programs compiled and timed together (interleaved); bounds the memory of compiled subnets held
CHUNK = 25


def measure_dispatch(*, batch: int = 1, repeats: int = 30, warmup: int = 3, rounds: int = 1) -> dict:
    """Median time of calling an almost empty compiled function: the per-executable fixed cost."""
    x = jnp.zeros((batch, 1), jnp.float32)
    compiled = jax.jit(lambda state, x: x + state).lower(jnp.float32(1.0), x).compile()
    return time_compiled(compiled, jnp.float32(1.0), x, repeats=repeats, warmup=warmup, rounds=rounds)


def reference_archs(space) -> list:
    """The subnets whose latency measures the device's current speed: the smallest, a middle and
    the largest, at the space's largest resolution (another space's: its smallest and largest)."""
    if not hasattr(space, "at_resolution"):
        return [space.smallest(), space.largest()]
    r = max(space.resolutions)
    return [space.at_resolution(a, r) for a in (space.smallest(), space.middle(), space.largest())]


def level_of(timed_refs: Sequence[dict]) -> float:
    """A chunk's level: the geometric mean of the reference programs' medians."""
    return float(np.exp(np.mean(np.log([t["latency_ms"] for t in timed_refs]))))


def _time_chunked(make_programs: Sequence[Callable], *, repeats: int, warmup: int, rounds: int,
                  progress: Progress | None, references: Sequence[Callable] = ()) -> list[dict]:
    """Compiles ``CHUNK`` programs at a time and times each chunk interleaved (nas_cli.latency).

    ``references`` (program makers, compiled once) are timed in every round of every chunk; each
    program's result then carries ``level_ms``, its chunk's level (:func:`level_of`)."""
    refs = [make() for make in references]
    out = []
    for start in range(0, len(make_programs), CHUNK):
        programs = [make() for make in make_programs[start:start + CHUNK]]
        timed = time_interleaved(programs + refs, repeats=repeats, warmup=warmup, rounds=rounds)
        body = timed[:len(programs)]
        if refs:
            level = level_of(timed[len(programs):])
            for t in body:
                t["level_ms"] = level
        out += body
        if progress is not None:
            progress(len(programs))
    return out


def at_level(timed: Sequence[dict], level: float) -> np.ndarray:
    """Each program's median rescaled from its chunk's level to ``level``: the latency it would
    have had with the device at that speed."""
    return np.asarray([t["latency_ms"] * level / t["level_ms"] for t in timed], np.float64)


def common_level(timed: Sequence[dict]) -> float:
    """The median of the chunks' levels: the one level a table or model records."""
    return float(np.median([t["level_ms"] for t in timed]))


def time_pieces(space, pieces: Sequence[LatencyPiece], *, batch: int = 1, repeats: int = 10, warmup: int = 3,
                rounds: int = 20, progress: Progress | None = None, references: Sequence = ()) -> list[dict]:
    """``{"latency_ms", "iqr_ms", "repeats", "halves_ms"}`` of each piece, jitted alone (with
    ``level_ms`` when reference archs are given)."""
    def make(piece):
        def build():  # built when its chunk is compiled, like the subnets
            return compile_forward(_zeros_like_built(piece.build), (batch, *piece.input_shape))
        return build

    return _time_chunked([make(p) for p in pieces], repeats=repeats, warmup=warmup, rounds=rounds,
                         progress=progress, references=_subnet_makers(space, references, batch))


def _subnet_makers(space, archs: Sequence, batch: int) -> list[Callable]:
    return [lambda a=a: compile_subnet(space, a, batch) for a in archs]


def time_archs(space, archs: Sequence, *, batch: int = 1, repeats: int = 10, warmup: int = 3, rounds: int = 20,
               progress: Progress | None = None, references: Sequence = (), reference_space=None) -> list[dict]:
    """``{"latency_ms", "iqr_ms", "repeats", "halves_ms"}`` of each arch's static subnet end to end,
    timed interleaved in chunks (nas_cli.latency's protocol); ``progress`` gets each chunk's size.
    With ``references`` (archs of ``reference_space``, default ``space``; e.g.
    :func:`reference_archs`), each result has ``level_ms`` too."""
    return _time_chunked(_subnet_makers(space, archs, batch), repeats=repeats, warmup=warmup, rounds=rounds,
                         progress=progress, references=_subnet_makers(reference_space or space, references, batch))


def measure_archs(space, archs: Sequence, *, batch: int = 1, repeats: int = 10, warmup: int = 3, rounds: int = 20,
                  progress: Progress | None = None, references: Sequence = ()) -> np.ndarray:
    """End-to-end median latency (ms) of each arch's static subnet (:func:`time_archs`).

    With ``references`` (e.g. :func:`reference_archs`), every latency is put at one device speed,
    the median level of the chunks, so archs timed minutes apart are comparable."""
    timed = time_archs(space, archs, batch=batch, repeats=repeats, warmup=warmup, rounds=rounds, progress=progress,
                       references=references)
    if references:
        return at_level(timed, common_level(timed))
    return np.asarray([t["latency_ms"] for t in timed], np.float64)


def repeatability(timed: Sequence[dict]) -> dict | None:
    """How well the measurement agrees with itself: MAPE and Kendall tau between the even and the
    odd rounds' medians of the same programs (each half has half the runs, so the full
    measurement is somewhat steadier than this says). None with fewer than two rounds."""
    if not timed or "halves_ms" not in timed[0]:
        return None
    a, b = (np.asarray([t["halves_ms"][h] for t in timed]) for h in (0, 1))
    agree = score(a, b)
    return {"mape": agree["mape"], "kendall_tau": agree["kendall_tau"], "n": agree["n"]}


#: the random streams of latency sampling: `nas latency fit` and `validate` draw disjoint sets of
#: subnets even with the same --seed, so a model is never validated on its own training subnets
FIT_STREAM, VALIDATE_STREAM = 0x1A7F, 0x7A11


def sample_archs(space, n: int, seed: int, stream: int | None = None) -> list:
    """``n`` random subnets (uniform genomes), deterministic per (seed, stream)."""
    rng = np.random.default_rng(seed if stream is None else [seed, stream])
    return [space.sample(rng) for _ in range(n)]


def calibration_archs(space, samples: int = 4, seed: int = 0) -> list:
    """Subnets whose end-to-end latency calibrates the table: the smallest and largest at every
    resolution, then ``samples`` random ones (seeded), so the number of pieces varies."""
    small, large = space.smallest(), space.largest()
    fixed = [space.at_resolution(a, r) for r in space.resolutions for a in (small, large)]
    return fixed + sample_archs(space, samples, seed + 7919)


def profile_steps(space, calib_samples: int = 4) -> int:
    """How many progress steps :func:`profile_table` reports (for a progress bar's length)."""
    return len(space.latency_pieces()) + 1 + len(calibration_archs(space, calib_samples))


def space_spec(space) -> dict:
    """What a latency file records of its space: the name and the full (frozen) config."""
    return {"name": space.name, "config": _jsonable(dataclasses.asdict(space.config))}


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def profile_table(space, *, batch: int = 1, repeats: int = 10, warmup: int = 3, calib_samples: int = 4,
                  seed: int = 0, rounds: int = 20, options: dict | None = None,
                  progress: Progress | None = None) -> "LatencyTable":
    """Times every piece of ``space`` on the current device and calibrates the fixed overhead.

    Args:
      options: the space's construction options, recorded for ``validate``/``fit`` to rebuild it.
      calib_samples: random subnets measured end to end (besides the smallest and largest) to
        calibrate the per-piece and fixed overheads.
      rounds: interleaved timing rounds (nas_cli.latency's protocol).
      progress: called with the number of measurements done (see :func:`profile_steps`).
    """
    if batch < 1 or repeats < 1 or warmup < 0 or calib_samples < 0 or rounds < 1:
        raise UserError(f"batch {batch}, repeats {repeats}, warmup {warmup}, calib samples {calib_samples}, "
                        f"rounds {rounds}: need batch >= 1, repeats >= 1, warmup >= 0, calib samples >= 0, "
                        "rounds >= 1")
    tick = progress or (lambda n: None)
    dispatch = measure_dispatch(batch=batch, repeats=max(repeats, 30), warmup=warmup, rounds=rounds)["latency_ms"]
    tick(1)
    pieces, refs = space.latency_pieces(), reference_archs(space)
    timed = time_pieces(space, pieces, batch=batch, repeats=repeats, warmup=warmup, rounds=rounds, progress=tick,
                        references=refs)
    archs = calibration_archs(space, calib_samples, seed)
    calib_timed = time_archs(space, archs, batch=batch, repeats=repeats, warmup=warmup, rounds=rounds,
                             progress=tick, references=refs)
    # every figure at one device speed: the median level over all chunks
    level = common_level(timed + calib_timed)
    medians = {p.key: float(m) for p, m in zip(pieces, at_level(timed, level))}
    iqrs = {p.key: t["iqr_ms"] * level / t["level_ms"] for p, t in zip(pieces, timed)}
    calib = []
    for arch, measured in zip(archs, at_level(calib_timed, level)):
        keys = space.latency_keys(arch)
        calib.append({"arch": space.encode(arch), "measured_ms": float(measured),
                      "summed_ms": float(sum(medians[k] for k in keys)), "pieces": len(keys)})
    per_piece, overhead = _calibrate(calib, dispatch, min(medians.values()))
    for c in calib:
        c["predicted_ms"] = overhead + c["summed_ms"] - per_piece * c["pieces"]
    return LatencyTable({
        "format": TABLE_FORMAT,
        "version": VERSION,
        "space": space_spec(space),
        "options": _jsonable(options or {}),
        "batch": batch,
        "repeats": repeats,
        "warmup": warmup,
        "rounds": rounds,
        "device": current_device(),
        "jax_version": jax.__version__,
        "dispatch_ms": dispatch,
        "reference": {"archs": [space.encode(a) for a in refs], "level_ms": level},
        "per_piece_ms": per_piece,
        "overhead_ms": overhead,
        "calibration": calib,
        "entries": {k: {"ms": medians[k] - per_piece, "median_ms": medians[k], "iqr_ms": iqrs[k]} for k in medians},
    }, space)


def _calibrate(calib: list[dict], dispatch: float, smallest_piece: float) -> tuple[float, float]:
    """(per-piece cost, fixed overhead) with ``measured ~ overhead + summed - per_piece * pieces``.

    A piece timed alone pays a call (dispatch, argument handling, thread-pool wake-up) that the
    whole subnet pays once. Least squares over the calibration subnets; the per-piece cost is kept
    between the empty-jit dispatch cost and the cheapest piece, so noise cannot make it absurd.
    """
    gap = np.asarray([c["measured_ms"] - c["summed_ms"] for c in calib])
    n = np.asarray([c["pieces"] for c in calib], np.float64)
    per_piece = dispatch
    if len(calib) >= 2 and np.ptp(n) > 0:
        slope = np.polyfit(n, gap, 1)[0]
        per_piece = float(np.clip(-slope, dispatch, max(smallest_piece, dispatch)))
    overhead = float(np.median(gap + per_piece * n))
    return per_piece, overhead


# ----------------------------------------------------------------------------------------------
# Loading and checking against a space
# ----------------------------------------------------------------------------------------------
def _read_json(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"latency file {path} does not exist; make one with `nas latency profile` or `nas latency fit`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"latency file {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") not in (TABLE_FORMAT, MODEL_FORMAT):
        fmt = data.get("format") if isinstance(data, dict) else None
        raise UserError(f"latency file {path} has format {fmt!r}; expected {TABLE_FORMAT!r} or {MODEL_FORMAT!r}")
    if data.get("version") != VERSION:
        raise UserError(f"latency file {path} has version {data.get('version')!r}; this nas reads version {VERSION}: "
                        "re-make it with `nas latency profile` or `nas latency fit`")
    return data


def check_space(spec: dict, space, source: str) -> None:
    """Raises a UserError naming what differs between a latency file's space and ``space``.

    The file may cover more resolutions than the space uses; every other config field must match.
    """
    if spec.get("name") != space.name:
        raise UserError(f"{source} was made for space {spec.get('name')!r}, not {space.name!r}")
    want = space_spec(space)["config"]
    have = spec.get("config", {})
    missing = sorted(set(want["resolutions"]) - set(have.get("resolutions", [])))
    if missing:
        raise UserError(f"{source} covers resolutions {have.get('resolutions')}; the space also uses "
                        f"{missing} (profile it with --resolution for each of {want['resolutions']})")
    diffs = [f"{k} {have.get(k)!r} (space: {v!r})" for k, v in want.items()
             if k != "resolutions" and have.get(k) != v]
    if diffs:
        raise UserError(f"{source} was made for a different {space.name} config: " + "; ".join(diffs))


class LatencyTable:
    """A profiled lookup table; ``predict(arch)`` is its overhead plus the sum of the arch's entries."""

    def __init__(self, data: dict, space):
        self.data = data
        self.space = space

    @classmethod
    def load(cls, path, space):
        """Reads a latency file and checks it against ``space``.

        A table file gives a :class:`LatencyTable`; a learned-model file (``nas latency fit``) gives a
        :class:`LearnedLatencyModel`, so anything that takes a table (``nas search --latency-table``)
        takes either. Both answer ``predict(arch) -> ms``.

        Raises:
          UserError: the file is missing, not a latency file, or made for another space/config.
        """
        return load_latency_model(path, space)

    @property
    def batch(self) -> int:
        return int(self.data["batch"])

    @property
    def overhead_ms(self) -> float:
        return float(self.data["overhead_ms"])

    def entry(self, key: str) -> float:
        try:
            return float(self.data["entries"][key]["ms"])
        except KeyError:
            raise UserError(f"latency table has no entry {key!r} (it has {len(self.data['entries'])} entries); "
                            "re-profile it with `nas latency profile` for this space") from None

    def predict(self, arch) -> float:
        """Predicted latency (ms) of ``arch`` at the table's batch size."""
        return self.overhead_ms + sum(self.entry(k) for k in self.space.latency_keys(arch))

    def predict_many(self, archs: Iterable) -> np.ndarray:
        return np.asarray([self.predict(a) for a in archs], np.float64)

    @property
    def reference(self) -> dict | None:
        """``{"archs", "level_ms"}``: the reference subnets and the level its figures are at."""
        return self.data.get("reference")

    def save(self, path) -> None:
        atomic_write_json(path, self.data)


def measure_level(space, archs: Sequence, *, batch: int = 1, repeats: int = 10, warmup: int = 3,
                  rounds: int = 20) -> float:
    """The device's level now: ``archs`` (reference subnets) timed interleaved, :func:`level_of`."""
    programs = [compile_subnet(space, a, batch) for a in archs]
    return level_of(time_interleaved(programs, repeats=repeats, warmup=warmup, rounds=rounds))


def device_of(model) -> dict | None:
    """``{"platform", "kind"}`` of the device a table or model was measured on (None if unknown)."""
    if isinstance(model, LatencyTable):
        return model.data.get("device")
    return model.meta.get("device") or (model.table.data.get("device") if model.table is not None else None)


def current_device() -> dict:
    device = jax.devices()[0]
    return {"platform": device.platform, "kind": device.device_kind}


def references_of(model, space) -> tuple:
    """(space, archs): the reference subnets a table or model was measured against (else
    ``space``'s own, :func:`reference_archs`) and the space to build them in."""
    if not model.reference:
        return space, reference_archs(space)
    ref_space = reference_space(model, space)
    return ref_space, [ref_space.decode(a) for a in model.reference["archs"]]


def reference_space(model, space):
    """The space to build a file's reference subnets in: ``space``, or, where the file covers a
    resolution ``space`` does not use (check_space allows that), the file's own space."""
    ref = model.reference
    resolutions = sorted({int(a.split("-", 1)[0][1:]) for a in ref["archs"]}) if ref else []
    if all(r in space.config.resolutions for r in resolutions):
        return space
    options = model.data.get("options") if isinstance(model, LatencyTable) else model.meta.get("options")
    return make_latency_space(space.name, resolutions=resolutions, defaults=options or {})[0]


def calibrated_predictions(model, archs: Sequence, levels) -> np.ndarray:
    """``model``'s predictions scaled from its recorded level to ``levels`` (each arch's chunk
    level, measured now); unscaled for a model that records no level."""
    predicted = model.predict_many(archs)
    ref = model.reference
    if not ref:
        return predicted
    return predicted * np.asarray(levels, np.float64) / float(ref["level_ms"])


LATENCY_SPACES = ("mobilenetv3", "mobilenetv3-tiny")


def make_latency_space(name: str, *, resolutions: Sequence[int] | None = None, in_channels: int | None = None,
                       num_classes: int | None = None, width_mult: float | None = None, defaults: dict | None = None):
    """(space, options) of a MobileNetV3 space; unset options come from ``defaults`` (a latency
    file's recorded options), then from the space's own defaults.

    Raises:
      UserError: an unknown space, or ``width_mult`` for the tiny space (which has one width).
    """
    if name not in LATENCY_SPACES:
        raise UserError(f"space {name!r} has no static subnets to time; latency spaces: {', '.join(LATENCY_SPACES)}")
    defaults = dict(defaults or {})
    given = {"resolutions": tuple(resolutions) if resolutions else None, "in_channels": in_channels,
             "num_classes": num_classes, "width_mult": width_mult}
    options = {k: v for k, v in given.items() if v is not None}
    for k, v in defaults.items():
        options.setdefault(k, tuple(v) if isinstance(v, list) else v)
    if name == "mobilenetv3-tiny" and "width_mult" in options:
        if width_mult is not None:
            raise UserError(f"--width-mult {width_mult}: space {name!r} has one fixed width; "
                            "use --space mobilenetv3 for a width multiplier")
        options.pop("width_mult")
    if name == "mobilenetv3" and "resolutions" not in options:
        options["resolutions"] = (32,)
    for r in options.get("resolutions", ()):
        if int(r) < 1:
            raise UserError(f"--resolution {r}: resolutions must be positive integers")
    from search_spaces import get_space

    space = get_space(name, **options)
    cfg = space.config
    recorded = {"in_channels": cfg.in_channels, "num_classes": cfg.num_classes, "resolutions": list(cfg.resolutions)}
    if name == "mobilenetv3":
        recorded["width_mult"] = float(options.get("width_mult", 1.0))
    return space, recorded


def file_options(path) -> dict:
    """The space options a latency file was made with (for rebuilding its space)."""
    return dict(_read_json(path).get("options") or {})


def load_latency_model(path, space):
    """A :class:`LatencyTable` or :class:`LearnedLatencyModel` from ``path``, checked against ``space``."""
    data = _read_json(path)
    source = f"latency file {path}"
    check_space(data.get("space", {}), space, source)
    if data["format"] == TABLE_FORMAT:
        return LatencyTable(data, space)
    return LearnedLatencyModel.from_json(data, space)


# ----------------------------------------------------------------------------------------------
# The learned model
# ----------------------------------------------------------------------------------------------
#: what a learned model's inputs are; a file fitted on other features must be re-fitted
MODEL_FEATURES = "genes+piece-counts"


def piece_index(space) -> dict[str, int]:
    """Column of each of ``space.latency_pieces()`` in :func:`piece_counts`."""
    return {p.key: i for i, p in enumerate(space.latency_pieces())}


def piece_counts(space, archs: Sequence, index: dict[str, int]) -> np.ndarray:
    """(n, pieces): how many times each piece of ``index`` (:func:`piece_index`) runs in each arch."""
    out = np.zeros((len(archs), len(index)), np.float32)
    for row, arch in enumerate(archs):
        for key in space.latency_keys(arch):
            out[row, index[key]] += 1
    return out


class LearnedLatencyModel:
    """A predictor on ``space.features(arch)`` and piece counts (+ the table's sum), predicting the
    table's residual."""

    def __init__(self, space, predictor, table: LatencyTable | None, meta: dict | None = None):
        self.space = space
        self.predictor = predictor
        self.table = table
        self.meta = dict(meta or {})
        self._pieces = piece_index(space)  # planned once: search predicts one arch at a time

    @property
    def batch(self) -> int:
        """The batch size its training subnets were timed at."""
        return int(self.meta.get("batch", self.table.batch if self.table is not None else 1))

    @property
    def reference(self) -> dict | None:
        """``{"archs", "level_ms"}`` of its training measurements (None when fitted on given numbers)."""
        return self.meta.get("reference")

    def table_scale(self) -> float:
        """The table's figures are at the table's level; the model's targets at the model's."""
        mine, theirs = self.reference, self.table.reference
        return float(mine["level_ms"]) / float(theirs["level_ms"]) if mine and theirs else 1.0

    def _features(self, archs: Sequence) -> tuple[np.ndarray, np.ndarray]:
        X = np.stack([self.space.features(a) for a in archs]).astype(np.float32)
        X = np.concatenate([X, piece_counts(self.space, archs, self._pieces)], axis=1)
        if self.table is None:
            return X, np.zeros(len(archs))
        base = self.table.predict_many(archs) * self.table_scale()
        return np.concatenate([X, base[:, None].astype(np.float32)], axis=1), base

    def predict_many(self, archs: Sequence) -> np.ndarray:
        X, base = self._features(list(archs))
        return base + self.predictor.predict(X)

    def predict(self, arch) -> float:
        return float(self.predict_many([arch])[0])

    def to_json(self) -> dict:
        meta, arrays = self.predictor._state()
        return {
            "format": MODEL_FORMAT,
            "version": VERSION,
            "features": MODEL_FEATURES,
            "space": space_spec(self.space),
            "options": self.meta.get("options", {}),
            "meta": self.meta,
            "predictor": {
                "name": self.predictor.name,
                "seed": self.predictor.seed,
                "config": self.predictor.config,
                "n_features": self.predictor.n_features,
                "y_mean": self.predictor._y_mean,
                "y_std": self.predictor._y_std,
                "state": meta,
                "arrays": {k: {"dtype": str(np.asarray(v).dtype), "shape": list(np.shape(v)),
                               "values": np.asarray(v).ravel().tolist()} for k, v in arrays.items()},
            },
            "table": self.table.data if self.table is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict, space) -> "LearnedLatencyModel":
        if data.get("features") != MODEL_FEATURES:
            raise UserError(f"latency model was fitted on features {data.get('features', 'genes')!r}; this nas "
                            f"uses {MODEL_FEATURES!r}: re-fit it with `nas latency fit`")
        try:
            p = data["predictor"]
            arrays = {k: np.asarray(a["values"], a["dtype"]).reshape(a["shape"]) for k, a in p["arrays"].items()}
            predictor = from_state(p, arrays)
        except (KeyError, TypeError, ValueError) as e:
            raise UserError(f"latency model file is damaged or from another version ({e!r})") from None
        table = LatencyTable(data["table"], space) if data.get("table") else None
        return cls(space, predictor, table, data.get("meta"))

    def save(self, path) -> None:
        atomic_write_json(path, self.to_json())


def fit_latency_model(space, archs: Sequence, measured_ms, *, table: LatencyTable | None = None,
                      model: str = "ridge", seed: int = 0, meta: dict | None = None) -> LearnedLatencyModel:
    """Fits ``model`` (a registered predictor) to end-to-end latencies of ``archs``."""
    if model not in predictor_names():
        raise UserError(f"unknown model {model!r}; known models: {', '.join(predictor_names())}")
    archs = list(archs)
    y = np.asarray(measured_ms, np.float64)
    if len(archs) < 2 or len(archs) != len(y):
        raise UserError(f"need at least 2 measured subnets to fit a latency model, got {len(archs)}")
    learned = LearnedLatencyModel(space, get_predictor(model, seed=seed), table, meta)
    X, base = learned._features(archs)
    learned.predictor.fit(X, y - base)
    return learned


# ----------------------------------------------------------------------------------------------
# Scoring
# ----------------------------------------------------------------------------------------------
def mape(measured, predicted) -> float:
    """Mean absolute percentage error, in percent."""
    a, b = np.asarray(measured, np.float64), np.asarray(predicted, np.float64)
    return float(np.mean(np.abs(b - a) / a) * 100.0)


def score(measured, predicted) -> dict:
    """``{"mape", "kendall_tau", "spearman", "rmse", "n"}`` of predictions against measurements."""
    return {"mape": mape(measured, predicted), **all_metrics(measured, predicted)}
