"""Choosing which architectures to measure: a space-filling initial design, diverse candidates, and
candidates of the predicted front ranked against what is already measured."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from nas_cli.search.operators import canonical_keys, sample_genomes
from nas_cli.search.tracking import front_indices
from search_spaces.base import Arch, SearchSpace


def initial_design(space: SearchSpace, n: int, rng: np.random.Generator, fixed: Sequence[Arch] = (),
                   encode: Callable[[Arch], np.ndarray] | None = None) -> list[Arch]:
    """``n`` distinct architectures: ``fixed`` first, then a greedy max-min (space-filling) pick from
    a random pool, by Euclidean distance of predictor features (``encode``, by default the space's
    structure features)."""
    encode = encode or space.structure_features
    chosen = list(dict.fromkeys(space.encode(a) for a in fixed))[:n]
    pool = list(dict.fromkeys(canonical_keys(space, sample_genomes(space, max(20 * n, 200), rng))))
    pool = [k for k in pool if k not in set(chosen)]
    if len(chosen) < n and pool:
        feats = np.stack([encode(space.decode(k)) for k in pool])
        if chosen:
            ref = np.stack([encode(space.decode(k)) for k in chosen])
            dist = np.min(((feats[:, None] - ref[None]) ** 2).sum(-1), axis=1)
        else:
            dist = np.full(len(pool), np.inf)
        taken = np.zeros(len(pool), bool)
        while len(chosen) < n and not taken.all():
            i = int(np.argmax(np.where(taken, -1.0, dist)))
            taken[i] = True
            chosen.append(pool[i])
            dist = np.minimum(dist, ((feats - feats[i]) ** 2).sum(-1))
    return [space.decode(k) for k in chosen]


def _spread(F: np.ndarray, rest: list[int], ref: list, chosen: list[int], k: int) -> None:
    """Moves candidates of ``rest`` (one front) into ``chosen`` until it holds ``k``: each time the one
    farthest from ``ref`` (the fronts and picks so far; the lowest first objective when empty)."""
    rest = list(rest)
    while rest and len(chosen) < k:
        if ref:
            R = np.stack(ref)
            j = int(np.argmax(np.min(((F[rest][:, None] - R[None]) ** 2).sum(-1), axis=1)))
        else:
            j = int(np.argmin(F[rest, 0]))
        i = rest.pop(j)
        chosen.append(int(i))
        ref.append(F[i])


def _least_infeasible(cv: np.ndarray, chosen: list[int], k: int) -> list[int]:
    """``chosen`` filled up to ``k`` with the infeasible candidates, least violation first."""
    infeasible = np.flatnonzero(cv > 0)
    for i in infeasible[np.argsort(cv[infeasible], kind="stable")]:
        if len(chosen) >= k:
            break
        chosen.append(int(i))
    return chosen


def select_diverse(F: np.ndarray, cv: np.ndarray, k: int, anchors: np.ndarray | None = None) -> list[int]:
    """Picks ``k`` candidates: predicted-feasible ones by non-dominated front, within a front the one
    farthest (in normalised objective space) from the anchors and the ones already picked; then
    the least infeasible. Deterministic (ties go to the lower index).

    Args:
      F: predicted normalised objectives ``(n, n_obj)``.
      cv: predicted constraint violation ``(n,)``, ``<= 0`` feasible.
      anchors: objectives of points already measured on the front ``(m, n_obj)``.
    """
    chosen: list[int] = []
    ref = [a for a in (anchors if anchors is not None else np.zeros((0, F.shape[1])))]
    left = np.flatnonzero(cv <= 0)
    while len(chosen) < k and len(left):
        front = left[front_indices(F[left])]
        _spread(F, [int(i) for i in front], ref, chosen, k)
        left = np.setdiff1d(left, front)
    return _least_infeasible(cv, chosen, k)


def select_front(F: np.ndarray, cv: np.ndarray, k: int, measured: np.ndarray) -> list[int]:
    """Picks ``k`` candidates by non-dominated rank among the candidates *and* the measured
    architectures together: first the candidates that nothing measured or predicted dominates, then
    the next front, and so on (within a front the one farthest from the measured front and the ones
    already picked); then the least infeasible. Deterministic (ties go to the lower index).

    Args:
      F: predicted normalised objectives of the candidates ``(n, n_obj)``.
      cv: predicted constraint violation ``(n,)``, ``<= 0`` feasible.
      measured: true normalised objectives of the feasible measured architectures ``(m, n_obj)``.
    """
    chosen: list[int] = []
    feas = np.flatnonzero(cv <= 0)
    if len(feas) and k > 0:
        measured = np.asarray(measured, np.float64).reshape(-1, F.shape[1])
        both = np.concatenate([measured, F[feas]])
        fronts = NonDominatedSorting().do(both, n_stop_if_ranked=len(measured) + k)
        mfront = measured[front_indices(measured)] if len(measured) else measured
        ref = list(mfront)
        for front in fronts:
            _spread(F, [int(feas[j - len(measured)]) for j in front if j >= len(measured)], ref, chosen, k)
            if len(chosen) >= k:
                break
    return _least_infeasible(cv, chosen, k)
