"""Search strategies found by name, all built on the categorical operators of this package.

A new strategy is one builder function here (or in its own module) plus one line registering it
in :data:`ALGORITHMS`; the CLI's help, its errors and the conformance tests list the registry.
"""

from __future__ import annotations

import contextlib
import sys
import types
from typing import Callable

import numpy as np
from pymoo.algorithms.moo.moead import ParallelMOEAD
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.algorithms.moo.nsga3 import NSGA3
from pymoo.core.algorithm import Algorithm
from pymoo.core.population import Population
from pymoo.util.ref_dirs import get_reference_directions
from scipy.spatial.distance import cdist

from nas_cli.errors import UserError
from nas_cli.search.operators import (
    ArchCrossover,
    ArchMutation,
    ArchRepair,
    ArchSampling,
    CanonicalDuplicates,
    n_choices,
)
from search_spaces.base import SearchSpace
from search_spaces.registry import Registry

#: (n_obj, pop_size, operators, duplicate elimination) -> a fresh pymoo algorithm
Builder = Callable[[int, int, dict, CanonicalDuplicates], Algorithm]


@contextlib.contextmanager
def _numba_or_plain_python():
    """Lets pymoo's AGE-MOEA(-II) import without numba.

    Its numba use is only ``@jit`` on plain numpy loops plus a few dtypes, so without numba we
    stand in an identity ``jit`` for the import (the kernels then run uncompiled, slower but
    identical) and take the stand-in out of ``sys.modules`` again so nothing else sees it.
    """
    try:
        import numba  # noqa: F401

        yield
        return
    except ImportError:
        pass
    shim = types.ModuleType("numba")
    shim.jit = lambda *a, **k: (a[0] if a and callable(a[0]) and not k else (lambda f: f))
    shim.float64, shim.intp, shim.boolean = np.float64, np.intp, np.bool_
    sys.modules["numba"] = shim
    try:
        yield
    finally:
        if sys.modules.get("numba") is shim:
            del sys.modules["numba"]


def _agemoea2():
    with _numba_or_plain_python():
        from pymoo.algorithms.moo.age2 import AGEMOEA2
    return AGEMOEA2


def _ref_dirs(n_obj: int, pop_size: int) -> np.ndarray:
    """Das-Dennis directions: the most partitions whose count still fits in ``pop_size``."""
    best = get_reference_directions("das-dennis", n_obj, n_partitions=1)
    p = 2
    while True:
        dirs = get_reference_directions("das-dennis", n_obj, n_partitions=p)
        if len(dirs) > pop_size:
            return best
        best, p = dirs, p + 1


class ConstrainedMOEAD(ParallelMOEAD):
    """MOEA/D (batch infill, so ask/tell evaluates a whole generation) with budget constraints.

    pymoo's MOEA/D refuses constrained problems. Budgets must stay hard constraints, not penalties,
    so replacement follows the feasibility rules (Deb 2000, as in CMOEA/D): a smaller constraint
    violation wins, and among feasible solutions the decomposed objective decides.
    """

    def _setup(self, problem, **kwargs):
        from pymoo.algorithms.moo.moead import default_decomp

        if self.ref_dirs is None:  # internal invariant: make_algorithm always passes them
            raise RuntimeError("ConstrainedMOEAD needs reference directions")
        self.pop_size = len(self.ref_dirs)
        self.neighbors = np.argsort(cdist(self.ref_dirs, self.ref_dirs), axis=1, kind="stable")[:, : self.n_neighbors]
        if self.decomposition is None:
            self.decomposition = default_decomp(problem)

    def _replace(self, k, off):
        pop = self.pop
        N = self.neighbors[k]
        FV = self.decomposition.do(pop[N].get("F"), weights=self.ref_dirs[N, :], ideal_point=self.ideal)
        off_FV = self.decomposition.do(off.F[None, :], weights=self.ref_dirs[N, :], ideal_point=self.ideal)
        cv = pop[N].get("CV")[:, 0]
        off_cv = float(off.CV[0]) if off.CV is not None else 0.0
        better = (off_cv < cv) | ((off_cv <= 0) & (cv <= 0) & (off_FV < FV))
        pop[N[np.flatnonzero(better)]] = off


