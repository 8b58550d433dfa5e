"""Random forests and extra trees through scikit-learn, with the spread of their trees as a std."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import ExtraTreesRegressor, RandomForestRegressor
from threadpoolctl import threadpool_limits

from predictors.base import Predictor, register_predictor


class _Forest(Predictor):
    """An averaged forest of regression trees; ``predict_std`` is the std of the trees' predictions.

    Saving stores the training data and the config instead of sklearn's objects (no pickle), as
    ``gbt`` does; loading refits, which is exact because the forest draws its bootstrap samples and
    feature subsets from ``random_state=seed`` alone and builds its trees in one thread.
    """

    supports_std = True
    defaults = {"n_estimators": 200, "max_features": 0.5, "min_samples_leaf": 1}
    estimator: type

    def _build(self):
        c = self.config
        return self.estimator(
            n_estimators=int(c["n_estimators"]),
            max_features=c["max_features"],
            min_samples_leaf=int(c["min_samples_leaf"]),
            random_state=self.seed,
            n_jobs=1,
        )

    # One thread, as in gbt: the machines this runs on are small and shared.
    def _fit(self, X, y, pretrain):
        self._X, self._y = X, y
        with threadpool_limits(limits=1):
            self._model = self._build().fit(X, y)

    def _predict(self, X):
        with threadpool_limits(limits=1):
            return self._model.predict(X).astype(np.float64)

    def _predict_std(self, X):
        with threadpool_limits(limits=1):
            per_tree = np.stack([tree.predict(X) for tree in self._model.estimators_])  # (trees, N)
        return per_tree.std(0).astype(np.float64)

    def _state(self):
        return {}, {"X": self._X, "y": self._y}

    def _restore(self, meta, arrays):
        self._fit(arrays["X"], arrays["y"], None)


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
