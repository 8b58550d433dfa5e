"""The Evaluator of a training run: accuracy through the supernet, latency measured here."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from nas_cli import runs
from nas_cli.errors import UserError
from nas_cli.latency import measure_latency
from nas_cli.subnet import SubnetEvaluator
from nas_cli.train import calibration_images


class RunEvaluator:
    """Measures subnets of a trained supernet.

    ``evaluate``: validation accuracy with weights inherited from the supernet and BatchNorm
    recalibrated on ``calib_images`` training images, the measured batch-1 latency of the static
    subnet on this machine, and exact FLOPs/params. ``estimate``: the exact FLOPs/params (and the
    latency of a lookup table, when one is given). Results are cached by canonical string.
    """

    def __init__(self, run: runs.Run, *, latency_table: Path | None = None, repeats: int = 30):
        self.run = run
        self.space = run.space
        self.repeats = repeats
        ds = run.dataset
        self._subnets = SubnetEvaluator(run.space, ds.mean, ds.std)
        self._calib = calibration_images(ds, run.config.calib_images, run.config.seed)
        self._cache: dict[str, dict[str, float]] = {}
        self._table = None
        if latency_table is not None:
            from predictors.latency import LatencyTable  # noqa: PLC0415

            self._table = LatencyTable.load(latency_table, self.space)

    def metric_names(self) -> tuple[str, ...]:
        return ("accuracy", "latency", "flops", "params")

    def stats(self, arch):
        """Recalibrated BatchNorm statistics of ``arch``."""
        return self._subnets.calibrate(self.run.params, arch, self._calib)

    def evaluate(self, archs: Sequence) -> list[dict[str, float]]:
        out = []
        for arch in archs:
            key = self.space.encode(arch)
            if key not in self._cache:
                stats = self.stats(arch)
                acc = self._subnets.accuracy(self.run.params, stats, arch, self.run.dataset.val)
                lat = measure_latency(self.space, arch, repeats=self.repeats)["latency_ms"]
                self._cache[key] = {"accuracy": acc, "latency": lat, "flops": float(self.space.flops(arch)),
                                    "params": float(self.space.params(arch))}
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


def open_run_evaluator(run_dir: Path, *, seed: int = 0, latency_table: Path | None = None) -> RunEvaluator:
    """Opens the run in ``run_dir`` (a UserError if it is not one). ``seed`` is accepted for the
    search's interface; measurement itself is deterministic up to timing noise."""
    del seed
    runs.enable_compilation_cache()
    run = runs.open_run(run_dir)
    if latency_table is not None and not Path(latency_table).is_file():
        raise UserError(f"--latency-table {latency_table} does not exist; make one with `nas latency profile`")
    return RunEvaluator(run, latency_table=latency_table)
