"""``auto``: picks the registered model, or the ensemble of them, with the best k-fold Kendall tau."""

from __future__ import annotations

import numpy as np

from predictors.base import Predictor, check_predictor_name, from_state, get_predictor, register_predictor
from predictors.cross_validation import fold_metrics, out_of_fold
from predictors.ensemble import RankEnsemble, select_weights
from predictors.errors import PredictorError


@register_predictor
class AutoPredictor(Predictor):
    """Cross-validates every candidate, then fits the best one (by mean tau over folds) on all the data.

    The candidate ``ensemble`` is not cross-validated again: it is the greedy selection
    (:func:`predictors.ensemble.select_weights`) over the other candidates' out-of-fold predictions,
    scored on those same predictions. That score is optimistic by the selection, but the selection
    starts from the best single candidate and adds one only when the folds' tau improves, so the
    ensemble is chosen only when a combination ranked the folds better than any one model.

    Ties go to the earlier candidate (the cheaper one, in the default order). Fits normal scores of
    the targets' ranks by default (``targets="rank"``); the candidates see those. ``predict_std``
    works when the chosen model has it (``supports_std`` reports this after fitting). ``scores``
    holds the cross-validation results of every candidate (RMSE in target units; for the ensemble
    also its ``weights``).
    """

    name = "auto"
    defaults = {
        "candidates": ["ridge", "rbf", "gp", "gbt", "rf", "extra_trees", "mlp", RankEnsemble.name],
        "k": 5,
    }
    default_targets = "rank"

    def __init__(self, seed: int = 0, **config):
        super().__init__(seed=seed, **config)
        for candidate in self.config["candidates"]:
            if candidate == self.name:
                raise PredictorError("auto cannot be one of its own candidates")
            check_predictor_name(candidate)
        if self.config["candidates"] == [RankEnsemble.name]:
            raise PredictorError("auto's ensemble combines its other candidates; name at least one more")
        self.chosen: Predictor | None = None
        self.scores: dict[str, dict] = {}

    @property
    def supports_std(self) -> bool:  # type: ignore[override]
        return self.chosen is not None and self.chosen.supports_std

    def _metrics(self, y, predictions, folds) -> dict:
        out = fold_metrics(y, predictions, folds)
        scores = {m: out[m] for m in ("kendall_tau", "spearman", "rmse", "kendall_tau_std")}
        # Ranks are the model's own (the map back to target units may tie beyond the data); errors
        # are in target units.
        target, fitted = self.to_target(y), self.to_target(predictions)
        scores["rmse"] = float(np.mean([np.sqrt(np.mean((target[te] - fitted[te]) ** 2)) for _, te in folds]))
        return scores

    def _fit(self, X, y, pretrain):
        k = min(int(self.config["k"]), len(y) // 2)
        self.scores = {}
        predictions, folds = {}, None
        for candidate in self.config["candidates"]:
            if candidate == RankEnsemble.name:
                continue
            folds, predictions[candidate] = out_of_fold(candidate, X, y, k=k, seed=self.seed)
            self.scores[candidate] = self._metrics(y, predictions[candidate], folds)
        weights = None
        if RankEnsemble.name in self.config["candidates"]:
            weights = {m: w for m, w in select_weights(predictions, y, folds).items() if w > 0}
            combined = sum(w * predictions[m] for m, w in weights.items())
            self.scores[RankEnsemble.name] = {**self._metrics(y, combined, folds), "weights": weights}
        best = None
        for candidate in self.config["candidates"]:
            if best is None or self.scores[candidate]["kendall_tau"] > self.scores[best]["kendall_tau"]:
                best = candidate
        if best == RankEnsemble.name:
            # A plain average of what was cross-validated: the members fit the targets auto gives them.
            options = {"members": list(weights), "weights": weights, "targets": "standard"}
        else:
            options = {}
        self.chosen = get_predictor(best, seed=self.seed, **options).fit(X, y)

    def _predict(self, X):
        return self.chosen.predict(X)

    def _predict_std(self, X):
        return self.chosen.predict_std(X)

    def _state(self):
        meta, arrays = self.chosen.to_state()
        return {"chosen": meta, "scores": self.scores}, arrays

    def _restore(self, meta, arrays):
        self.scores = meta["scores"]
        self.chosen = from_state(meta["chosen"], arrays)
