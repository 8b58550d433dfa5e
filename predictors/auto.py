"""``auto``: picks the registered model, or the ensemble of them, with the best k-fold Kendall tau."""

from __future__ import annotations

import numpy as np

from predictors.base import (
    Predictor,
    check_predictor_name,
    from_state,
    get_predictor,
    prefixed,
    register_predictor,
    unprefixed,
)
from predictors.cross_validation import fold_metrics, out_of_fold_many
from predictors.ensemble import RankEnsemble, select_weights
from predictors.errors import PredictorError
from predictors.targets import InnerTargets, check_targets

CHOSEN_PREFIX = "chosen_"


@register_predictor
class AutoPredictor(Predictor):
    """Cross-validates every candidate, then fits the best one (by mean tau over folds) on all the data.

    The candidate ``ensemble`` is not cross-validated again: it is the greedy selection
    (:func:`predictors.ensemble.select_weights`) over the other candidates' out-of-fold predictions,
    scored on those same predictions. That score is optimistic by the selection, but the selection
    starts from the best single candidate and adds one only when the folds' tau improves, so the
    ensemble is chosen only when a combination ranked the folds better than any one model.

    Ties go to the earlier candidate (the cheaper one, in the default order). With
    ``candidate_targets="rank"`` (the default) the candidates fit the normal scores of the targets'
    ranks, and the chosen one's predictions map back to target units
    (:class:`predictors.targets.InnerTargets`). ``predict_std``
    works when the chosen model has it (``supports_std`` reports this after fitting). ``scores``
    holds the cross-validation results of every candidate (RMSE in target units; for the ensemble
    also its ``weights``).

    ``choice={"name": ..., "options": {...}}`` (what :meth:`selection` returns after a fit) skips
    the cross-validation and fits that candidate: a search remakes its choice only now and then and
    refits it on the new data in between (:func:`nas_cli.search.predictor_loop.selection_size`).
    """

    name = "auto"
    chooses = True
    defaults = {
        "candidates": ["ridge", "rbf", "gp", "gbt", "rf", "extra_trees", "mlp", RankEnsemble.name],
        "k": 5,
        "candidate_targets": "rank",
        # {"name": ..., "options": {...}}: fit this candidate without cross-validating (see selection())
        "choice": None,
    }

    def __init__(self, seed: int = 0, **config):
        super().__init__(seed=seed, **config)
        for candidate in self.config["candidates"]:
            if candidate == self.name:
                raise PredictorError("auto cannot be one of its own candidates")
            check_predictor_name(candidate)
        check_targets(self.config["candidate_targets"])
        if self.config["candidates"] == [RankEnsemble.name]:
            raise PredictorError("auto's ensemble combines its other candidates; name at least one more")
        choice = self.config["choice"]
        if choice is not None:
            if not isinstance(choice, dict) or not isinstance(choice.get("name"), str):
                raise PredictorError(f"auto's choice {choice!r} must be {{'name': candidate, 'options': {{...}}}}")
            check_predictor_name(choice["name"])
        self.chosen: Predictor | None = None
        self._choice: dict | None = None
        self.scores: dict[str, dict] = {}
        self._inner = InnerTargets()

    @property
    def supports_std(self) -> bool:  # type: ignore[override]
        return self.chosen is not None and self.chosen.supports_std

    def _metrics(self, y, predictions, folds) -> dict:
        out = fold_metrics(y, predictions, folds)
        scores = {m: out[m] for m in ("kendall_tau", "spearman", "rmse", "kendall_tau_std")}
        # The candidates fitted standardised, maybe rank-scored, targets: errors in target units.
        fitted = self._inner.inverse(predictions)
        scores["rmse"] = self._y_std * float(np.mean([np.sqrt(np.mean((y[te] - fitted[te]) ** 2)) for _, te in folds]))
        return scores

    def selection(self) -> dict:
        """``{"choice": ...}``: the candidate chosen (with the ensemble's weights), refitted without
        cross-validation by ``get_predictor("auto", choice=...)``."""
        return {} if self._choice is None else {"choice": self._choice}

    def _fit(self, X, y, pretrain):
        y_given = y
        self._inner, y = InnerTargets.fit(y, self.config["candidate_targets"])
        if self.config["choice"] is not None:  # chosen before: one fit, no cross-validation
            self._choice = self.config["choice"]
            self.scores = {}
            self.chosen = get_predictor(self._choice["name"], seed=self.seed,
                                        **self._choice.get("options", {})).fit(X, y)
            return
        singles = [c for c in self.config["candidates"] if c != RankEnsemble.name]
        folds, predictions = out_of_fold_many(singles, X, y, self.config["k"], self.seed)
        self.scores = {c: self._metrics(y_given, predictions[c], folds) for c in singles}
        weights = None
        if RankEnsemble.name in self.config["candidates"]:
            weights = {m: w for m, w in select_weights(predictions, y, folds).items() if w > 0}
            combined = sum(w * predictions[m] for m, w in weights.items())
            self.scores[RankEnsemble.name] = {**self._metrics(y_given, combined, folds), "weights": weights}
        best = None
        for candidate in self.config["candidates"]:
            if best is None or self.scores[candidate]["kendall_tau"] > self.scores[best]["kendall_tau"]:
                best = candidate
        if best == RankEnsemble.name:  # the average of what was cross-validated, as weighted there
            options = {"members": list(weights), "weights": weights, "member_targets": "standard"}
        else:
            options = {}
        self._choice = {"name": best, "options": options}
        self.chosen = get_predictor(best, seed=self.seed, **options).fit(X, y)

    def _predict(self, X):
        return self._inner.inverse(self.chosen.predict(X))

    def _predict_std(self, X):
        return self._inner.inverse_spread(self.chosen.predict(X), self.chosen.predict_std(X))

    # The chosen model's arrays are prefixed, so that they cannot collide with auto's own (its rank
    # maps'); files from before the prefix hold them unprefixed, and no arrays of auto's own.
    def _state(self):
        meta, arrays = self.chosen.to_state()
        arrays = prefixed(arrays, CHOSEN_PREFIX)
        return {"chosen": meta, "scores": self.scores, "prefix": CHOSEN_PREFIX, "choice": self._choice}, {**arrays, **self._inner.to_arrays()}

    def _restore(self, meta, arrays):
        self.scores = meta["scores"]
        self._choice = meta.get("choice")
        self._inner = InnerTargets.from_arrays(arrays)
        self.chosen = from_state(meta["chosen"], unprefixed(arrays, meta.get("prefix", "")))
