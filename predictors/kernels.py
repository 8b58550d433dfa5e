"""Closed-form predictors: ridge regression, RBF kernel ridge regression and an exact GP.

All three choose their hyperparameters deterministically from a small grid (no randomness, so
the seed does not change them): ridge and kernel ridge by exact leave-one-out error, the GP by
log marginal likelihood. Float64 numpy throughout; N is at most a few thousand here.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy import linalg
from threadpoolctl import threadpool_limits

from predictors.base import Predictor, register_predictor


def _one_blas_thread(method):
    """Runs ``method`` with one BLAS thread: these matrices are small, and on busy shared cores
    multi-threaded BLAS spent more time waiting than computing (10x slower on 100 rows)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return method(*args, **kwargs)

    return wrapper


#: multiples of the median pairwise distance that the kernel models try as lengthscales; steps of
#: sqrt(2) rather than 2: on the NAS-Bench-201 development table the finer grid ranked 2,000 held-out
#: cells better (GP tau at 500 cells 0.843 -> 0.851 on ImageNet16-120)
LENGTHSCALE_FACTORS = [0.25, 0.35, 0.5, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0]


def _sq_dists(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    d = (A * A).sum(1)[:, None] + (B * B).sum(1)[None, :] - 2.0 * A @ B.T
    return np.maximum(d, 0.0)


def _base_lengthscale(D2: np.ndarray) -> float:
    # Median heuristic: lengthscales are searched as multiples of the median pairwise distance.
    off = D2[np.triu_indices_from(D2, k=1)]
    off = off[off > 0]
    return float(np.sqrt(np.median(off))) if off.size else 1.0


@register_predictor
class Ridge(Predictor):
    """Linear ridge regression; the penalty is picked from ``alphas`` by leave-one-out error."""

    name = "ridge"
    defaults = {"alphas": [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0]}

    @_one_blas_thread
    def _fit(self, X, y, pretrain):
        X = X.astype(np.float64)
        self._x_mean = X.mean(0)
        Xc = X - self._x_mean
        U, s, Vt = np.linalg.svd(Xc, full_matrices=False)
        Uty = U.T @ y
        n = len(y)
        best = None
        for alpha in self.config["alphas"]:
            shrink = s**2 / (s**2 + alpha)
            fitted = U @ (shrink * Uty)
            hat_diag = 1.0 / n + (U**2) @ shrink  # intercept column is orthogonal to centred X
            loo = (y - fitted) / np.maximum(1.0 - hat_diag, 1e-9)
            err = float(np.mean(loo**2))
            if best is None or err < best[0]:
                best = (err, alpha)
        self._alpha = best[1]
        self._coef = Vt.T @ (s / (s**2 + self._alpha) * Uty)
        self._intercept = float(y.mean())

    @_one_blas_thread
    def _predict(self, X):
        return (X.astype(np.float64) - self._x_mean) @ self._coef + self._intercept

    def _state(self):
        return {"alpha": self._alpha, "intercept": self._intercept}, {"x_mean": self._x_mean, "coef": self._coef}

    def _restore(self, meta, arrays):
        self._alpha, self._intercept = meta["alpha"], meta["intercept"]
        self._x_mean, self._coef = arrays["x_mean"], arrays["coef"]


@register_predictor
class RBFRegression(Predictor):
    """RBF-kernel ridge regression; lengthscale and penalty by exact leave-one-out error."""

    name = "rbf"
    defaults = {
        "lengthscale_factors": list(LENGTHSCALE_FACTORS),
        "alphas": [1e-3, 1e-2, 1e-1, 1.0, 10.0],
    }

    @_one_blas_thread
    def _fit(self, X, y, pretrain):
        X = X.astype(np.float64)
        D2 = _sq_dists(X, X)
        base = _base_lengthscale(D2)
        best = None
        for factor in self.config["lengthscale_factors"]:
            ls = factor * base
            K = np.exp(-D2 / (2 * ls**2))
            s, U = np.linalg.eigh(K)
            s = np.maximum(s, 0.0)
            Uty = U.T @ y
            for alpha in self.config["alphas"]:
                shrink = s / (s + alpha)
                loo = (y - U @ (shrink * Uty)) / np.maximum(1.0 - (U**2) @ shrink, 1e-9)
                err = float(np.mean(loo**2))
                if best is None or err < best[0]:
                    best = (err, ls, alpha)
        _, self._lengthscale, self._alpha = best
        K = np.exp(-D2 / (2 * self._lengthscale**2))
        self._X = X
        self._dual = linalg.solve(K + self._alpha * np.eye(len(y)), y, assume_a="pos")

    @_one_blas_thread
    def _predict(self, X):
        K = np.exp(-_sq_dists(X.astype(np.float64), self._X) / (2 * self._lengthscale**2))
        return K @ self._dual

    def _state(self):
        return {"lengthscale": self._lengthscale, "alpha": self._alpha}, {"X": self._X, "dual": self._dual}

    def _restore(self, meta, arrays):
        self._lengthscale, self._alpha = meta["lengthscale"], meta["alpha"]
        self._X, self._dual = arrays["X"], arrays["dual"]


@register_predictor
class GaussianProcess(Predictor):
    """Exact GP regression, isotropic RBF kernel, zero prior mean on standardised targets.

    The lengthscale and the noise-to-signal ratio come from a grid by log marginal likelihood; the
    signal variance has a closed-form maximiser given those two. :meth:`predict_std` is the
    posterior std of the latent function (no observation noise), which is what acquisition
    functions such as expected improvement want.
    """

    name = "gp"
    defaults = {
        "lengthscale_factors": list(LENGTHSCALE_FACTORS),
        "noise_ratios": [1e-3, 1e-2, 0.05, 0.2, 1.0],
    }
    supports_std = True

    @_one_blas_thread
    def _fit(self, X, y, pretrain):
        X = X.astype(np.float64)
        n = len(y)
        D2 = _sq_dists(X, X)
        base = _base_lengthscale(D2)
        best = None
        for factor in self.config["lengthscale_factors"]:
            K = np.exp(-D2 / (2 * (factor * base) ** 2))
            for ratio in self.config["noise_ratios"]:
                try:
                    chol = linalg.cho_factor(K + ratio * np.eye(n), lower=True)
                except linalg.LinAlgError:
                    continue
                alpha = linalg.cho_solve(chol, y)
                signal = max(float(y @ alpha) / n, 1e-12)
                logdet = 2.0 * np.log(np.diag(chol[0])).sum()
                lml = -0.5 * n * np.log(signal) - 0.5 * logdet - 0.5 * n * (1 + np.log(2 * np.pi))
                if best is None or lml > best[0]:
                    best = (lml, factor * base, ratio, signal)
        assert best is not None, "every grid point was singular, which ratio >= 1e-3 rules out"
        _, self._lengthscale, self._noise_ratio, self._signal = best
        K = np.exp(-D2 / (2 * self._lengthscale**2)) + self._noise_ratio * np.eye(n)
        self._X = X
        self._chol = linalg.cholesky(K, lower=True)
        self._alpha = linalg.cho_solve((self._chol, True), y)

    def _kstar(self, X):
        return np.exp(-_sq_dists(X.astype(np.float64), self._X) / (2 * self._lengthscale**2))

    @_one_blas_thread
    def _predict(self, X):
        return self._kstar(X) @ self._alpha

    @_one_blas_thread
    def _predict_std(self, X):
        v = linalg.solve_triangular(self._chol, self._kstar(X).T, lower=True)  # (N_train, N)
        var = self._signal * np.maximum(1.0 - (v * v).sum(0), 0.0)
        return np.sqrt(var)

    def _state(self):
        meta = {"lengthscale": self._lengthscale, "noise_ratio": self._noise_ratio, "signal": self._signal}
        return meta, {"X": self._X, "chol": self._chol, "alpha": self._alpha}

    def _restore(self, meta, arrays):
        self._lengthscale, self._noise_ratio = meta["lengthscale"], meta["noise_ratio"]
        self._signal = meta["signal"]
        self._X, self._chol, self._alpha = arrays["X"], arrays["chol"], arrays["alpha"]
