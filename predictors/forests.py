"""Random forests and extra trees through scikit-learn, with the spread of their trees as a std."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
from threadpoolctl import threadpool_limits

from predictors.base import register_predictor
from predictors.trees import RefittedTrees


class _Forest(RefittedTrees):
    """An averaged forest of regression trees; ``predict_std`` is the std of the trees' predictions.

    Saved and reloaded by refitting (:class:`predictors.trees.RefittedTrees`): the forest draws its
    bootstrap samples and feature subsets from ``random_state=seed`` alone.
    """

    supports_std = True
    defaults = {"n_estimators": 200, "max_features": 0.5, "min_samples_leaf": 1}
    estimator: type

    def _build(self, n: int):
        c = self.config
        return self.estimator(
            n_estimators=int(c["n_estimators"]),
            max_features=c["max_features"],
            min_samples_leaf=int(c["min_samples_leaf"]),
            random_state=self.seed,
            n_jobs=1,
        )

    def _predict_std(self, X):
        with threadpool_limits(limits=1, user_api=self.thread_api):
            per_tree = np.stack([tree.predict(X) for tree in self._model.estimators_])  # (trees, N)
        return per_tree.std(0).astype(np.float64)


@register_predictor
class RandomForest(_Forest):
    """sklearn ``RandomForestRegressor``: bootstrap samples, half the features tried at each split."""

    name = "rf"
    estimator = RandomForestRegressor


@register_predictor
class ExtraTrees(_Forest):
    """sklearn ``ExtraTreesRegressor``: random split thresholds, every row in every tree."""

    name = "extra_trees"
    estimator = ExtraTreesRegressor
