"""The Evaluator of a training run: accuracy through the supernet, latency measured here or modelled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import jax

from nas_cli import runs
from nas_cli.distributed import local_mesh, make_mesh
from nas_cli.errors import UserError
from nas_cli.evaluation.base import ALONE_REPEATS, SEARCH_REPEATS, SEARCH_ROUNDS, Evaluator, latency_record
from predictors.files import append_jsonl, read_jsonl
from nas_cli.evaluation.subnet import SubnetEvaluator
from nas_cli.data import calibration_images
from predictors.latency import measure_latency

#: inherited-weight validation accuracies, kept in the run directory: every search and every
#: `nas predictor sample` on this run reuses them (they depend only on the arch and the checkpoint
#: they were measured with, which each record names)
ACCURACY_CACHE = "subnet_accuracy.jsonl"

#: written in a search's output directory: with a latency file, the scale from the file's recorded
#: device speed to the speed measured when the search started; without one, the reference level at
#: the search's start, to which every measured latency is put. A resumed search keeps it, so that the
#: latencies in its cache and the new ones share one device speed.
LATENCY_CALIBRATION = "latency_calibration.json"



class RunEvaluator(Evaluator):
    """Measures subnets of a trained supernet.

    ``evaluate``: validation accuracy with weights inherited from the supernet and BatchNorm
    recalibrated on the run's ``calib_images`` training images; the batch-1 latency of the static
    subnet, measured on this machine, or predicted by a latency table / learned model when one is
    given (then ``remeasure`` times the final front for real); exact FLOPs/params. ``estimate``: the
    exact FLOPs/params (and the modelled latency, when there is a model).

    Accuracies persist in the run directory (``subnet_accuracy.jsonl``), so no subnet of a run is
    measured twice, across searches and interruptions. In a multi-process search, process 0's
    evaluator is wrapped in a nas_cli.evaluation.spread.SpreadEvaluator, which hands each batch's new
    accuracies out to every process (:meth:`remember_accuracy`); this one measures latency.
    """

    def __init__(self, run: runs.Run, *, latency_table: Path | None = None, repeats: int = ALONE_REPEATS,
                 calibrate_in: Path | None = None, latency_runtime: str = "jax",
                 devices: int | None = None):
        from predictors.latency import get_runtime  # noqa: PLC0415

        get_runtime(latency_runtime)  # an unknown name lists the known ones
        self.runtime = latency_runtime
        self.run = run
        self.space = run.space
        self.weights = run.weights  # what every measurement records (step and content hash)
        self.repeats = repeats
        ds = run.dataset
        # every local device measures each subnet (the batch split over them, the weights replicated);
        # in a multi-process search each process measures its own subnets on its own devices
        self._subnets = SubnetEvaluator(run.space, ds.mean, ds.std, mesh=local_mesh(make_mesh(devices)))
        self._calib = calibration_images(ds, run.config.calib_images, run.config.seed)
        self._cache: dict[str, dict[str, float]] = {}
        self._accuracy_path = Path(run.path) / ACCURACY_CACHE
        self._accuracy = _read_accuracies(self._accuracy_path, run.weights)
        self._table = None
        #: the latency table or model the search's latencies come from (None: measured here)
        self.latency_file = None if latency_table is None else str(Path(latency_table).resolve())
        if latency_table is not None:
            from predictors.latency import load_latency_model  # noqa: PLC0415

            self._table = load_latency_model(latency_table, self.space, runtime=latency_runtime)
        self.latency_calibration = None
        if self._table is not None and calibrate_in is not None:
            self.latency_calibration = model_calibration(self._table, self.space, Path(latency_table),
                                                    Path(calibrate_in) / LATENCY_CALIBRATION, latency_runtime)
        self._latency_scale = self.latency_calibration["scale"] if self.latency_calibration else 1.0
        # without a model: measured latencies at one device speed, that of the search's start
        self._level_record = Path(calibrate_in) / LATENCY_CALIBRATION if (
            self._table is None and calibrate_in is not None) else None
        self._refs = None
        if self._level_record is not None:
            self.latency_calibration = _read_record(
                self._level_record, lambda r: r.get("mode") == "measured" and r.get("runtime", "jax") == latency_runtime)

    def predicted_latency(self, arch) -> float:
        """The latency model's prediction, scaled to the device's speed when the search started."""
        return float(self._table.predict(arch)) * self._latency_scale

    def metric_names(self) -> tuple[str, ...]:
        return ("accuracy", "latency", "flops", "params")

    def stats(self, arch):
        """Recalibrated BatchNorm statistics of ``arch``."""
        return self._subnets.calibrate(self.run.params, arch, self._calib)

    def measure_accuracy(self, arch) -> float:
        """Validation accuracy of ``arch`` with inherited weights and recalibrated BatchNorm, measured
        now on this process's devices (no cache)."""
        return self._subnets.accuracy(self.run.params, self.stats(arch), arch, self.run.dataset.val)

    def knows_accuracy(self, key: str) -> bool:
        """Whether the accuracy of the subnet ``key`` (an arch string) is known (cached)."""
        return key in self._accuracy

    def remember_accuracy(self, key: str, acc: float) -> None:
        """Keeps ``acc`` as the accuracy of ``key``, in memory and in the run's accuracy cache."""
        try:
            append_jsonl(self._accuracy_path, {"arch": key, "accuracy": acc, "checkpoint": self.run.epoch,
                                                "weights": self.run.weights})
        except OSError:
            pass  # a read-only run directory only costs re-measurement later
        self._accuracy[key] = acc

    def accuracy(self, arch) -> float:
        """Validation accuracy of ``arch`` with inherited weights and recalibrated BatchNorm."""
        key = self.space.encode(arch)
        if key not in self._accuracy:
            self.remember_accuracy(key, self.measure_accuracy(arch))
        return self._accuracy[key]

    def accuracies(self, archs: Sequence) -> list[float]:
        """:meth:`accuracy` of each of ``archs``."""
        return [self.accuracy(a) for a in archs]

    def measured_latency(self, arch) -> float:
        return measure_latency(self.space, arch, repeats=self.repeats, runtime=self.runtime)["latency_ms"]

    def measured_latencies(self, archs: Sequence) -> list[float]:
        """Measured latencies of ``archs``. In a search (``calibrate_in``), timed interleaved beside
        reference subnets and put at the device's speed at the search's start; else one by one."""
        if self._level_record is None:
            return [self.measured_latency(a) for a in archs]
        from predictors.files import atomic_write_json  # noqa: PLC0415
        from predictors.latency import reference_archs  # noqa: PLC0415
        # read from the timing module when called, so that tests can replace them there
        from predictors.latency.timing import CHUNK, compile_subnet, level_of, time_interleaved  # noqa: PLC0415

        from predictors.latency import get_runtime  # noqa: PLC0415

        timer = time_interleaved if self.runtime == "jax" else get_runtime(self.runtime).time
        if self._refs is None:
            self._refs = [compile_subnet(self.space, a, runtime=self.runtime) for a in reference_archs(self.space)]
        out = []
        for start in range(0, len(archs), CHUNK):
            chunk = [compile_subnet(self.space, a, runtime=self.runtime) for a in archs[start:start + CHUNK]]
            timed = timer(chunk + self._refs, repeats=SEARCH_REPEATS, warmup=3, rounds=SEARCH_ROUNDS)
            level = level_of(timed[len(chunk):])
            if self.latency_calibration is None:
                self.latency_calibration = {"mode": "measured", "level_ms": level, "runtime": self.runtime,
                                            "references": [self.space.encode(a) for a in reference_archs(self.space)]}
                atomic_write_json(self._level_record, self.latency_calibration)
            start_level = float(self.latency_calibration["level_ms"])
            out += [t["latency_ms"] * start_level / level for t in timed[:len(chunk)]]
            # freed before the next chunk compiles (see predictors.latency.timing.time_chunked)
            del chunk
        return out

    def evaluate(self, archs: Sequence) -> list[dict[str, float]]:
        todo = list({self.space.encode(a): a for a in archs if self.space.encode(a) not in self._cache}.values())
        if self._table is not None:
            latencies = [self.predicted_latency(a) for a in todo]
        else:
            latencies = self.measured_latencies(todo) if todo else []
        for arch, lat, acc in zip(todo, latencies, self.accuracies(todo)):
            self._cache[self.space.encode(arch)] = {
                "accuracy": acc, "latency": float(lat),
                "flops": float(self.space.flops(arch)), "params": float(self.space.params(arch))}
        return [dict(self._cache[self.space.encode(a)]) for a in archs]

    def estimate(self, archs: Sequence) -> list[dict[str, float]]:
        out = []
        for arch in archs:
            d = {"flops": float(self.space.flops(arch)), "params": float(self.space.params(arch))}
            if self._table is not None:
                d["latency"] = self.predicted_latency(arch)
            out.append(d)
        return out

    def remeasure(self, archs: Sequence) -> list[dict[str, float]]:
        """Extra fields for the final front: with a latency model, each subnet's measured latency
        (the front timed together, interleaved: predictors.latency.timing's protocol)."""
        if self._table is None:
            return [{} for _ in archs]
        from predictors.latency import measure_as  # noqa: PLC0415

        # the table's runtime, threads, batch and timing, put at the level its estimates were scaled
        # to (where it was made on this kind of device): the same protocol as the estimates
        protocol = latency_record(self)
        if protocol["runtime"].get("name") != self.runtime:  # a few-shot file ("external"): timed here as is
            protocol = {**protocol, "runtime": {"name": self.runtime}, "level_ms": None}
        return [{"latency_measured_ms": m["latency_ms"]} for m in measure_as(self.space, list(archs), protocol)]


