"""The pymoo problem of a search: integer choice indices in, objectives and budget constraints out."""

from __future__ import annotations

from typing import Callable

import numpy as np
from pymoo.core.problem import Problem

from search_spaces.base import SearchSpace

# (n, n_genes) int genomes -> (F (n, n_obj), G (n, n_constr))
BatchFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class ArchProblem(Problem):
    """One integer variable per gene (a choice index), ``n_obj`` minimised objectives and
    ``n_constr`` inequality constraints ``G <= 0`` (the budgets).

    The expensive search evaluates through the ask/tell driver, never through ``_evaluate``; the
    predictor's inner search passes ``fn``, a cheap vectorised surrogate.
    """

    def __init__(self, space: SearchSpace, n_obj: int, n_constr: int, fn: BatchFn | None = None):
        k = np.asarray([len(g.choices) for g in space.genes])
        super().__init__(n_var=len(k), n_obj=n_obj, n_ieq_constr=n_constr, xl=np.zeros(len(k)), xu=k - 1, vtype=int)
        self.fn = fn

    def _evaluate(self, X, out, *args, **kwargs):
        if self.fn is None:  # internal invariant: the driver evaluates through ask/tell
            raise RuntimeError("ArchProblem without a surrogate fn is evaluated by the ask/tell driver")
        F, G = self.fn(np.asarray(X).round().astype(np.int64))
        out["F"] = F
        if self.n_ieq_constr:
            out["G"] = G
