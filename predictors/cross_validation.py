"""k-fold cross-validation of a predictor found by its registered name."""

from __future__ import annotations

import numpy as np

from predictors.base import get_predictor
from predictors.metrics import all_metrics, kfold_indices

METRICS = ("kendall_tau", "spearman", "rmse")


def out_of_fold(name: str, X, y, k: int = 5, seed: int = 0, pretrain: tuple | None = None,
                **options) -> tuple[list, np.ndarray]:
    """Every row's prediction by the fold model that did not see it.

    Fold ``i`` fits ``get_predictor(name, seed=seed + i, **options)`` on the other folds (with
    ``pretrain`` passed to its ``fit``).

    Returns:
      ``(folds, predictions)``: the (train, test) index pairs of :func:`predictors.metrics.kfold_indices`
      and the out-of-fold predictions, shape ``(N,)``.
    """
    X = np.asarray(X, np.float32)
    y = np.asarray(y, np.float64).reshape(-1)
    folds = kfold_indices(len(y), k, seed)
    predictions = np.empty(len(y), np.float64)
    for i, (train, test) in enumerate(folds):
        model = get_predictor(name, seed=seed + i, **options).fit(X[train], y[train], pretrain=pretrain)
        predictions[test] = model.predict(X[test])
    return folds, predictions


def out_of_fold_many(names, X, y, k: int, seed: int) -> tuple[list, dict[str, np.ndarray]]:
    """:func:`out_of_fold` of every model in ``names`` on the same folds (``k`` capped at half the
    rows): ``(folds, {name: predictions})``."""
    k = min(int(k), len(y) // 2)
    folds, predictions = None, {}
    for name in names:
        folds, predictions[name] = out_of_fold(name, X, y, k=k, seed=seed)
    return folds, predictions


def fold_metrics(y, predictions, folds) -> dict:
    """Metrics of out-of-fold ``predictions`` as :func:`cross_validate` reports them (means over folds)."""
    y = np.asarray(y, np.float64).reshape(-1)
    per_fold = [all_metrics(y[test], predictions[test]) for _, test in folds]
    out: dict = {"k": len(folds)}
    for key in METRICS:
        values = np.array([f[key] for f in per_fold])
        out[key] = float(values.mean())
        out[f"{key}_std"] = float(values.std())
    out["folds"] = per_fold
    return out


def cross_validate(name: str, X, y, k: int = 5, seed: int = 0, pretrain: tuple | None = None, **options) -> dict:
    """k-fold cross-validated metrics of the predictor registered as ``name``.

    Returns ``{"model", "k", "kendall_tau", "spearman", "rmse"}`` (means over folds), their
    standard deviations under ``"<metric>_std"``, and the per-fold values under ``"folds"``.
    Fold ``i`` fits ``get_predictor(name, seed=seed + i)``.
    """
    folds, predictions = out_of_fold(name, X, y, k=k, seed=seed, pretrain=pretrain, **options)
    return {"model": name, **fold_metrics(y, predictions, folds)}
