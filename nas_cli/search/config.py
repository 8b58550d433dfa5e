"""What a search is asked to do: objectives, budgets, strategy, effort and seed."""

from __future__ import annotations

import dataclasses
import math
from typing import Mapping

from nas_cli.errors import FieldError
from nas_cli.evaluation import METRICS
from nas_cli.search.algorithms import ALGORITHMS
from nas_cli.search.budgets import BUDGET_UNITS, Budget, parse_budget
from predictors import predictor_names
from predictors.data import FEATURE_KINDS

#: how predictor mode proposes what to measure (see :class:`SearchConfig`)
PROPOSALS = ("front", "inner")
#: the largest --pool with zero-cost features: every candidate's proxies are computed (0.1-0.3 s
#: each for a -tiny supernet on a CPU), so a pool of 10^5 would cost hours per iteration
ZERO_COST_MAX_POOL = 5_000
#: seeds numpy, pymoo and scikit-learn accept
MAX_SEED = 2**32 - 1
#: the most of a population, generations, evaluations or a batch a search can run (each one a
#: measured subnet: seconds each), and of a candidate pool (scored in memory)
MAX_COUNT, MAX_POOL = 1_000_000, 10_000_000
#: predictive standard deviations of optimism beyond which every candidate looks the same
MAX_EXPLORE = 1e6


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """What a search optimises, under which budgets, with which strategy and effort.

    ``evaluations=None`` is plain mode; an integer switches to predictor-in-the-loop with that
    many true evaluations (``initial`` of them for the first design, ``batch`` per iteration).
    ``proposal`` is how predictor mode proposes what to measure next: ``front`` scores a candidate
    pool with the predictors (every architecture of a space with at most ``pool`` of them, else
    ``pool`` random ones plus every one-gene neighbour of the measured front) and measures, front by
    predicted front, the candidates not dominated by what is measured, optimistic by ``explore``
    predictive standard deviations; ``inner`` runs the inner ``algorithm`` on predictions.
    ``features`` is what the predictors see: the space's ``structure`` features or the genome's
    ``onehot``, either with ``+zc`` (the zero-cost proxies of every candidate, computed through the
    supernet; ``pool`` at most :data:`ZERO_COST_MAX_POOL`), or ``zc`` alone. ``budgets`` takes what
    the user typed, ``{"latency": "3.5ms", "flops": "60%"}`` (see :func:`parse_budget`), or parsed
    :class:`Budget` s; it holds the parsed ones once built. A SearchConfig is validated when built,
    once: nothing downstream checks its fields again.

    Raises:
      FieldError: (when built) the first bad field, naming it and what is allowed (the CLI names
        its flag).
    """

    objectives: tuple[str, ...] = ("accuracy", "latency")
    budgets: tuple[Budget, ...] | Mapping[str, str] = ()
    algorithm: str = "nsga2"
    population: int = 20
    generations: int = 10
    evaluations: int | None = None
    predictor: str = "auto"
    initial: int | None = None
    batch: int = 8
    seed: int = 0
    proposal: str = "front"
    features: str = "structure"
    pool: int = 100_000
    explore: float = 0.0
    latency_runtime: str = "jax"  # what runs the subnets whose latency is measured (predictors.latency.RUNTIMES)

    def __post_init__(self) -> None:
        bad = [m for m in self.objectives if m not in METRICS]
        if bad:
            raise FieldError(f"unknown objective {bad[0]!r}; known objectives: {', '.join(METRICS)}")
        if len(self.objectives) < 2:
            raise FieldError(f"a search needs at least two objectives, got {list(self.objectives)}")
        if self.algorithm not in ALGORITHMS:
            raise FieldError(f"unknown search algorithm {self.algorithm!r}; "
                            f"known algorithms: {', '.join(ALGORITHMS.names())}")
        if isinstance(self.budgets, Mapping):
            for metric in self.budgets:
                if metric not in BUDGET_UNITS:
                    raise FieldError(f"no budget can be set on {metric!r}; budget metrics: {', '.join(BUDGET_UNITS)}")
            object.__setattr__(self, "budgets", tuple(parse_budget(m, text) for m, text in self.budgets.items()))
        seen = set()
        for b in self.budgets:
            if b.metric not in BUDGET_UNITS:
                raise FieldError(f"no budget can be set on {b.metric!r}; budget metrics: {', '.join(BUDGET_UNITS)}")
            if b.metric in seen:
                raise FieldError(f"two budgets on {b.metric!r}; give one")
            seen.add(b.metric)
        if self.proposal not in PROPOSALS:
            raise FieldError(f"{{proposal}} {self.proposal!r} is unknown; use one of: {', '.join(PROPOSALS)}")
        if self.features not in FEATURE_KINDS:
            raise FieldError(f"{{features}} {self.features!r} is unknown; use one of: {', '.join(FEATURE_KINDS)}")
        if "zc" in self.features and self.evaluations is not None and self.pool > ZERO_COST_MAX_POOL:
            raise FieldError(f"{{features}} {self.features} computes the zero-cost proxies of every candidate "
                            f"(0.1-0.3 s each on a CPU); {{pool}} {self.pool} would take hours per iteration: "
                            f"use {{pool}} {ZERO_COST_MAX_POOL} or less")
        if not (math.isfinite(self.explore) and self.explore >= 0):
            raise FieldError(f"{{explore}} {self.explore!r} must be a finite number >= 0 (predictive stds of optimism)")
        for name, low in (("population", 2), ("generations", 1), ("batch", 1), ("pool", 1)):
            if getattr(self, name) < low:
                raise FieldError(f"{{{name}}} {getattr(self, name)} is too small; use at least {low}")
        # within what the code can hold and run (numpy, pymoo and scikit-learn seeds are 0..2**32-1)
        for name, value, high in (("seed", self.seed, MAX_SEED), ("population", self.population, MAX_COUNT),
                                  ("generations", self.generations, MAX_COUNT), ("batch", self.batch, MAX_COUNT),
                                  ("pool", self.pool, MAX_POOL), ("evaluations", self.evaluations, MAX_COUNT),
                                  ("initial", self.initial, MAX_COUNT)):
            if value is not None and not 0 <= value <= high:
                raise FieldError(f"{{{name}}} {value} is out of range; use 0..{high}" if name == "seed" else
                                f"{{{name}}} {value} is too large; use at most {high}")
        if self.explore > MAX_EXPLORE:
            raise FieldError(f"{{explore}} {self.explore!r} is too large; use at most {MAX_EXPLORE:g}")
        if self.evaluations is not None and self.evaluations < 3:
            raise FieldError(f"{{evaluations}} {self.evaluations} is too small; use at least 3 "
                            "(the largest and smallest subnets are always measured)")
        if self.initial is not None and self.initial < 2:
            raise FieldError(f"{{initial}} {self.initial} is too small; use at least 2")
        # only predictor-in-the-loop uses a predictor; plain mode ignores the name
        if self.evaluations is not None and self.predictor not in predictor_names():
            raise FieldError(f"{{predictor}}: unknown predictor {self.predictor!r}; "
                            f"known predictors: {', '.join(predictor_names())}")

    @property
    def initial_size(self) -> int:
        """Predictor mode: the size of the initial design."""
        assert self.evaluations is not None
        n = self.initial if self.initial is not None else max(4, self.evaluations // 4)
        return min(n, self.evaluations)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["objectives"] = list(self.objectives)
        d["budgets"] = [dataclasses.asdict(b) for b in self.budgets]
        if self.latency_runtime == "jax":  # searches written before the runtime was a choice read the same
            del d["latency_runtime"]
        return d
