"""k-fold cross-validation of a predictor found by its registered name."""

from __future__ import annotations

import numpy as np

from predictors.base import get_predictor
from predictors.metrics import all_metrics, kfold_indices


def cross_validate(name: str, X, y, k: int = 5, seed: int = 0, **options) -> dict:
    """k-fold cross-validated metrics of the predictor registered as ``name``.

    Returns ``{"model", "k", "kendall_tau", "spearman", "rmse"}`` (means over folds), their
    standard deviations under ``"<metric>_std"``, and the per-fold values under ``"folds"``.
    Fold ``i`` fits ``get_predictor(name, seed=seed + i)``.
    """
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
