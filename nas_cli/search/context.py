"""What the search loops share: measuring through the cache, objectives, checkpoints and the log."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nas_cli.evaluation import Evaluator
from nas_cli.search.cache import EvalCache
from nas_cli.search.config import SearchConfig
from nas_cli.search.state import LOG_FILE, save_state
from nas_cli.search.tracking import Normaliser, constraints, feasible_front, log_line
from search_spaces.base import Arch, SearchSpace


@dataclasses.dataclass
class SearchContext:
    """One search's space, truth, config, measurement cache, budgets, normaliser and directory."""

    space: SearchSpace
    evaluator: Evaluator
    config: SearchConfig
    cache: EvalCache
    bounds: dict[str, float]
    norm: Normaliser
    out_dir: Path
    progress: Callable[[dict], None] | None
    #: seconds spent writing the last log line and checkpoint, reported by the next timed log line
    _written: float = dataclasses.field(default=0.0, init=False, repr=False)
    #: the true feasible front's members and hypervolume, where the evaluator knows every architecture
    _true_front: tuple[set, float] | None = dataclasses.field(default=None, init=False, repr=False)

    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        """True metrics of ``archs``; only the ones never measured are evaluated."""
        return self.cache.measure(self.space, archs, self.evaluator.evaluate, int(self.evaluator.together))

    def objectives(self, metrics: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised minimised objectives ``F`` and budget constraints ``G`` of ``metrics``."""
        return self.norm(metrics), constraints(metrics, self.bounds)

    def checkpoint(self, state: dict) -> None:
        """Saves the state of the iteration that just finished."""
        t = time.perf_counter()
        save_state(self.out_dir, state)
        self._written += time.perf_counter() - t

    def true_front_figures(self, measured: Sequence[str], records: Sequence[dict], hv: float) -> dict:
        """Where the evaluator knows every architecture (a benchmark table): the ratio of the measured
        front's hypervolume ``hv`` to the true feasible front's, and the share of the true front's
        members among ``measured``; else nothing."""
        if self._true_front is None:
            truth = self.evaluator.known_truth()
            if truth is None:
                return {}
            keys = list(truth)
            front, true_hv = feasible_front(keys, [truth[k] for k in keys], self.norm, self.bounds)
            self._true_front = ({keys[i] for i in front}, true_hv)
        true_keys, true_hv = self._true_front
        return {"true_hypervolume_ratio": hv / true_hv if true_hv > 0 else 1.0,
                "true_front_found": len(true_keys & set(measured)) / len(true_keys) if true_keys else 1.0,
                "true_front_size": len(true_keys)}

    def log(self, iteration: int, measured: list[str], seconds: dict[str, float] | None = None, **extra) -> None:
        """Appends one line (hypervolume, front size, best accuracy) for ``iteration`` to the log.

        ``seconds``: where the iteration's wall time went (see :class:`Stopwatch`); the line records
        it under ``seconds`` with ``track`` (this line's hypervolumes and true-front figures) and
        ``write`` (writing the previous line, its TensorBoard event and the previous checkpoint:
        a line cannot time its own writing).
        """
        t = time.perf_counter()
        records = [self.cache[k] for k in measured]
        front, hv = feasible_front(measured, records, self.norm, self.bounds)
        accs = [records[i]["accuracy"] for i in front if "accuracy" in records[i]]
        rec = {"iteration": iteration, "n_evaluations": len(measured), "hypervolume": hv,
               "front_size": len(front), "best_accuracy": max(accs) if accs else None,
               "reference_point": self.norm.reference_point, **extra}
        rec.update(self.true_front_figures(measured, records, hv))
        if seconds is not None:
            rec["seconds"] = {k: round(v, 4) for k, v in
                              {**seconds, "track": time.perf_counter() - t, "write": self._written}.items()}
        t = time.perf_counter()
        log_line(self.out_dir / LOG_FILE, rec)
        self._written = time.perf_counter() - t
        if self.progress is not None:
            self.progress(rec)


class Stopwatch:
    """Wall seconds by part of an iteration: ``with watch("fit"): ...``; ``watch.seconds``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, part: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - t
