"""Zero-cost proxies of subnets, computed through a supernet's shared weights on a few batches.

Each proxy is a number per subnet that costs a forward and backward pass or two, no training:

* ``grad_norm``: the L2 norm of the gradient of the cross-entropy loss with respect to the
  weights the subnet uses (Abdelfattah et al. 2021);
* ``synflow``: ``sum |theta * dR/dtheta|`` where ``R`` is the sum of the logits computed with the
  absolute weights (Tanaka et al. 2020); here on the data batch, not on an all-ones input, because
  the supernet's BatchNorm runs on batch statistics and would zero a constant input; reported as
  ``log10(1 + value)``;
* ``jacob_cov``: the score of the correlation of the input gradients of the summed logits across
  the batch's images, ``-sum(log(l + k) + 1/(l + k))`` over its eigenvalues ``l``, ``k = 1e-5``
  (Mellor et al. 2021): subnets whose images' gradients are less correlated score higher;
* ``gradsign``: ``sum_k |sum_i sign(g_ik)|`` over the weights ``k`` of the per-image gradients
  ``g_i`` of the loss (Zhang & Jia 2022): how much the images' gradients agree in sign. Each
  image's gradient is taken within the batch (BatchNorm on the batch's statistics), as the
  gradient of its own loss term; weights the subnet does not use have zero gradients and count 0.
  Not computed by default: its per-image backward passes cost about 25x the other three together.

BatchNorm uses batch statistics ("train" mode), as the papers' PyTorch code does. The subnet is
selected at run time by its branch-index array, so one compiled program per resolution serves
every subnet (``num_compiled`` says how many), and each call runs every batch at once. (Batching
several subnets into one call would not be cheaper: a batch of branch indices turns each
``lax.switch`` into a select that computes every branch.) The values are averaged over the
batches given.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from search_spaces.programs import jit
from search_spaces.base import Arch, SupernetSpace
from search_spaces.errors import NasError
from search_spaces.layers import preprocess

#: every proxy, in the order :meth:`ZeroCostProxies.__call__` computes them
PROXIES = ("grad_norm", "synflow", "jacob_cov", "gradsign")
#: what is computed unless asked otherwise: gradsign's one backward pass per image costs about 25x the
#: other three together (mobilenetv3-tiny at 14 px, 32 images: 9.9 s against 0.40 s per subnet)
DEFAULT_PROXIES = ("grad_norm", "synflow", "jacob_cov")
_EPS = 1e-5


def check_proxies(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` as a tuple in :data:`PROXIES` order; raises NasError on an unknown or repeated one."""
    bad = [n for n in names if n not in PROXIES]
    if bad:
        raise NasError(f"unknown zero-cost proxy {bad[0]!r}; known proxies: {', '.join(PROXIES)}")
    if not names or len(set(names)) != len(names):
        raise NasError(f"zero-cost proxies {list(names)}: name each of {', '.join(PROXIES)} at most once, "
                       "and at least one")
    return tuple(p for p in PROXIES if p in names)


