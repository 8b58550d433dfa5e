"""An ensemble of small MLPs trained full-batch with Adam (optax), all members under one jit.

Members differ in initialisation and in Bayesian-bootstrap sample weights, so their spread is a
usable (if rough) predictive std. FBNetV3-style pretraining (``fit(..., pretrain=(X_u, stats))``)
first trains every member to predict the standardised free statistics (e.g. log FLOPs, log params)
of many unlabelled architectures, then swaps the output layer and fine-tunes on the targets.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from predictors.base import Predictor, register_predictor

# Rows are zero-weight padded up to a multiple of this, so fits of nearby sizes (k-fold
# splits, growing search archives) reuse one compiled program instead of recompiling.
_ROW_BUCKET = 64

Params = list  # [(w (M, din, dout), b (M, dout)), ...] with the member axis first


def _pad_rows(X: np.ndarray, bucket: int = _ROW_BUCKET) -> np.ndarray:
    n = len(X)
    total = max(bucket, -(-n // bucket) * bucket)
    return np.concatenate([X, np.zeros((total - n,) + X.shape[1:], X.dtype)]) if total > n else X


def _init_layer(key, din: int, dout: int):
    w = jax.random.normal(key, (din, dout), jnp.float32) * jnp.sqrt(2.0 / din)
    return w, jnp.zeros((dout,), jnp.float32)


def _init_member(key, sizes: tuple[int, ...]):
    keys = jax.random.split(key, len(sizes) - 1)
    return [_init_layer(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def _forward(params, X):
    h = X
    for w, b in params[:-1]:
        h = jax.nn.relu(h @ w + b)
    w, b = params[-1]
    return h @ w + b  # (N, out)


@functools.partial(jax.jit, static_argnames=("steps", "lr", "weight_decay"))
def _train(params, X, Y, weights, *, steps: int, lr: float, weight_decay: float):
    """Trains every member (leading axis of ``params`` and ``weights (M, N)``) full-batch."""
    opt = optax.adamw(optax.cosine_decay_schedule(lr, steps), weight_decay=weight_decay)

    def train_member(p, w):
        def loss(p):
            err = (_forward(p, X) - Y) ** 2  # (N, out)
            return jnp.sum(w[:, None] * err) / (jnp.sum(w) * Y.shape[1])

        def step(carry, _):
            p, state = carry
            grads = jax.grad(loss)(p)
            updates, state = opt.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), None

        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
        return p

    return jax.vmap(train_member)(params, weights)


def layers_to_arrays(params, prefix: str = "") -> dict[str, np.ndarray]:
    """``[(w, b), ...]`` as named arrays for a predictor's ``arrays.npz``."""
    arrays = {}
    for i, (w, b) in enumerate(params):
        arrays[f"{prefix}w{i}"], arrays[f"{prefix}b{i}"] = np.asarray(w), np.asarray(b)
    return arrays


def layers_from_arrays(arrays: dict, layers: int, prefix: str = "") -> list:
    """The inverse of :func:`layers_to_arrays`."""
    return [(arrays[f"{prefix}w{i}"], arrays[f"{prefix}b{i}"]) for i in range(layers)]


@jax.jit
def _predict_members(params, X):
    return jax.vmap(_forward, in_axes=(0, None))(params, X)[..., 0]  # (M, N)


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
            # Bayesian bootstrap: Dirichlet(1) weights, scaled to mean 1 over the real rows.
            w = jax.random.exponential(key, (m, n_real))
            w = w / w.mean(axis=1, keepdims=True)
        else:
            w = jnp.ones((m, n_real))
        return jnp.pad(w, ((0, 0), (0, n_rows - n_real)))

    def _fit(self, X, y, pretrain):
        c = self.config
        n, f = X.shape
        hidden = tuple(int(h) for h in c["hidden"])
        key = jax.random.key(self.seed)
        k_init, k_head, k_w, k_pw = jax.random.split(key, 4)
        members = jax.random.split(k_init, c["members"])
        train = functools.partial(_train, lr=float(c["lr"]), weight_decay=float(c["weight_decay"]))

        if pretrain is not None:
            Xu, stats = pretrain
            stats = (stats - stats.mean(0)) / np.where(stats.std(0) > 0, stats.std(0), 1.0)
            sizes = (f,) + hidden + (stats.shape[1],)
            params = jax.vmap(lambda k: _init_member(k, sizes))(members)
            Xu_p = _pad_rows(Xu)
            S_p = _pad_rows(stats.astype(np.float32))
            params = train(params, Xu_p, S_p, self._weights(k_pw, len(Xu_p), len(Xu)), steps=int(c["pretrain_steps"]))
            head = jax.vmap(lambda k: _init_layer(k, hidden[-1] if hidden else f, 1))(
                jax.random.split(k_head, c["members"])
            )
            params = params[:-1] + [head]
        else:
            sizes = (f,) + hidden + (1,)
            params = jax.vmap(lambda k: _init_member(k, sizes))(members)

        X_p = _pad_rows(X)
        Y_p = _pad_rows(y.astype(np.float32)[:, None])
        params = train(params, X_p, Y_p, self._weights(k_w, len(X_p), n), steps=int(c["steps"]))
        self._params = jax.tree.map(np.asarray, params)

    def _member_predictions(self, X) -> np.ndarray:
        n = len(X)
        out = _predict_members(self._params, _pad_rows(X))
        return np.asarray(out, np.float64)[:, :n]

    def _predict(self, X):
        return self._member_predictions(X).mean(0)

    def _predict_std(self, X):
        return self._member_predictions(X).std(0)

    def _state(self):
        return {"layers": len(self._params)}, layers_to_arrays(self._params)

    def _restore(self, meta, arrays):
        self._params = layers_from_arrays(arrays, meta["layers"])