def _read_accuracies(path: Path, weights: dict) -> dict[str, float]:
    """The cached accuracies measured with these ``weights`` (step and content hash: a resumed
    run's later checkpoints, or a replaced one, are other weights)."""
    out: dict[str, float] = {}
    for rec in read_jsonl(path, warn_as="accuracy cache"):
        if rec.get("weights") == weights and "arch" in rec:
            try:
                out[rec["arch"]] = float(rec["accuracy"])
            except (KeyError, TypeError, ValueError):
                continue
    return out


def model_calibration(model, space, source: Path, record: Path, runtime: str = "jax") -> dict:
    """``{"file", "scale", "level_recorded_ms", "level_now_ms"}`` or, where the model cannot be put at
    this device's speed, ``{"file", "scale": 1.0, "why"}``. Read from ``record`` when a previous
    start of the same search wrote it (for the same file), else measured and written there."""
    from predictors.files import atomic_write_json  # noqa: PLC0415
    from predictors.latency import get_runtime, measure_level, references_of  # noqa: PLC0415

    kept = _read_record(record, lambda r: r.get("file") == str(source.resolve()) and float(r["scale"]) > 0)
    if kept is not None:
        return kept
    out = {"file": str(source.resolve()), "scale": 1.0}
    made_on, here = model.device, get_runtime(runtime).device()
    if model.reference is None:
        out["why"] = "the file records no reference level"
    elif made_on is not None and made_on.get("kind") != here["kind"]:
        out["why"] = f"the file was measured on {made_on.get('kind')!r}, this is {here['kind']!r}"
    else:
        recorded = float(model.reference["level_ms"])
        now = measure_level(*references_of(model, space), batch=model.batch, runtime=runtime)
        out.update(scale=now / recorded, level_recorded_ms=recorded, level_now_ms=now)
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, out)
    return out


