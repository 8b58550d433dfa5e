"""``auto``: picks the registered model with the best k-fold cross-validated Kendall tau."""

from __future__ import annotations

from predictors.base import Predictor, check_predictor_name, from_state, get_predictor, register_predictor
from predictors.cross_validation import cross_validate
from predictors.errors import PredictorError


@register_predictor
class AutoPredictor(Predictor):
    """Cross-validates every candidate, then fits the best one (by mean tau) on all the data.

    Ties go to the earlier candidate (the cheaper one, in the default order). ``predict_std``
    works when the chosen model has it (``supports_std`` reports this after fitting).
    ``scores`` holds the cross-validation results of every candidate.
    """

    name = "auto"
    defaults = {"candidates": ["ridge", "rbf", "gp", "gbt", "mlp"], "k": 5}

    def __init__(self, seed: int = 0, **config):
        super().__init__(seed=seed, **config)
        for candidate in self.config["candidates"]:
            if candidate == self.name:
                raise PredictorError("auto cannot be one of its own candidates")
            check_predictor_name(candidate)
        self.chosen: Predictor | None = None
        self.scores: dict[str, dict] = {}

    @property
    def supports_std(self) -> bool:  # type: ignore[override]
        return self.chosen is not None and self.chosen.supports_std

    def _fit(self, X, y, pretrain):
        k = min(int(self.config["k"]), len(y) // 2)
        self.scores = {}
        best = None
        for candidate in self.config["candidates"]:
            cv = cross_validate(candidate, X, y, k=k, seed=self.seed)
            self.scores[candidate] = {m: cv[m] for m in ("kendall_tau", "spearman", "rmse", "kendall_tau_std")}
            self.scores[candidate]["rmse"] *= self._y_std  # CV ran on standardised targets
            if best is None or cv["kendall_tau"] > self.scores[best]["kendall_tau"]:
                best = candidate
        self.chosen = get_predictor(best, seed=self.seed).fit(X, y)

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
