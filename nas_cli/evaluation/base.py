"""What a search asks of the thing it evaluates architectures with (a supernet run or a table).

:class:`Evaluator` declares every capability the search uses, each with its default, so that an
evaluator that lacks one gets the default on purpose and a misspelt one is an attribute the search
never reads, not a feature silently switched off by a ``getattr`` fallback. :class:`Wrapping` is an
evaluator around another (reporting progress, spreading measurements over processes) that passes
every capability through unless it overrides it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

from search_spaces.base import Arch, SearchSpace

#: metric names, and whether larger is better
METRICS = {"accuracy": True, "latency": False, "flops": False, "params": False}

#: a search's direct latency measurement (nas_cli.evaluation.supernet): interleaved rounds x runs per subnet,
#: beside the reference subnets; what pareto.json and an export's record say of it
SEARCH_ROUNDS, SEARCH_REPEATS = 10, 5
#: without a search's calibration (``--no-latency-calibrate``): runs of each subnet timed alone
ALONE_REPEATS = 30


class Evaluator:
    """Measures architectures of one space.

    ``evaluate`` is the expensive truth (supernet accuracy with recalibrated BatchNorm, measured
    latency, or a table look-up); ``estimate`` returns what is known or modelled cheaply (exact
    FLOPs/params, a latency lookup table or predictor), and may return a subset of the metrics.
    Both return one dict per architecture, keyed by metric name; latency is in milliseconds and
    accuracy is a fraction in [0, 1].

    The class attributes are the optional capabilities, at their defaults.
    """

    space: SearchSpace
    #: how many new architectures :meth:`evaluate` measures best in one call (one per process of a
    #: multi-process search); 1: the search saves each measurement as soon as it is made
    together: int = 1
    #: the training run whose supernet measures (zero-cost features are computed through it); None
    #: for an evaluator with no supernet (a benchmark table)
    run = None
    #: the identity of the weights every measurement depends on (recorded with the search), if any
    weights: dict | None = None
    #: the latency model's scaling to this device's speed, or the level measured latencies are put
    #: at (nas_cli.evaluation.supernet.LATENCY_CALIBRATION); None where latency is not measured or modelled here
    latency_calibration: dict | None = None
    #: the runtime latencies are measured or modelled in (predictors.latency runtimes), if any
    runtime: str | None = None
    #: the latency table or model file (absolute path) latencies are estimated with, if any
    latency_file: str | None = None
    #: the benchmark table's file, where a table is the truth
    benchmark_table: Path | None = None

    def metric_names(self) -> tuple[str, ...]:
        raise NotImplementedError

    def evaluate(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        raise NotImplementedError

    def estimate(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        return [{} for _ in archs]

    def known_truth(self) -> Mapping[str, dict[str, float]] | None:
        """Every architecture's true metrics by canonical string, where the evaluator knows them
        all (a benchmark table: the search then reports how close it came to the true front)."""
        return None

    def remeasure(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        """Extra fields for the final front's rows (a modelled latency's measured value)."""
        return [{} for _ in archs]


#: what :class:`Wrapping` passes through to the evaluator it wraps
CAPABILITIES = ("space", "together", "run", "weights", "latency_calibration", "latency_file", "runtime",
                "benchmark_table", "metric_names", "evaluate", "estimate", "known_truth", "remeasure")


class Wrapping(Evaluator):
    """An evaluator around ``inner``: every capability is ``inner``'s unless a subclass overrides it."""

    def __init__(self, inner: Evaluator):
        if not isinstance(inner, Evaluator):
            raise TypeError(f"{type(inner).__name__} is not a nas_cli.evaluation.Evaluator")
        self.inner = inner


def _passed_through(name: str) -> property:
    return property(lambda self: getattr(self.inner, name), doc=f"``inner.{name}``")


for _name in CAPABILITIES:
    setattr(Wrapping, _name, _passed_through(_name))
del _name


def latency_record(evaluator) -> dict | None:
    """What a search's latencies are, as a record (pareto.json's ``latency_measurement``, what
    ``nas export subnet --rank K`` measures the chosen subnet under again): source ("measured" here,
    "table" for a latency file's estimate), runtime and its session options, device, batch, timing
    rounds x repeats, and the device speed every figure is put at (``level_ms`` of ``references``;
    None: as timed). None where the evaluator says nothing of its latencies."""
    from predictors.latency import protocol_record  # noqa: PLC0415

    calibration = evaluator.latency_calibration or {}
    runtime = evaluator.runtime
    file = calibration.get("file") or evaluator.latency_file
    if file:  # a latency table or learned model (nas search --latency-table)
        try:
            data = json.loads(Path(file).read_text())
        except (OSError, ValueError):
            data = {}
        reference = data.get("reference") or {}
        level = calibration.get("level_now_ms", reference.get("level_ms"))
        return {"source": "table", "file": str(file), "format": data.get("format"),
                "runtime": data.get("runtime") or {"name": runtime}, "device": data.get("device"),
                "batch": int(data.get("batch", 1)), "rounds": data.get("rounds"), "repeats": data.get("repeats"),
                "references": reference.get("archs"), "level_ms": None if level is None else float(level),
                "scale": float(calibration.get("scale", 1.0)), "scaled": "scale" in calibration and "why" not in calibration,
                "overhead_dominated": bool((data.get("quality") or {}).get("overhead_dominated", False))}
    if runtime is not None:

        if calibration.get("mode") == "measured":
            return protocol_record(runtime, rounds=SEARCH_ROUNDS, repeats=SEARCH_REPEATS,
                                   references=calibration.get("references"), level_ms=calibration["level_ms"])
        # --no-latency-calibrate: each subnet timed alone, as is (RunEvaluator.measured_latency)
        return protocol_record(runtime, rounds=1, repeats=ALONE_REPEATS)
    if evaluator.benchmark_table is not None:
        return {"source": "benchmark", "file": str(evaluator.benchmark_table)}
    return None
