"""Target transforms a predictor may fit through: the identity, or normal scores of the targets' ranks.

A search needs the predictor to order architectures, and benchmark accuracies are far from normal
(a long tail of broken cells near chance, a dense crowd of good ones). Fitting the normal scores of
the targets' ranks (``Phi^-1((rank - 1/2) / n)``) instead of the targets themselves gives every
model an evenly spread, outlier-free target; predictions map back to target units through the
monotone piecewise-linear map between the training targets and their scores, so the order of the
predictions is the order the model fitted. On the NAS-Bench-201 development table this raised the
Kendall tau of the GP at 200 cells from 0.74 to 0.81 (bench/RESULTS.md, issue 18).
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats

from predictors.errors import PredictorError

#: how a predictor treats its targets before standardising them
TARGETS = ("standard", "rank")


def check_targets(targets: str) -> str:
    """Returns ``targets`` if it is one of :data:`TARGETS`, else raises PredictorError."""
    if targets not in TARGETS:
        raise PredictorError(f"targets {targets!r} is not one of {', '.join(TARGETS)}")
    return targets


def normal_scores(y: np.ndarray) -> np.ndarray:
    """``Phi^-1((rank - 1/2) / n)`` of every value (ties share their mean rank, so their score)."""
    y = np.asarray(y, np.float64)
    return special.ndtri((stats.rankdata(y) - 0.5) / len(y))


class RankTransform:
    """The map between targets and their normal scores, fitted on training targets.

    ``knots_y`` are the distinct training targets in increasing order and ``knots_z`` their scores;
    :meth:`inverse` interpolates between them, so it is monotone and maps every training target's
    score back to that target exactly. Beyond the end knots it extrapolates along the chord from the
    end knot to the knot a quarter of the way in, rather than clamping: a search scores candidates
    predicted better than every training one, and clamping would tie them all at the best target.
    """

    def __init__(self, knots_y: np.ndarray, knots_z: np.ndarray):
        self.knots_y = np.asarray(knots_y, np.float64)
        self.knots_z = np.asarray(knots_z, np.float64)

    @classmethod
    def fit(cls, y: np.ndarray) -> "RankTransform":
        y = np.asarray(y, np.float64)
        z = normal_scores(y)
        knots_y, first = np.unique(y, return_index=True)
        return cls(knots_y, z[first])

    def forward(self, y: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(y, np.float64), self.knots_y, self.knots_z)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, np.float64)
        ky, kz = self.knots_y, self.knots_z
        y = np.interp(z, kz, ky)
        if len(ky) > 1:
            q = max(1, (len(ky) - 1) // 4)
            low, high = (ky[q] - ky[0]) / (kz[q] - kz[0]), (ky[-1] - ky[-1 - q]) / (kz[-1] - kz[-1 - q])
            y = np.where(z < kz[0], ky[0] + (z - kz[0]) * low, y)
            y = np.where(z > kz[-1], ky[-1] + (z - kz[-1]) * high, y)
        return y

    def inverse_spread(self, z: np.ndarray, std: np.ndarray) -> np.ndarray:
        """A std in score units at ``z``, in target units: half the width that ``z +- std`` maps to."""
        return 0.5 * (self.inverse(z + std) - self.inverse(z - std))

    def to_arrays(self, prefix: str = "target_") -> dict[str, np.ndarray]:
        return {f"{prefix}knots_y": self.knots_y, f"{prefix}knots_z": self.knots_z}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str = "target_") -> "RankTransform":
        return cls(arrays[f"{prefix}knots_y"], arrays[f"{prefix}knots_z"])


class InnerTargets:
    """What the members of a model that combines models (``ensemble``, ``auto``) fit.

    Such a model maps its targets once (``"rank"``: to normal scores; ``"standard"``: not at all),
    fits, cross-validates and combines its members in that space, and maps the combination back.
    The map lives in the combining model's own state (arrays under :data:`INNER_PREFIX`), so that
    state alone rebuilds it; a state without those arrays is an identity map (files from before).
    """

    INNER_PREFIX = "inner_target_"

    def __init__(self, rank: RankTransform | None = None):
        self.rank = rank

    @classmethod
    def fit(cls, y: np.ndarray, targets: str) -> tuple["InnerTargets", np.ndarray]:
        """The map for ``targets`` fitted on ``y``, and what the members fit."""
        if check_targets(targets) == "standard":
            return cls(), y
        rank = RankTransform.fit(y)
        return cls(rank), rank.forward(y)

    def inverse(self, z: np.ndarray) -> np.ndarray:
        return z if self.rank is None else self.rank.inverse(z)

    def inverse_spread(self, z: np.ndarray, std: np.ndarray) -> np.ndarray:
        return std if self.rank is None else self.rank.inverse_spread(z, std)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {} if self.rank is None else self.rank.to_arrays(self.INNER_PREFIX)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "InnerTargets":
        if f"{cls.INNER_PREFIX}knots_y" not in arrays:
            return cls()
        return cls(RankTransform.from_arrays(arrays, cls.INNER_PREFIX))
