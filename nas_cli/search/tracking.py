"""Objective normalisation, constraints, Pareto fronts and hypervolume of measured architectures."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from nas_cli.evaluation import METRICS
from predictors.files import append_jsonl, atomic_write_text, read_jsonl

#: every normalised objective's reference coordinate (10% beyond the nadir, a common choice)
REF_COORD = 1.1


@dataclasses.dataclass(frozen=True)
class Normaliser:
    """Maps measured metrics to minimised objectives scaled to ~[0, 1], fixed for a whole search.

    Larger-is-better metrics (accuracy, a fraction) are minimised as ``1 - value`` over [0, 1];
    cost metrics are scaled from the smallest subnet's value (0) to the budget, or the largest
    subnet's value when there is no budget on them (1). Fixing the scale at the start makes the
    hypervolumes of successive iterations comparable.
    """

    objectives: tuple[str, ...]
    ideal: tuple[float, ...]  # raw minimised units (error for accuracy)
    nadir: tuple[float, ...]

    def raw(self, metrics: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Minimised raw objectives ``(n, n_obj)``."""
        cols = []
        for m in self.objectives:
            v = np.asarray([float(r[m]) for r in metrics], np.float64)
            cols.append(1.0 - v if METRICS[m] else v)
        return np.stack(cols, 1) if cols else np.zeros((len(metrics), 0))

    def __call__(self, metrics: Sequence[Mapping[str, float]]) -> np.ndarray:
        """Normalised minimised objectives ``(n, n_obj)``."""
        lo, hi = np.asarray(self.ideal), np.asarray(self.nadir)
        return (self.raw(metrics) - lo) / np.maximum(hi - lo, 1e-12)

    def columns(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        """:meth:`__call__` of metrics given as one array per metric (``(n,)`` each): the same
        numbers without a dict per architecture (a search scores 15,625 candidates an iteration)."""
        cols = [1.0 - np.asarray(values[m], np.float64) if METRICS[m] else np.asarray(values[m], np.float64)
                for m in self.objectives]
        lo, hi = np.asarray(self.ideal), np.asarray(self.nadir)
        return (np.stack(cols, 1) - lo) / np.maximum(hi - lo, 1e-12)

    @property
    def reference_point(self) -> list[float]:
        return [REF_COORD] * len(self.objectives)

    def describe(self) -> dict:
        return {"objectives": list(self.objectives), "ideal": list(self.ideal), "nadir": list(self.nadir),
                "reference_point": self.reference_point}


def make_normaliser(objectives: Sequence[str], smallest: Mapping[str, float], largest: Mapping[str, float],
                    bounds: Mapping[str, float]) -> Normaliser:
    """The normaliser of a search, from the smallest/largest subnets' metrics and the absolute budgets."""
    ideal, nadir = [], []
    for m in objectives:
        if METRICS[m]:
            ideal.append(0.0)
            nadir.append(1.0)
        else:
            lo = min(float(smallest[m]), float(largest[m]))
            hi = float(bounds[m]) if m in bounds else max(float(smallest[m]), float(largest[m]))
            ideal.append(lo)
            nadir.append(hi if hi > lo else lo + 1.0)
    return Normaliser(tuple(objectives), tuple(ideal), tuple(nadir))


def constraints(metrics: Sequence[Mapping[str, float]], bounds: Mapping[str, float]) -> np.ndarray:
    """Budget constraints ``G (n, n_budgets)`` with ``G <= 0`` feasible, scaled by the budget."""
    if not bounds:
        return np.zeros((len(metrics), 0))
    return np.stack([np.asarray([float(r[m]) for r in metrics]) / b - 1.0 for m, b in bounds.items()], 1)


def constraint_columns(values: Mapping[str, np.ndarray], bounds: Mapping[str, float], n: int) -> np.ndarray:
    """:func:`constraints` of ``n`` architectures' metrics given as one array per metric."""
    if not bounds:
        return np.zeros((n, 0))
    return np.stack([np.asarray(values[m], np.float64) / b - 1.0 for m, b in bounds.items()], 1)


def feasible_mask(metrics: Sequence[Mapping[str, float]], bounds: Mapping[str, float]) -> np.ndarray:
    G = constraints(metrics, bounds)
    return np.all(G <= 0, axis=1) if G.shape[1] else np.ones(len(metrics), bool)


def front_indices(F: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of minimised ``F``."""
    if len(F) == 0:
        return np.zeros(0, np.int64)
    return np.asarray(NonDominatedSorting().do(F, only_non_dominated_front=True), np.int64)


def hypervolume(F: np.ndarray, ref: Sequence[float]) -> float:
    """Hypervolume of normalised minimised points ``F`` against ``ref`` (0 for no points)."""
    F = np.asarray(F, np.float64)
    if len(F) == 0:
        return 0.0
    F = F[np.all(F < np.asarray(ref), axis=1)]
    return float(HV(ref_point=np.asarray(ref, np.float64))(F)) if len(F) else 0.0


def feasible_front(keys: Sequence[str], metrics: Sequence[Mapping[str, float]], norm: Normaliser,
                   bounds: Mapping[str, float]) -> tuple[list[int], float]:
    """Indices of the feasible non-dominated architectures, and their hypervolume."""
    feas = np.flatnonzero(feasible_mask(metrics, bounds))
    if len(feas) == 0:
        return [], 0.0
    F = norm([metrics[i] for i in feas])
    nd = feas[front_indices(F)]
    return [int(i) for i in nd], hypervolume(F, norm.reference_point)


def truncate_log(path: Path, last_iteration: int) -> None:
    """Drops log lines written after the checkpoint ``last_iteration`` (an interrupted iteration)."""
    if not path.exists():
        return
    keep = [rec for rec in read_jsonl(path) if rec.get("iteration", -1) <= last_iteration]
    atomic_write_text(path, "".join(json.dumps(rec) + "\n" for rec in keep))


def log_line(path: Path, record: dict) -> None:
    """Appends ``record`` to the search log; an iteration's record also goes to TensorBoard
    (``tb/`` beside the log: hypervolume, front size, best accuracy, evaluations)."""
    append_jsonl(path, record)
    if "iteration" in record:
        from nas_cli.runs.tensorboard import TB_DIR, EventWriter  # noqa: PLC0415  (tensorboardX only when searching)

        it = int(record["iteration"])
        # one small event file per iteration; its purge step hides what an interrupted run wrote from here on
        with EventWriter(path.parent / TB_DIR, purge_step=it, suffix=f".{it:06d}") as events:
            events.scalars(it, {f"search/{k}": record.get(k)
                                for k in ("hypervolume", "front_size", "best_accuracy", "n_evaluations")})
