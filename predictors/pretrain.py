"""Free architecture statistics for FBNetV3-style predictor pretraining.

FLOPs and parameter counts cost nothing to compute for any number of architectures, and they
correlate with accuracy; a network that first learns to predict them from the encoding starts
its accuracy fit from features that already mean something, which helps most with few samples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

import predictors.ensemble_mlp as engine
from predictors.errors import PredictorError
from search_spaces.base import SearchSpace

STAT_NAMES = ("log_flops", "log_params")


def has_stats(space: SearchSpace) -> bool:
    """Whether ``space`` counts FLOPs and params (a :class:`SupernetSpace` does)."""
    return callable(getattr(space, "flops", None)) and callable(getattr(space, "params", None))


def arch_stats(space: SearchSpace, archs) -> np.ndarray:
    """``(N, 2)`` log FLOPs and log params of ``archs`` (logs: both span orders of magnitude)."""
    if not has_stats(space):
        raise PredictorError(
            f"space {space.name!r} does not count FLOPs/params, so it has no free statistics to pretrain on"
        )
    return np.array([[np.log1p(space.flops(a)), np.log1p(space.params(a))] for a in archs], np.float64)


def random_pretrain_set(space: SearchSpace, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(X_unlabelled (n, F), stats (n, 2))`` of ``n`` uniformly random architectures of ``space``.

    The pair is what ``Predictor.fit(..., pretrain=...)`` takes. Deterministic per seed.
    """
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(n)]
    X = np.stack([np.asarray(space.features(a), np.float32) for a in archs])
    return X, arch_stats(space, archs)


class StatFeatures:
    """Pretraining for models that have no network of their own to pretrain (ridge, rbf, gp, gbt, auto).

    A small MLP learns the standardised free statistics (log FLOPs, log params) from the encoding on
    many unlabelled architectures, FBNetV3-style. Its predictions are then appended to the encoding
    as extra features of the accuracy model, so a linear or kernel model sees the non-linear
    "how big is this network" function that the encoding alone does not spell out.

    The appended columns are scaled so that together they carry as much variance as all the
    encoding's columns (``weight`` times that): in an isotropic kernel, half of the distance
    between two architectures then comes from how differently large they are.
    """

    def __init__(self, seed: int = 0, hidden=(64, 64), steps: int = 400, lr: float = 3e-3,
                 weight_decay: float = 1e-2, weight: float = 1.0):
        self.seed = int(seed)
        self.config = {"hidden": [int(h) for h in hidden], "steps": int(steps), "lr": float(lr),
                       "weight_decay": float(weight_decay), "weight": float(weight)}
        self._params = None
        self._scale = 1.0

    def fit(self, Xu: np.ndarray, stats: np.ndarray) -> "StatFeatures":
        """Learns the standardised ``stats (M, S)`` from ``Xu (M, F)``; returns ``self``."""
        c = self.config
        Xu = np.asarray(Xu, np.float32)
        stats = np.asarray(stats, np.float64)
        std = stats.std(0)
        S = ((stats - stats.mean(0)) / np.where(std > 0, std, 1.0)).astype(np.float32)
        sizes = (Xu.shape[1], *c["hidden"], S.shape[1])
        params = engine.init_members(jax.random.split(jax.random.key(self.seed), 1), sizes)
        Xp, Sp = engine.pad_rows(Xu), engine.pad_rows(S)
        weights = engine.pad_weights(jnp.ones((1, len(Xu))), len(Xp))
        params = engine.train(params, Xp, Sp, weights, steps=c["steps"], lr=c["lr"], weight_decay=c["weight_decay"])
        self._params = [(np.asarray(w[0]), np.asarray(b[0])) for w, b in params]
        # together the stat columns carry `weight` times the encoding's total variance
        x_var = float(Xu.var(0).sum())
        p_var = float(engine.forward_numpy(self._params, Xu).var(0).sum())
        self._scale = float(np.sqrt(c["weight"] * x_var / p_var)) if p_var > 0 and x_var > 0 else 1.0
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """``X (N, F)`` with the ``S`` predicted statistics appended: ``(N, F + S)`` float32."""
        X = np.asarray(X, np.float32)
        stats = engine.forward_numpy(self._params, X)
        return np.concatenate([X, (self._scale * stats).astype(np.float32)], axis=1)

    # --- state, saved inside a predictor's files ---------------------------------------------
    #: prefix of this network's arrays among the predictor's own
    PREFIX = "pretrain_"

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """JSON-able metadata and named arrays (``pretrain_w0``, ...) that :meth:`from_state` reads."""
        meta = {"seed": self.seed, "config": self.config, "scale": self._scale, "layers": len(self._params)}
        return meta, engine.layers_to_arrays(self._params, self.PREFIX)

    @classmethod
    def from_state(cls, meta: dict, arrays: dict[str, np.ndarray]) -> "StatFeatures":
        """The fitted network :meth:`to_state` described; ``arrays`` may hold other arrays too."""
        self = cls(seed=meta["seed"], **meta["config"])
        self._scale = float(meta["scale"])
        self._params = engine.layers_from_arrays(arrays, meta["layers"], cls.PREFIX)
        return self