class ZeroCostProxies:
    """The proxies of subnets of ``space`` with the supernet weights ``params``.

    Args:
      images: uint8 images ``(N, H, W, C)``; the first ``batches * batch_size`` are used.
      labels: their integer labels ``(N,)``.
      mean, std: the dataset's pixel statistics (what the supernet was trained with), scalars or
        per channel ``(C,)``.
      proxies: which of :data:`PROXIES` to compute (default :data:`DEFAULT_PROXIES`).

    Raises:
      NasError: fewer images than one batch of two; an unknown proxy.
    """

    def __init__(self, space: SupernetSpace, params, images: np.ndarray, labels: np.ndarray, mean,
                 std, *, batch_size: int = 32, batches: int = 1, proxies: Sequence[str] = DEFAULT_PROXIES):
        n = min(len(images), batch_size * batches)
        bs = min(batch_size, n)
        if bs < 2:
            raise NasError(f"zero-cost proxies need at least 2 images per batch, got {n} image(s)")
        self.proxies = check_proxies(proxies)
        self.space, self.params = space, params
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        starts = range(0, n - bs + 1, bs)
        self._images = np.stack([np.asarray(images[s : s + bs]) for s in starts])  # (K, B, H, W, C)
        self._labels = np.stack([np.asarray(labels[s : s + bs], np.int32) for s in starts])  # (K, B)
        self._fns: dict[int, Callable] = {}
        #: wall seconds of every call after a resolution's first (compiled) one, and of the first ones
        self.seconds: list[float] = []
        self.compile_seconds: list[float] = []

    def _fn(self, resolution: int):
        if resolution not in self._fns:
            space, wanted = self.space, self.proxies

            def one_batch(params, images, labels, arch_arr, mean, std):
                x = preprocess(images, resolution, mean, std)  # (B, R, R, C)
                out = {}

                def losses(p):
                    logits = space.supernet_apply(p, None, x, arch_arr, mode="train")
                    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)  # (B,)

                if "grad_norm" in wanted:
                    grads = jax.grad(lambda p: losses(p).mean())(params)
                    out["grad_norm"] = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))
                if "synflow" in wanted:
                    abs_params = jax.tree.map(jnp.abs, params)
                    syn = jax.grad(lambda p: space.supernet_apply(p, None, x, arch_arr, mode="train").sum())(abs_params)
                    synflow = sum(jnp.sum(jnp.abs(p * g)) for p, g in zip(jax.tree.leaves(abs_params),
                                                                          jax.tree.leaves(syn)))
                    out["synflow"] = jnp.log10(1.0 + synflow)
                if "jacob_cov" in wanted:
                    jac = jax.grad(lambda xx: space.supernet_apply(params, None, xx, arch_arr, mode="train").sum())(x)
                    jac = jac.reshape(jac.shape[0], -1)  # (B, R*R*C)
                    jac = jac - jac.mean(1, keepdims=True)
                    norm = jnp.sqrt(jnp.sum(jnp.square(jac), 1, keepdims=True))
                    unit = jac / jnp.maximum(norm, 1e-12)
                    corr = unit @ unit.T  # (B, B) correlation of the images' input gradients
                    eig = jnp.clip(jnp.linalg.eigvalsh(corr), 0.0, None)
                    out["jacob_cov"] = -jnp.sum(jnp.log(eig + _EPS) + 1.0 / (eig + _EPS))
                if "gradsign" in wanted:
                    _, vjp = jax.vjp(losses, params)
                    # one backward pass per image: the gradient of its own loss term, (B, ...) per leaf
                    per_image = jax.vmap(lambda e: vjp(e)[0])(jnp.eye(x.shape[0], dtype=x.dtype))
                    out["gradsign"] = sum(jnp.sum(jnp.abs(jnp.sum(jnp.sign(g), 0)))
                                          for g in jax.tree.leaves(per_image))
                return jnp.stack([out[p] for p in wanted])

            # images (K, B, H, W, C): every batch in one call. The pixel statistics are arguments, not
            # constants, so the program (and the persistent compilation cache) is one per space and shape.
            def proxies(params, images, labels, arch_arr, mean, std):
                return jax.lax.map(lambda b: one_batch(params, b[0], b[1], arch_arr, mean, std),
                                   (images, labels)).mean(0)

            self._fns[resolution] = jit(proxies)
        return self._fns[resolution]

    def num_compiled(self) -> int:
        """Programs compiled so far (one per resolution met)."""
        return sum(f._cache_size() for f in self._fns.values())

    def __call__(self, arch: Arch) -> dict[str, float]:
        """The proxies of ``arch``, averaged over the batches, by name (in :data:`PROXIES` order).

        Raises:
          NasError: a proxy is not finite (e.g. a diverged supernet).
        """
        first = arch.resolution not in self._fns
        fn = self._fn(arch.resolution)
        arr = jnp.asarray(self.space.arch_arrays(arch))
        start = time.perf_counter()
        values = np.asarray(fn(self.params, self._images, self._labels, arr, self.mean, self.std), np.float64)
        (self.compile_seconds if first else self.seconds).append(time.perf_counter() - start)
        if not np.all(np.isfinite(values)):
            raise NasError(f"zero-cost proxies of {self.space.encode(arch)} are not finite: "
                           f"{dict(zip(self.proxies, values.tolist()))}")
        return {name: float(v) for name, v in zip(self.proxies, values)}

    def many(self, archs: Sequence[Arch], progress: Callable[[int, int], None] | None = None) -> list[dict[str, float]]:
        """The proxies of each of ``archs`` (each resolution compiled once)."""
        out = []
        for i, a in enumerate(archs):
            out.append(self(a))
            if progress is not None:
                progress(i + 1, len(archs))
        return out

    def cost(self) -> dict[str, float]:
        """``{"subnets", "seconds_per_subnet", "compile_seconds"}`` of the calls so far: the mean wall
        time of a call that did not compile, and the total of the calls that did."""
        n = len(self.seconds) + len(self.compile_seconds)
        return {"subnets": n, "seconds_per_subnet": float(np.mean(self.seconds)) if self.seconds else float("nan"),
                "compile_seconds": float(np.sum(self.compile_seconds))}


def proxies_of_run(space: SupernetSpace, params, train_split, mean, std, seed: int, *, batch_size: int = 32,
                   batches: int = 1, proxies: Sequence[str] = DEFAULT_PROXIES) -> ZeroCostProxies:
    """Proxies on ``batches * batch_size`` training images of a run, a fixed subset drawn by ``seed``
    (``train_split.read(indices)`` gives images and labels), so a run's proxies are one function of
    the arch."""
    order = np.random.default_rng([int(seed), 11]).permutation(len(train_split))
    images, labels, _ = train_split.read(np.sort(order[: batch_size * batches]))
    return ZeroCostProxies(space, params, images, labels, mean, std, batch_size=batch_size, batches=batches,
                           proxies=proxies)


def zero_cost_of_run(run, *, batch_size: int = 32, batches: int = 1,
                     proxies: Sequence[str] = DEFAULT_PROXIES) -> ZeroCostProxies:
    """:func:`proxies_of_run` of a training run (``run.space``, ``run.params``, ``run.dataset``,
    ``run.config.seed``): the images are drawn by the run's own seed, so every sample and search
    of the run gives an architecture the same proxies."""
    ds = run.dataset
    return proxies_of_run(run.space, run.params, ds.train, ds.mean, ds.std, run.config.seed,
                          batch_size=batch_size, batches=batches, proxies=proxies)
