"""The ensemble-MLP engine: ReLU MLPs with a leading member axis, trained full-batch under one jit.

Both the ``mlp`` predictor (:mod:`predictors.mlp`) and the FBNetV3 statistics network
(:class:`predictors.pretrain.StatFeatures`) are built from these pieces:

>>> params = init_members(jax.random.split(key, members), (features, 64, 64, outputs))
>>> params = train(params, pad_rows(X), pad_rows(Y), pad_weights(w, len(pad_rows(X))),
...                steps=400, lr=3e-3, weight_decay=1e-2)
>>> out = predict_members(params, pad_rows(X))[:, :len(X)]  # (M, N), single-output networks

Params are a list of layers ``[(w (M, din, dout), b (M, dout)), ...]``; one member's layers (no
member axis) are what :func:`forward` and :func:`forward_numpy` take.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

# Rows are zero-weight padded up to a multiple of this, so fits of nearby sizes (k-fold
# splits, growing search archives) reuse one compiled program instead of recompiling.
ROW_BUCKET = 64
# Input columns are zero-padded up to a multiple of this (with zero first-layer weights on them, so
# the network is the unpadded one): the models of one search's metrics see different feature
# widths (accuracy: the structure features, latency: those and the one-hot) and would each
# compile their own training program per row bucket (a compile cost 5-25x a fit at these sizes).
COL_BUCKET = 64

Params = list  # [(w (M, din, dout), b (M, dout)), ...] with the member axis first


def pad_rows(X: np.ndarray, bucket: int = ROW_BUCKET) -> np.ndarray:
    """``X`` with zero rows appended up to a multiple of ``bucket`` (at least one bucket)."""
    n = len(X)
    total = max(bucket, -(-n // bucket) * bucket)
    return np.concatenate([X, np.zeros((total - n,) + X.shape[1:], X.dtype)]) if total > n else X


def pad_cols(X: np.ndarray, bucket: int = COL_BUCKET) -> np.ndarray:
    """``X (N, F)`` with zero columns appended up to a multiple of ``bucket``."""
    total = max(bucket, -(-X.shape[1] // bucket) * bucket)
    return np.pad(X, ((0, 0), (0, total - X.shape[1]))) if total > X.shape[1] else X


def pad_first_layer(params: Params, din: int) -> Params:
    """``params`` (numpy) with zero rows appended to the first layer's weights up to ``din`` inputs:
    fed :func:`pad_cols` inputs, the same network (a zero weight on a zero input gets a zero
    gradient, and AdamW keeps it zero); :func:`unpad_first_layer` takes them off again."""
    (w, b), *rest = params
    w = np.asarray(w)
    return [(np.pad(w, ((0, 0), (0, din - w.shape[1]), (0, 0))), b), *rest]


def unpad_first_layer(params: Params, din: int) -> Params:
    """The inverse of :func:`pad_first_layer`: the first layer's weights of the first ``din`` inputs."""
    (w, b), *rest = params
    return [(w[:, :din], b), *rest]


def pad_weights(weights, n_rows: int) -> jnp.ndarray:
    """Per-member sample weights ``(M, N_real)`` padded with zeros to ``(M, n_rows)``."""
    return jnp.pad(weights, ((0, 0), (0, n_rows - weights.shape[1])))


@functools.partial(jax.jit, static_argnames=("members", "n_rows"))
def bootstrap_weights(key, n_real, *, members: int, n_rows: int) -> jnp.ndarray:
    """Bayesian-bootstrap sample weights ``(members, n_rows)``: Dirichlet(1) weights over the first
    ``n_real`` rows, scaled to mean 1 over them, and 0 on the padding rows.

    ``n_real`` is traced, so every row count of one bucket shares one program: drawn at the real
    rows' shape, each fold of a cross-validation and each iteration of a search compiled anew
    (75 compilations, 65 of 400 s, in 4 iterations of a search with ``auto``).
    """
    real = jnp.arange(n_rows) < n_real
    w = jnp.where(real, jax.random.exponential(key, (members, n_rows)), 0.0)
    return w * (n_real / jnp.sum(w, axis=1, keepdims=True))


