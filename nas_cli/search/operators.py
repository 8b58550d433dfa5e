"""Categorical genetic operators on genomes of choice indices, in pymoo's shape.

Each operator is a pure function of numpy arrays and a ``numpy.random.Generator`` (so a search is
reproducible per seed and the functions are testable alone), plus a thin pymoo subclass whose
``_do`` forwards pymoo's ``random_state`` to it (pymoo ``operators/crossover/sbx.py`` style).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pymoo.core.crossover import Crossover
from pymoo.core.duplicate import DuplicateElimination
from pymoo.core.mutation import Mutation
from pymoo.core.repair import Repair
from pymoo.core.sampling import Sampling

from search_spaces.base import SearchSpace

CROSSOVERS = ("uniform", "point")


def n_choices(space: SearchSpace) -> np.ndarray:
    """Number of choices of every gene, shape ``(n_genes,)``."""
    return np.asarray([len(g.choices) for g in space.genes], np.int64)


def repair_genomes(space: SearchSpace, X: np.ndarray) -> np.ndarray:
    """The canonical genome of every row: genes that a shallower depth switches off are reset."""
    X = np.asarray(X).round().astype(np.int64)
    if len(X) == 0:
        return X.reshape(0, len(space.genes))
    return np.stack([space.to_genome(space.from_genome(x)) for x in X]).astype(np.int64)


def canonical_keys(space: SearchSpace, X: np.ndarray) -> list[str]:
    """The canonical architecture string of every genome row."""
    return [space.encode(space.from_genome(np.asarray(x).round().astype(np.int64))) for x in X]


def sample_genomes(space: SearchSpace, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` uniformly random genomes ``(n, n_genes)``, repaired to canonical form."""
    k = n_choices(space)
    X = np.floor(rng.random((n, len(k))) * k).astype(np.int64)
    return repair_genomes(space, X)


def uniform_crossover(X: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Swaps every gene between the two parents with probability 1/2.

    Args:
      X: parents ``(2, n_matings, n_genes)``.
    Returns:
      offspring ``(2, n_matings, n_genes)``.
    """
    _, m, v = X.shape
    swap = rng.random((m, v)) < 0.5
    return np.stack([np.where(swap, X[1], X[0]), np.where(swap, X[0], X[1])])


def point_crossover(X: np.ndarray, rng: np.random.Generator, n_points: int = 1) -> np.ndarray:
    """Exchanges the gene segments between ``n_points`` random cut points (``(2, M, V)`` in and out)."""
    _, m, v = X.shape
    if v < 2:
        return X.copy()
    n_points = min(n_points, v - 1)
    swap = np.zeros((m, v), bool)
    for i in range(m):
        cuts = np.sort(rng.permutation(v - 1)[:n_points] + 1)
        # genes after an odd number of cuts come from the other parent
        swap[i] = (np.searchsorted(cuts, np.arange(v), side="right") % 2) == 1
    return np.stack([np.where(swap, X[1], X[0]), np.where(swap, X[0], X[1])])


def resample_mutation(X: np.ndarray, choices: Sequence[int], prob_var: float, rng: np.random.Generator) -> np.ndarray:
    """Replaces each gene, with probability ``prob_var``, by a *different* uniformly drawn choice.

    Choice indices are categories, not numbers, so the new value ignores the old one's
    neighbourhood (unlike polynomial mutation on integers).
    """
    X = np.asarray(X, np.int64).copy()
    k = np.asarray(choices, np.int64)[None, :].repeat(len(X), 0)
    hit = (rng.random(X.shape) < prob_var) & (k > 1)
    # draw from the k-1 other choices: an offset in [1, k-1] added modulo k
    offset = 1 + np.floor(rng.random(X.shape) * np.maximum(k - 1, 1)).astype(np.int64)
    X[hit] = (X[hit] + offset[hit]) % k[hit]
    return X


class ArchSampling(Sampling):
    """Uniform random canonical genomes."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space

    def _do(self, problem, n_samples, *args, random_state=None, **kwargs):
        return sample_genomes(self.space, n_samples, random_state)


class ArchCrossover(Crossover):
    """Uniform or point crossover on choice indices (two parents, two offspring)."""

    def __init__(self, kind: str = "uniform", n_points: int = 1, prob: float = 0.9):
        if kind not in CROSSOVERS:
            raise ValueError(f"unknown crossover {kind!r}; known: {', '.join(CROSSOVERS)}")
        super().__init__(2, 2, prob=prob)
        self.kind = kind
        self.n_points = n_points

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        X = np.asarray(X).round().astype(np.int64)
        if self.kind == "uniform":
            return uniform_crossover(X, random_state)
        return point_crossover(X, random_state, self.n_points)


class ArchMutation(Mutation):
    """Per-gene resampling mutation; ``prob_var`` defaults to 1/n_genes."""

    def __init__(self, choices: Sequence[int], prob: float = 1.0, prob_var: float | None = None):
        super().__init__(prob=prob, prob_var=prob_var)
        self.choices = np.asarray(choices, np.int64)

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        prob_var = float(self.get_prob_var(problem))
        return resample_mutation(X, self.choices, prob_var, random_state)


class ArchRepair(Repair):
    """Maps every genome to its architecture's canonical genome."""

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space

    def _do(self, problem, X, *args, **kwargs):
        return repair_genomes(self.space, X)


class CanonicalDuplicates(DuplicateElimination):
    """Two genomes are duplicates when they build the same architecture (same canonical string).

    Hash-based, so linear in the population size (pymoo's ElementwiseDuplicateElimination compares
    all pairs).
    """

    def __init__(self, space: SearchSpace):
        super().__init__()
        self.space = space

    def _do(self, pop, other, is_duplicate):
        seen = set() if other is None else set(canonical_keys(self.space, other.get("X")))
        for i, key in enumerate(canonical_keys(self.space, pop.get("X"))):
            if key in seen:
                is_duplicate[i] = True
            else:
                seen.add(key)
        return is_duplicate
