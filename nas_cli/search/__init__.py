"""Hardware-aware multi-objective search: categorical pymoo operators, a strategy registry, an
ask/tell driver that checkpoints and resumes, predictor-in-the-loop, hypervolume tracking.

Modules, one job each: ``config`` (SearchConfig), ``budgets``, ``algorithms`` (the registry of
strategies: a new one is a builder function plus one ``ALGORITHMS.register`` line), ``operators``,
``problem``, ``cache``, ``state`` (what a search directory keeps to resume), ``context`` (what the
loops share), ``plain`` (the ask/tell loop), ``predictor_loop``, ``selection`` (initial design,
diverse candidates), ``tracking`` (fronts, hypervolume), ``outputs``, ``driver`` (run_search) and
``pipeline`` (what `nas search` runs: a training run or a benchmark table as the truth).
"""

from nas_cli.search.algorithms import ALGORITHMS, algorithm_names, make_algorithm
from nas_cli.search.budgets import Budget, parse_budget, parse_objectives
from nas_cli.search.cache import EvalCache
from nas_cli.search.config import SearchConfig
from nas_cli.search.driver import SearchResult, resolve_budgets, run_search
from nas_cli.search.operators import (
    ArchCrossover,
    ArchMutation,
    ArchRepair,
    ArchSampling,
    CanonicalDuplicates,
    point_crossover,
    repair_genomes,
    resample_mutation,
    sample_genomes,
    uniform_crossover,
)
from nas_cli.search.outputs import format_bounds, format_front, latency_warning
from nas_cli.search.pipeline import search_pipeline
from nas_cli.search.problem import ArchProblem
from nas_cli.search.selection import initial_design, select_diverse
from nas_cli.search.tracking import Normaliser, hypervolume, make_normaliser

__all__ = [
    "ALGORITHMS",
    "ArchCrossover",
    "ArchMutation",
    "ArchProblem",
    "ArchRepair",
    "ArchSampling",
    "Budget",
    "CanonicalDuplicates",
    "EvalCache",
    "Normaliser",
    "SearchConfig",
    "SearchResult",
    "algorithm_names",
    "format_bounds",
    "format_front",
    "hypervolume",
    "initial_design",
    "latency_warning",
    "make_algorithm",
    "make_normaliser",
    "parse_budget",
    "parse_objectives",
    "point_crossover",
    "repair_genomes",
    "resample_mutation",
    "resolve_budgets",
    "run_search",
    "sample_genomes",
    "search_pipeline",
    "select_diverse",
    "uniform_crossover",
]
