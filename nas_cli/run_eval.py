"""The Evaluator of a training run: accuracy through the supernet, latency measured here or modelled."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from nas_cli import runs
from nas_cli.errors import UserError
from nas_cli.io import append_jsonl, read_jsonl
from nas_cli.latency import measure_latency
from nas_cli.subnet import SubnetEvaluator
from nas_cli.train import calibration_images

#: inherited-weight validation accuracies, kept in the run directory: every search and every
#: `nas predictor sample` on this run reuses them (they depend only on the arch and the checkpoint
#: they were measured with, which each record names)
ACCURACY_CACHE = "subnet_accuracy.jsonl"


class RunEvaluator:
    """Measures subnets of a trained supernet.

    ``evaluate``: validation accuracy with weights inherited from the supernet and BatchNorm
    recalibrated on the run's ``calib_images`` training images; the batch-1 latency of the static
    subnet, measured on this machine, or predicted by a latency table / learned model when one is
    given (then ``remeasure`` times the final front for real); exact FLOPs/params. ``estimate``: the
    exact FLOPs/params (and the modelled latency, when there is a model).

    Accuracies persist in the run directory (``subnet_accuracy.jsonl``), so no subnet of a run is
    measured twice, across searches and interruptions.
    """

    def __init__(self, run: runs.Run, *, latency_table: Path | None = None, repeats: int = 30):
        self.run = run
        self.space = run.space
        self.repeats = repeats
        ds = run.dataset
        self._subnets = SubnetEvaluator(run.space, ds.mean, ds.std)
        self._calib = calibration_images(ds, run.config.calib_images, run.config.seed)
        self._cache: dict[str, dict[str, float]] = {}
        self._accuracy_path = Path(run.path) / ACCURACY_CACHE
        self._accuracy = _read_accuracies(self._accuracy_path, run.epoch)
        self._table = None
        if latency_table is not None:
            from predictors.latency import load_latency_model  # noqa: PLC0415

            self._table = load_latency_model(latency_table, self.space)

    def metric_names(self) -> tuple[str, ...]:
        return ("accuracy", "latency", "flops", "params")

    def stats(self, arch):
        """Recalibrated BatchNorm statistics of ``arch``."""
        return self._subnets.calibrate(self.run.params, arch, self._calib)

    def accuracy(self, arch) -> float:
        """Validation accuracy of ``arch`` with inherited weights and recalibrated BatchNorm."""
        key = self.space.encode(arch)
        if key not in self._accuracy:
            acc = self._subnets.accuracy(self.run.params, self.stats(arch), arch, self.run.dataset.val)
            try:
                append_jsonl(self._accuracy_path, {"arch": key, "accuracy": acc, "checkpoint": self.run.epoch})
            except OSError:
                pass  # a read-only run directory only costs re-measurement later
            self._accuracy[key] = acc
        return self._accuracy[key]

    def measured_latency(self, arch) -> float:
        return measure_latency(self.space, arch, repeats=self.repeats)["latency_ms"]

    def evaluate(self, archs: Sequence) -> list[dict[str, float]]:
        out = []
        for arch in archs:
            key = self.space.encode(arch)
            if key not in self._cache:
                lat = self._table.predict(arch) if self._table is not None else self.measured_latency(arch)
                self._cache[key] = {"accuracy": self.accuracy(arch), "latency": float(lat),
                                    "flops": float(self.space.flops(arch)), "params": float(self.space.params(arch))}
            out.append(dict(self._cache[key]))
        return out

    def estimate(self, archs: Sequence) -> list[dict[str, float]]:
        out = []
        for arch in archs:
            d = {"flops": float(self.space.flops(arch)), "params": float(self.space.params(arch))}
            if self._table is not None:
                d["latency"] = float(self._table.predict(arch))
            out.append(d)
        return out

    def remeasure(self, archs: Sequence) -> list[dict[str, float]]:
        """Extra fields for the final front: with a latency model, each subnet's measured latency
        (the front timed together, interleaved: nas_cli.latency's protocol)."""
        if self._table is None:
            return [{} for _ in archs]
        from predictors.latency import measure_archs  # noqa: PLC0415

        measured = measure_archs(self.space, list(archs), batch=self._table.batch)
        return [{"latency_measured_ms": float(m)} for m in measured]


def _read_accuracies(path: Path, checkpoint: int) -> dict[str, float]:
    """The cached accuracies measured with checkpoint ``checkpoint`` (a resumed run's later
    checkpoints are other weights)."""
    out: dict[str, float] = {}
    for rec in read_jsonl(path):
        if rec.get("checkpoint") == checkpoint and "arch" in rec:
            try:
                out[rec["arch"]] = float(rec["accuracy"])
            except (KeyError, TypeError, ValueError):
                continue
    return out


def open_run_evaluator(run_dir: Path, *, seed: int = 0, latency_table: Path | None = None) -> RunEvaluator:
    """Opens the run in ``run_dir`` (a UserError if it is not one). ``seed`` is accepted for the
    search's interface; measurement itself is deterministic up to timing noise."""
    del seed
    runs.enable_compilation_cache()
    run = runs.open_run(run_dir)
    if latency_table is not None and not Path(latency_table).is_file():
        raise UserError(f"--latency-table {latency_table} does not exist; make one with `nas latency profile`")
    return RunEvaluator(run, latency_table=latency_table)


def sample_subnets(evaluator: RunEvaluator, n: int, *, seed: int = 0, latency: bool = False,
                   progress=None) -> list[dict]:
    """Measures ``n`` distinct random subnets (seeded): rows of arch, accuracy, flops, params and,
    with ``latency``, the measured batch-1 latency. Accuracies already in the run's cache are reused,
    so an interrupted sample continues where it stopped."""
    import numpy as np

    space = evaluator.space
    rng = np.random.default_rng(seed)
    archs, seen = [], set()
    for _ in range(100 * n):
        if len(archs) == n:
            break
        arch = space.sample(rng)
        key = space.encode(arch)
        if key not in seen:
            seen.add(key)
            archs.append(arch)
    if len(archs) < n:
        raise UserError(f"--n {n}: found only {len(archs)} distinct subnets in {100 * n} random draws; ask for fewer")
    rows = []
    for i, arch in enumerate(archs):
        row = {"arch": space.encode(arch), "accuracy": evaluator.accuracy(arch),
               "flops": space.flops(arch), "params": space.params(arch)}
        if latency:
            row["latency_ms"] = evaluator.measured_latency(arch)
        rows.append(row)
        if progress is not None:
            progress(i + 1, n)
    return rows