def _read_record(path: Path, belongs) -> dict | None:
    """The calibration record at ``path`` if it exists, reads, and ``belongs(record)``; else None
    (then it is measured again and written), unless the search folder beside it already holds
    measurements: their latencies were put at the recorded level, and a level measured now would
    mix two device speeds in one front.

    Raises:
      UserError: the record is missing, damaged or of another setting while ``cache.jsonl`` beside
        it holds measurements, naming both files.
    """
    why = "missing"
    if path.is_file():
        try:
            kept = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(kept, dict) and belongs(kept):
                return kept
            why = "of another latency setting"
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, OSError):
            why = "damaged"
    cache = path.parent / "cache.jsonl"  # nas_cli.search.state.CACHE_FILE (not imported: no cycle)
    if cache.is_file() and cache.stat().st_size > 0:
        raise UserError(f"latency calibration {path} is {why}, but {cache} holds latencies put at the level it "
                        "recorded: measuring a new level would mix two device speeds in one front; delete "
                        f"{path.parent} to search afresh, or pass another --out")
    return None


def open_run_evaluator(run_dir: Path, *, seed: int = 0, latency_table: Path | None = None,
                       calibrate_in: Path | None = None, latency_runtime: str = "jax",
                       devices: int | None = None) -> RunEvaluator:
    """Opens the run in ``run_dir`` (a UserError if it is not one). ``seed`` is accepted for the
    search's interface; measurement itself is deterministic up to timing noise. With
    ``calibrate_in`` (a search's output directory), every latency is put at one device speed
    (see :data:`LATENCY_CALIBRATION`). ``devices``: how many local devices measure accuracies
    (None: all; a UserError beyond what this process has)."""
    del seed
    if devices is not None and devices < 1:
        raise UserError(f"--devices {devices} must be at least 1")
    make_mesh(devices)  # more than this process has: an error naming both, before the run is opened
    runs.enable_compilation_cache(jax.process_count() > 1)
    run = runs.open_run(run_dir)
    if latency_table is not None and not Path(latency_table).is_file():
        raise UserError(f"--latency-table {latency_table} does not exist; make one with `nas latency profile`")
    return RunEvaluator(run, latency_table=latency_table, calibrate_in=calibrate_in, latency_runtime=latency_runtime,
                        devices=devices)


