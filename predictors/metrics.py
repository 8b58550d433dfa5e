"""Ranking and error metrics of a predictor, and the k-fold splits that cross-validation uses.

A search only needs the predictor to *order* architectures well, so models are compared by
Kendall tau (tau-b, which handles ties); Spearman rho and RMSE are reported beside it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from predictors.errors import PredictorError


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y_true, np.float64).reshape(-1)
    b = np.asarray(y_pred, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise PredictorError(f"y_true has {a.size} values but y_pred has {b.size}; pass equal lengths")
    return a, b


def _finite_or_zero(value: float) -> float:
    # A constant prediction (or target) has no ranking: scipy returns nan. We report 0.0 (no
    # rank agreement) so the figure stays valid JSON and model selection can still compare it.
    value = float(value)
    return value if math.isfinite(value) else 0.0


def kendall_tau(y_true, y_pred) -> float:
    """Kendall tau-b between targets and predictions; 0.0 when either side is constant."""
    a, b = _pair(y_true, y_pred)
    if a.size < 2:
        return 0.0
    return _finite_or_zero(stats.kendalltau(a, b).statistic)


def spearman(y_true, y_pred) -> float:
    """Spearman rank correlation; 0.0 when either side is constant."""
    a, b = _pair(y_true, y_pred)
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return 0.0
    return _finite_or_zero(stats.spearmanr(a, b).statistic)


def rmse(y_true, y_pred) -> float:
    """Root mean squared error."""
    a, b = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((a - b) ** 2))) if a.size else 0.0


def all_metrics(y_true, y_pred) -> dict[str, float]:
    """``{"kendall_tau", "spearman", "rmse", "n"}`` of one set of predictions."""
    a, b = _pair(y_true, y_pred)
    return {
        "kendall_tau": kendall_tau(a, b),
        "spearman": spearman(a, b),
        "rmse": rmse(a, b),
        "n": int(a.size),
    }


def kfold_indices(n: int, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Shuffled k-fold (train, test) index pairs, deterministic per seed."""
    if k < 2:
        raise PredictorError(f"k-fold cross-validation needs k >= 2, got k={k}")
    if n < 2 * k:
        raise PredictorError(f"{n} samples are too few for {k}-fold cross-validation; need at least {2 * k}")
    order = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(order, k)
    return [(np.sort(np.concatenate(folds[:i] + folds[i + 1 :])), np.sort(folds[i])) for i in range(k)]
