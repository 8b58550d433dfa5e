"""``ensemble``: registered models averaged with weights chosen by their cross-validated Kendall tau.

The weights come from greedy ensemble selection (Caruana et al., 2004) on out-of-fold predictions:
start from nothing, repeatedly add (with replacement) the member whose addition gives the average
with the best mean-over-folds Kendall tau, stop when no addition improves it. The first pick is the
best single model, so on the folds the ensemble is never worse than it; a member's weight is how
often it was picked. ``auto`` runs the same selection on the out-of-fold predictions it already has.
"""

from __future__ import annotations

from typing import Mapping, Sequence

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
from predictors.cross_validation import out_of_fold_many
from predictors.errors import PredictorError
from predictors.metrics import kendall_tau
from predictors.targets import InnerTargets, check_targets


def mean_fold_tau(y: np.ndarray, predictions: np.ndarray, folds) -> float:
    """Mean over folds of the Kendall tau of out-of-fold ``predictions`` (what ``auto`` ranks by)."""
    return float(np.mean([kendall_tau(y[test], predictions[test]) for _, test in folds]))


def select_weights(predictions: Mapping[str, np.ndarray], y, folds, rounds: int = 20) -> dict[str, float]:
    """Greedy ensemble selection: member name -> weight (summing to 1; members never picked get 0).

    Args:
      predictions: each member's out-of-fold predictions, shape ``(N,)``, in one order of rows.
      y: the targets of those rows.
      folds: the (train, test) pairs the predictions came from; the score is the mean tau over them.
      rounds: the most picks; ties go to the earlier member.
    """
    y = np.asarray(y, np.float64)
    names = list(predictions)
    counts = dict.fromkeys(names, 0)
    total = np.zeros(len(y))
    best = -np.inf
    for picks in range(1, rounds + 1):
        trials = [(mean_fold_tau(y, (total + predictions[n]) / picks, folds), n) for n in names]
        score, name = max(trials, key=lambda t: t[0])  # max keeps the first of equal scores
        if score <= best:
            break
        best, total = score, total + predictions[name]
        counts[name] += 1
    n_picks = sum(counts.values())
    return {n: counts[n] / n_picks for n in names}


@register_predictor
class RankEnsemble(Predictor):
    """A weighted average of ``members``, weighted by greedy selection on their k-fold Kendall tau.

    Fitting cross-validates every member (``k`` folds), selects the weights, then fits the picked
    members on all the data; ``weights`` (name -> weight) skips the cross-validation and uses those.
    With ``member_targets="rank"`` (the default) the members fit, and are averaged on, the normal
    scores of the targets' ranks, which the kernel models rank much better from; the average maps
    back to target units (:class:`predictors.targets.InnerTargets`). ``predict_std`` is the std of the mixture of the members (their
    spread around the average, plus their own std where they have one); it works once fitted with
    two members or more, or with one that has a std (``supports_std`` says so). ``scores`` holds
    each member's cross-validated tau.
    """

    name = "ensemble"
    chooses = True
    defaults = {
        "members": ["ridge", "rbf", "gp", "gbt", "rf", "extra_trees"],
        "k": 5,
        "rounds": 20,
        "weights": None,
        "member_targets": "rank",
    }

    def __init__(self, seed: int = 0, **config):
        super().__init__(seed=seed, **config)
        members = list(self.config["members"])
        if not members:
            raise PredictorError("an ensemble needs at least one member; pass members=[names]")
        check_targets(self.config["member_targets"])
        for member in members:
            if member in (self.name, "auto"):
                raise PredictorError(f"{member!r} cannot be a member of an ensemble; members are single models")
            check_predictor_name(member)
        weights = self.config["weights"]
        if weights is not None:
            unknown = sorted(set(weights) - set(members))
            if unknown or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
                raise PredictorError(
                    f"ensemble weights {dict(weights)} must be non-negative, not all zero, and name only "
                    f"members ({', '.join(members)})"
                )
        self.scores: dict[str, float] = {}
        self.weights: dict[str, float] = {}
        self._members: list[tuple[float, Predictor]] = []
        self._inner = InnerTargets()

    @property
    def supports_std(self) -> bool:  # type: ignore[override]
        return len(self._members) > 1 or any(p.supports_std for _, p in self._members)

    def selection(self) -> dict:
        """``{"weights": ...}``: the members' weights chosen by cross-validation, reused without it."""
        return {"weights": dict(self.weights)} if self.weights else {}

    def _fit(self, X, y, pretrain):
        members: Sequence[str] = self.config["members"]
        weights = self.config["weights"]
        self._inner, y = InnerTargets.fit(y, self.config["member_targets"])
        if weights is None:
            folds, predictions = out_of_fold_many(members, X, y, self.config["k"], self.seed)
            self.scores = {m: mean_fold_tau(y, p, folds) for m, p in predictions.items()}
            weights = select_weights(predictions, y, folds, rounds=int(self.config["rounds"]))
        total = sum(weights.values())
        self.weights = {m: float(weights.get(m, 0.0)) / total for m in members}
        self._members = [
            (w, get_predictor(m, seed=self.seed).fit(X, y)) for m, w in self.weights.items() if w > 0
        ]

    def _predict(self, X):
        return self._inner.inverse(sum(w * p.predict(X) for w, p in self._members))

    def _predict_std(self, X):
        means = [p.predict(X) for _, p in self._members]
        mean = sum(w * m for (w, _), m in zip(self._members, means))
        second = sum(
            w * (m**2 + (p.predict_std(X) ** 2 if p.supports_std else 0.0))
            for (w, p), m in zip(self._members, means)
        )
        return self._inner.inverse_spread(mean, np.sqrt(np.maximum(second - mean**2, 0.0)))

    def _state(self):
        metas, arrays = [], {}
        for i, (w, p) in enumerate(self._members):
            meta, member_arrays = p.to_state()
            metas.append({"weight": w, "state": meta})
            arrays.update(prefixed(member_arrays, f"m{i}_"))
        return {"weights": self.weights, "scores": self.scores, "members": metas}, {**arrays, **self._inner.to_arrays()}

    def _restore(self, meta, arrays):
        self.weights, self.scores = meta["weights"], meta["scores"]
        self._inner = InnerTargets.from_arrays(arrays)
        self._members = []
        for i, member in enumerate(meta["members"]):
            self._members.append((member["weight"], from_state(member["state"], unprefixed(arrays, f"m{i}_"))))
