"""Gradient-boosted trees through scikit-learn's HistGradientBoostingRegressor."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from predictors.base import Predictor, register_predictor


class RefittedTrees(Predictor):
    """A scikit-learn tree model saved as its training data and config (no pickle): loading refits,
    which is exact because the model draws its random numbers from ``random_state=seed`` alone and
    is built in one thread. Subclasses give ``_build(n_rows)`` and ``thread_api``."""

    #: the threadpoolctl API limited to one thread while fitting and predicting (None: all of them)
    thread_api: str | None = None

    def _build(self, n: int):
        raise NotImplementedError

    # One thread: on a few hundred rows, thread start-up and spin-waiting on busy shared cores made
    # fits 10-50x slower than single-threaded ones.
    def _fit(self, X, y, pretrain):
        self._X, self._y = X, y
        with threadpool_limits(limits=1, user_api=self.thread_api):
            self._model = self._build(len(y)).fit(X, y)

    def _predict(self, X):
        with threadpool_limits(limits=1, user_api=self.thread_api):
            return self._model.predict(X).astype(np.float64)

    def _state(self):
        return {}, {"X": self._X, "y": self._y}

    def _restore(self, meta, arrays):
        self._fit(arrays["X"], arrays["y"], None)


@register_predictor
class GradientBoostedTrees(RefittedTrees):
    """sklearn ``HistGradientBoostingRegressor`` with a fixed number of rounds (no early stopping).

    Saving stores the training data and the config instead of sklearn's objects (no pickle); loading
    refits, which is exact because this configuration draws no random numbers (no early-stopping
    split, no feature subsampling) and the seed is passed as ``random_state`` anyway.
    """

    name = "gbt"
    thread_api = "openmp"
    defaults = {
        "max_iter": 100,
        "learning_rate": 0.1,
        "max_leaf_nodes": 15,
        "min_samples_leaf": None,  # None: scaled to the sample count, between 3 and 20
        "l2_regularization": 1.0,
    }

    def _build(self, n: int) -> HistGradientBoostingRegressor:
        c = self.config
        leaf = c["min_samples_leaf"] or int(np.clip(n // 15, 3, 20))
        return HistGradientBoostingRegressor(
            max_iter=c["max_iter"],
            learning_rate=c["learning_rate"],
            max_leaf_nodes=c["max_leaf_nodes"],
            min_samples_leaf=leaf,
            l2_regularization=c["l2_regularization"],
            early_stopping=False,
            random_state=self.seed,
        )