def init_layer(key, din: int, dout: int):
    """One dense layer: He-normal weights ``(din, dout)``, zero bias ``(dout,)``."""
    w = jax.random.normal(key, (din, dout), jnp.float32) * jnp.sqrt(2.0 / din)
    return w, jnp.zeros((dout,), jnp.float32)


def init_member(key, sizes: tuple[int, ...]):
    """One member's layers for layer widths ``sizes`` (inputs, hidden..., outputs)."""
    keys = jax.random.split(key, len(sizes) - 1)
    return [init_layer(k, a, b) for k, a, b in zip(keys, sizes[:-1], sizes[1:])]


def init_members(keys, sizes: tuple[int, ...]) -> Params:
    """One member per key (``keys (M,)``), stacked on a leading member axis."""
    return jax.vmap(lambda k: init_member(k, sizes))(keys)


def init_members_numpy(rng: np.random.Generator, members: int, sizes: tuple[int, ...]) -> Params:
    """:func:`init_members`' He-normal weights and zero biases drawn by numpy from ``rng``.

    JAX's draws cost ~0.1 s a fit run op by op and a compile of ~3 s per ``sizes`` under ``jit``
    (measured on this 2-core machine, loaded); a search fits this network hundreds of times.
    """
    return [((rng.standard_normal((members, a, b)) * np.sqrt(2.0 / a)).astype(np.float32),
             np.zeros((members, b), np.float32)) for a, b in zip(sizes[:-1], sizes[1:])]


def init_layers(keys, din: int, dout: int):
    """One fresh dense layer per key, stacked on a leading member axis (a new output head)."""
    return jax.vmap(lambda k: init_layer(k, din, dout))(keys)


def forward(params, X):
    """One member's output ``(N, out)``: ReLU between layers, linear last layer."""
    h = X
    for w, b in params[:-1]:
        h = jax.nn.relu(h @ w + b)
    w, b = params[-1]
    return h @ w + b  # (N, out)


def forward_numpy(params, X: np.ndarray) -> np.ndarray:
    """:func:`forward` in numpy float32, for one member's fitted layers (no jit, no device)."""
    h = np.asarray(X, np.float32)
    for w, b in params[:-1]:
        h = np.maximum(h @ w + b, 0.0)
    w, b = params[-1]
    return h @ w + b


@functools.partial(jax.jit, static_argnames=("steps", "lr", "weight_decay"))
def train(params, X, Y, weights, *, steps: int, lr: float, weight_decay: float):
    """Trains every member (leading axis of ``params`` and ``weights (M, N)``) full-batch.

    AdamW with a cosine-decayed learning rate, on the weighted mean squared error over ``Y (N, out)``;
    zero-weight (padded) rows do not count.
    """
    opt = optax.adamw(optax.cosine_decay_schedule(lr, steps), weight_decay=weight_decay)

    def train_member(p, w):
        def loss(p):
            err = (forward(p, X) - Y) ** 2  # (N, out)
            return jnp.sum(w[:, None] * err) / (jnp.sum(w) * Y.shape[1])

        def step(carry, _):
            p, state = carry
            grads = jax.grad(loss)(p)
            updates, state = opt.update(grads, state, p)
            return (optax.apply_updates(p, updates), state), None

        (p, _), _ = jax.lax.scan(step, (p, opt.init(p)), None, length=steps)
        return p

    return jax.vmap(train_member)(params, weights)


@jax.jit
def predict_members(params, X):
    """Every member's single output on ``X``: ``(M, N)``."""
    return jax.vmap(forward, in_axes=(0, None))(params, X)[..., 0]  # (M, N)


def layers_to_arrays(params, prefix: str = "") -> dict[str, np.ndarray]:
    """``[(w, b), ...]`` as named arrays (``{prefix}w0``, ``{prefix}b0``, ...) for ``arrays.npz``."""
    arrays = {}
    for i, (w, b) in enumerate(params):
        arrays[f"{prefix}w{i}"], arrays[f"{prefix}b{i}"] = np.asarray(w), np.asarray(b)
    return arrays


def layers_from_arrays(arrays: dict, layers: int, prefix: str = "") -> list:
    """The inverse of :func:`layers_to_arrays`."""
    return [(arrays[f"{prefix}w{i}"], arrays[f"{prefix}b{i}"]) for i in range(layers)]