def sample_subnets(evaluator: RunEvaluator, n: int, *, seed: int = 0, latency: bool = False,
                   progress=None) -> list[dict]:
    """Measures ``n`` distinct random subnets (seeded): rows of arch, accuracy, flops, params and,
    with ``latency``, the measured batch-1 latency. Accuracies already in the run's cache are reused,
    so an interrupted sample continues where it stopped.

    Latencies are timed after the accuracies, all subnets together: interleaved in chunks beside the
    space's reference subnets, and each put at the median level of the chunks
    (predictors.latency.measure_archs), so rows measured minutes apart share one device speed."""
    import numpy as np

    space = evaluator.space
    genomes = int(np.prod([len(g.choices) for g in space.genes], dtype=np.float64).clip(max=2**62))
    if n > genomes:
        raise UserError(f"--n {n}: the space {space.name} has at most {genomes} distinct subnets; ask for fewer")
    rng = np.random.default_rng(seed)
    archs, seen, since_new = [], set(), 0
    # a space whose genes switch others off has fewer distinct subnets than genomes: stop once
    # draws stop finding new ones, instead of drawing for ever
    while len(archs) < n and since_new < 1000 + 20 * len(seen):
        arch = space.sample(rng)
        key = space.encode(arch)
        since_new += 1
        if key not in seen:
            seen.add(key)
            archs.append(arch)
            since_new = 0
    if len(archs) < n:
        raise UserError(f"--n {n}: random draws find only {len(archs)} distinct subnets of {space.name}; ask for fewer")
    rows = []
    for i, arch in enumerate(archs):
        rows.append({"arch": space.encode(arch), "accuracy": evaluator.accuracy(arch),
                     "flops": space.flops(arch), "params": space.params(arch)})
        if progress is not None:
            progress(i + 1, n)
    if latency:
        from predictors.latency import measure_archs, reference_archs  # noqa: PLC0415

        for row, ms in zip(rows, measure_archs(space, archs, references=reference_archs(space))):
            row["latency_ms"] = float(ms)
    return rows