class RandomSearch(Algorithm):
    """Uniform random sampling, ``pop_size`` new (never seen) architectures per generation.

    The population is the archive of everything sampled, so ``opt`` is the best front seen.
    """

    def __init__(self, pop_size: int, sampling, eliminate_duplicates, **kwargs):
        super().__init__(**kwargs)
        self.pop_size = pop_size
        self.sampling = sampling
        self.eliminate_duplicates = eliminate_duplicates

    def _sample(self) -> Population:
        seen = self.pop if self.pop is not None else Population.empty()
        out = Population.empty()
        for _ in range(20):  # small spaces can run out of unseen architectures; stop trying then
            new = self.sampling.do(self.problem, 2 * self.pop_size, random_state=self.random_state)
            new = self.eliminate_duplicates.do(new, seen, out)
            out = Population.merge(out, new)
            if len(out) >= self.pop_size:
                break
        return out[: self.pop_size]

    def _initialize_infill(self):
        return self._sample()

    def _infill(self):
        return self._sample()

    def _advance(self, infills=None, **kwargs):
        self.pop = Population.merge(self.pop, infills)


def _nsga2(n_obj: int, pop_size: int, ops: dict, dedup) -> Algorithm:
    return NSGA2(pop_size=pop_size, eliminate_duplicates=dedup, **ops)


def _nsga3(n_obj: int, pop_size: int, ops: dict, dedup) -> Algorithm:
    return NSGA3(ref_dirs=_ref_dirs(n_obj, pop_size), pop_size=pop_size, eliminate_duplicates=dedup, **ops)


def _agemoea2_algorithm(n_obj: int, pop_size: int, ops: dict, dedup) -> Algorithm:
    return _agemoea2()(pop_size=pop_size, eliminate_duplicates=dedup, **ops)


def _moead(n_obj: int, pop_size: int, ops: dict, dedup) -> Algorithm:
    dirs = _ref_dirs(n_obj, pop_size)
    return ConstrainedMOEAD(dirs, n_neighbors=max(2, min(10, len(dirs))), **ops)


def _random(n_obj: int, pop_size: int, ops: dict, dedup) -> Algorithm:
    return RandomSearch(pop_size=pop_size, sampling=ops["sampling"], eliminate_duplicates=dedup)


#: every search strategy, by name, in the order help texts list them
ALGORITHMS: Registry[Builder] = Registry("search algorithm")
ALGORITHMS.register("nsga2", _nsga2)
ALGORITHMS.register("nsga3", _nsga3)
ALGORITHMS.register("agemoea2", _agemoea2_algorithm)
ALGORITHMS.register("moead", _moead)
ALGORITHMS.register("random", _random)


def algorithm_names() -> list[str]:
    """The registered search strategies, in registration order."""
    return ALGORITHMS.names()


def make_algorithm(name: str, space: SearchSpace, n_obj: int, pop_size: int, *, crossover: str = "uniform"):
    """A fresh (not yet set up) pymoo algorithm registered as ``name`` for ``space``.

    Raises:
      UserError: ``name`` is not registered in :data:`ALGORITHMS`, or ``pop_size`` is too small.
    """
    if name not in ALGORITHMS:
        raise UserError(f"unknown search algorithm {name!r}; known algorithms: {', '.join(ALGORITHMS.names())}")
    if pop_size < 2:
        raise UserError(f"population {pop_size} is too small; use at least 2")
    ops = dict(
        sampling=ArchSampling(space),
        crossover=ArchCrossover(crossover),
        mutation=ArchMutation(n_choices(space)),
        repair=ArchRepair(space),
    )
    return ALGORITHMS.get(name)(n_obj, pop_size, ops, CanonicalDuplicates(space))
