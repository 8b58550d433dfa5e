"""Ranking and error metrics of a predictor, and k-fold cross-validation by registered name.

A search only needs the predictor to *order* architectures well, so models are compared by
Kendall tau (tau-b, which handles ties); Spearman rho and RMSE are reported beside it.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def _pair(y_true, y_pred) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(y_true, np.float64).reshape(-1)
    b = np.asarray(y_pred, np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"y_true has {a.size} values but y_pred has {b.size}; pass equal lengths")
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
        raise ValueError(f"k-fold cross-validation needs k >= 2, got k={k}")
    if n < 2 * k:
        raise ValueError(f"{n} samples are too few for {k}-fold cross-validation; need at least {2 * k}")
    order = np.random.default_rng(seed).permutation(n)
    folds = np.array_split(order, k)
    return [(np.sort(np.concatenate(folds[:i] + folds[i + 1 :])), np.sort(folds[i])) for i in range(k)]


def cross_validate(name: str, X, y, k: int = 5, seed: int = 0, **options) -> dict:
    """k-fold cross-validated metrics of the predictor registered as ``name``.

    Returns ``{"model", "k", "kendall_tau", "spearman", "rmse"}`` (means over folds), their
    standard deviations under ``"<metric>_std"``, and the per-fold values under ``"folds"``.
    Fold ``i`` fits ``get_predictor(name, seed=seed + i)``.
    """
    from predictors.base import get_predictor  # the registry imports this module

    X = np.asarray(X, np.float32)
    y = np.asarray(y, np.float64).reshape(-1)
    per_fold = []
    for i, (train, test) in enumerate(kfold_indices(len(y), k, seed)):
        model = get_predictor(name, seed=seed + i, **options).fit(X[train], y[train])
        per_fold.append(all_metrics(y[test], model.predict(X[test])))
    out: dict = {"model": name, "k": k}
    for key in ("kendall_tau", "spearman", "rmse"):
        values = np.array([f[key] for f in per_fold])
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std())
    out["folds"] = per_fold
    return out
