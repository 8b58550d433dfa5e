"""Hardware-aware multi-objective search: categorical pymoo operators, a strategy registry, an
ask/tell driver that checkpoints and resumes, predictor-in-the-loop, hypervolume tracking."""

from nas_cli.search.algorithms import ALGORITHMS, algorithm_names, make_algorithm
from nas_cli.search.budgets import Budget, parse_budget, parse_objectives
from nas_cli.search.cache import EvalCache
from nas_cli.search.driver import SearchConfig, SearchResult, initial_design, run_search, select_diverse
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
from nas_cli.search.outputs import format_front
from nas_cli.search.problem import ArchProblem
from nas_cli.search.tracking import Normaliser, hypervolume, make_normaliser

__all__ = [
    "ALGORITHMS", "ArchCrossover", "ArchMutation", "ArchProblem", "ArchRepair", "ArchSampling", "Budget",
    "CanonicalDuplicates", "EvalCache", "Normaliser", "SearchConfig", "SearchResult", "algorithm_names",
    "format_front", "hypervolume", "initial_design", "make_algorithm", "make_normaliser", "parse_budget",
    "parse_objectives", "point_crossover", "repair_genomes", "resample_mutation", "run_search",
    "sample_genomes", "select_diverse", "uniform_crossover",
]
