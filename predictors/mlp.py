"""``mlp``: an ensemble of small MLPs trained full-batch with Adam (optax), all members under one jit.

Members differ in initialisation and in Bayesian-bootstrap sample weights, so their spread is a
usable (if rough) predictive std. FBNetV3-style pretraining (``fit(..., pretrain=(X_u, stats))``)
first trains every member to predict the standardised free statistics (e.g. log FLOPs, log params)
of many unlabelled architectures, then swaps the output layer and fine-tunes on the targets.
The numerics are :mod:`predictors.ensemble_mlp`'s.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import predictors.ensemble_mlp as engine
from predictors.base import Predictor, register_predictor


@register_predictor
class MLPEnsemble(Predictor):
    """``members`` ReLU MLPs with ``hidden`` units; mean prediction, member spread as std."""

    name = "mlp"
    defaults = {
        "members": 5,
        "hidden": [64, 64],
        "steps": 400,
        "lr": 3e-3,
        "weight_decay": 1e-2,
        "bootstrap": True,
        "pretrain_steps": 400,
    }
    supports_std = True
    native_pretrain = True

    def _weights(self, key, n_rows: int, n_real: int) -> jnp.ndarray:
        m = self.config["members"]
        if self.config["bootstrap"]:
            return engine.bootstrap_weights(key, n_real, members=m, n_rows=n_rows)
        w = np.zeros((m, n_rows), np.float32)  # numpy: no program to compile per row count
        w[:, :n_real] = 1.0
        return jnp.asarray(w)

    def _fit(self, X, y, pretrain):
        c = self.config
        n, f = X.shape
        hidden = tuple(int(h) for h in c["hidden"])
        key = jax.random.key(self.seed)
        k_w, k_pw = jax.random.split(key, 2)
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 1]))
        train = functools.partial(engine.train, lr=float(c["lr"]), weight_decay=float(c["weight_decay"]))

        if pretrain is not None:
            Xu, stats = pretrain
            stats = (stats - stats.mean(0)) / np.where(stats.std(0) > 0, stats.std(0), 1.0)
            params = engine.init_members_numpy(rng, int(c["members"]), (f,) + hidden + (stats.shape[1],))
            Xu_p = engine.pad_rows(Xu)
            S_p = engine.pad_rows(stats.astype(np.float32))
            params = train(params, Xu_p, S_p, self._weights(k_pw, len(Xu_p), len(Xu)), steps=int(c["pretrain_steps"]))
            head = engine.init_members_numpy(rng, int(c["members"]), (hidden[-1] if hidden else f, 1))
            params = params[:-1] + head
        else:
            params = engine.init_members_numpy(rng, int(c["members"]), (f,) + hidden + (1,))

        # Both paddings leave the network as it was (zero-weight rows, zero inputs on zero weights);
        # a fit compiles its training program once per row bucket, whatever its feature width.
        width = engine.pad_cols(X[:1]).shape[1]
        X_p = engine.pad_cols(engine.pad_rows(X))
        Y_p = engine.pad_rows(y.astype(np.float32)[:, None])
        params = jax.tree.map(np.asarray, params)
        params = train(engine.pad_first_layer(params, width), X_p, Y_p, self._weights(k_w, len(X_p), n),
                       steps=int(c["steps"]))
        self._params = engine.unpad_first_layer(jax.tree.map(np.asarray, params), f)

    def _member_predictions(self, X) -> np.ndarray:
        n = len(X)
        X_p = engine.pad_cols(engine.pad_rows(X))
        out = engine.predict_members(engine.pad_first_layer(self._params, X_p.shape[1]), X_p)
        return np.asarray(out, np.float64)[:, :n]

    def _predict(self, X):
        return self._member_predictions(X).mean(0)

    def _predict_std(self, X):
        return self._member_predictions(X).std(0)

    def _state(self):
        return {"layers": len(self._params)}, engine.layers_to_arrays(self._params)

    def _restore(self, meta, arrays):
        self._params = engine.layers_from_arrays(arrays, meta["layers"])
