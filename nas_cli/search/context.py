"""What the search loops share: measuring through the cache, objectives, checkpoints and the log."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nas_cli.evaluation import Evaluator
from nas_cli.search.cache import EvalCache
from nas_cli.search.config import SearchConfig
from nas_cli.search.state import LOG_FILE, save_state
from nas_cli.search.tracking import Normaliser, constraints, feasible_front, log_line
from search_spaces.base import Arch, SearchSpace


def together(evaluator: Evaluator) -> int:
    """How many new architectures ``evaluator`` measures best in one call (one per process of a
    multi-process search; else 1, so that each measurement is saved as soon as it is made)."""
    return int(getattr(evaluator, "together", 1))


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

    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        """True metrics of ``archs``; only the ones never measured are evaluated."""
        return self.cache.measure(self.space, archs, self.evaluator.evaluate, together(self.evaluator))

    def objectives(self, metrics: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
        """Normalised minimised objectives ``F`` and budget constraints ``G`` of ``metrics``."""
        return self.norm(metrics), constraints(metrics, self.bounds)

    def checkpoint(self, state: dict) -> None:
        """Saves the state of the iteration that just finished."""
        save_state(self.out_dir, state)

    def log(self, iteration: int, measured: list[str], **extra) -> None:
        """Appends one line (hypervolume, front size, best accuracy) for ``iteration`` to the log."""
        records = [self.cache[k] for k in measured]
        front, hv = feasible_front(measured, records, self.norm, self.bounds)
        accs = [records[i]["accuracy"] for i in front if "accuracy" in records[i]]
        rec = {"iteration": iteration, "n_evaluations": len(measured), "hypervolume": hv,
               "front_size": len(front), "best_accuracy": max(accs) if accs else None,
               "reference_point": self.norm.reference_point, **extra}
        truth = getattr(self.evaluator, "front_truth", None)  # a benchmark table knows the true front
        if truth is not None:
            rec.update(truth(measured, self.norm, self.bounds))
        log_line(self.out_dir / LOG_FILE, rec)
        if self.progress is not None:
            self.progress(rec)
