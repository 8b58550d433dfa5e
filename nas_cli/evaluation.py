"""What a search asks of the thing it evaluates architectures with (a supernet run or a table)."""

from __future__ import annotations

from typing import Protocol, Sequence

from search_spaces.base import Arch, SearchSpace

#: metric names, and whether larger is better
METRICS = {"accuracy": True, "latency": False, "flops": False, "params": False}


class Evaluator(Protocol):
    """Measures architectures of one space.

    ``evaluate`` is the expensive truth (supernet accuracy with recalibrated BatchNorm, measured
    latency, or a table look-up); ``estimate`` returns what is known or modelled cheaply (exact
    FLOPs/params, a latency lookup table or predictor), and may return a subset of the metrics.
    Both return one dict per architecture, keyed by metric name; latency is in milliseconds and
    accuracy is a fraction in [0, 1]. An evaluator that measures several architectures at once
    best (one per process of a multi-process search) says how many in an int attribute
    ``together`` (default 1: the search then saves each measurement as soon as it is made).
    """

    space: SearchSpace

    def metric_names(self) -> tuple[str, ...]: ...

    def evaluate(self, archs: Sequence[Arch]) -> list[dict[str, float]]: ...

    def estimate(self, archs: Sequence[Arch]) -> list[dict[str, float]]: ...
