"""The measured-architecture cache: no subnet is measured twice, across interruptions too."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from predictors.files import append_jsonl, read_jsonl
from search_spaces.base import Arch, SearchSpace


class EvalCache:
    """Measured metrics keyed by canonical architecture string, backed by a JSON-lines file.

    Every new measurement is appended and fsynced at once, so a crash loses at most the
    measurement in flight (a cut last line is ignored when loading, a damaged one skipped with a
    warning). Each record carries ``weights``, the identity of what measured it; records of other
    weights are not used.
    """

    def __init__(self, path: Path, weights: dict | None = None):
        self.path = Path(path)
        self.weights = weights

        def valid(rec: dict) -> bool:
            metrics = rec.get("metrics")
            return (isinstance(rec.get("arch"), str) and isinstance(metrics, dict)
                    and all(isinstance(v, (int, float)) for v in metrics.values()))

        self._data: dict[str, dict[str, float]] = {
            rec["arch"]: rec["metrics"] for rec in read_jsonl(self.path, valid=valid, warn_as="measurement cache")
            if rec.get("weights") == weights}

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def __getitem__(self, key: str) -> dict[str, float]:
        return self._data[key]

    def measure(self, space: SearchSpace, archs: Sequence[Arch],
                evaluate: Callable[[Sequence[Arch]], list[dict[str, float]]], together: int = 1) -> list[dict[str, float]]:
        """Metrics of ``archs``, measuring only the unseen ones, ``together`` per call of ``evaluate``
        (one at a time by default; an evaluator that measures several at once, one per process,
        asks for more), each call's saved as soon as it returns."""
        keys = [space.encode(a) for a in archs]
        todo = list(dict.fromkeys(k for k in keys if k not in self._data))
        by_key = dict(zip(keys, archs))
        for start in range(0, len(todo), together):
            chunk = todo[start:start + together]
            for key, metrics in zip(chunk, evaluate([by_key[k] for k in chunk]), strict=True):
                metrics = {k: float(v) for k, v in metrics.items()}
                self.path.parent.mkdir(parents=True, exist_ok=True)
                append_jsonl(self.path, {"arch": key, "metrics": metrics, "weights": self.weights})
                self._data[key] = metrics
        return [self._data[k] for k in keys]
