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
  (Mellor et al. 2021): subnets whose images' gradients are less correlated score higher.

BatchNorm uses batch statistics ("train" mode), as the papers' PyTorch code does. The subnet is
selected at run time by its branch-index array, so one compiled program per resolution serves
every subnet (``num_compiled`` says how many). The values are averaged over the batches given.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from search_spaces.base import Arch, SupernetSpace
from search_spaces.errors import NasError
from search_spaces.layers import preprocess

#: the proxies, in the order :meth:`ZeroCostProxies.__call__` returns them
PROXIES = ("grad_norm", "synflow", "jacob_cov")
_EPS = 1e-5


class ZeroCostProxies:
    """The proxies of subnets of ``space`` with the supernet weights ``params``.

    Args:
      images: uint8 images ``(N, H, W, C)``; the first ``batches * batch_size`` are used.
      labels: their integer labels ``(N,)``.
      mean, std: the dataset's pixel statistics (what the supernet was trained with).

    Raises:
      NasError: fewer images than one batch of two.
    """

    def __init__(self, space: SupernetSpace, params, images: np.ndarray, labels: np.ndarray, mean: float,
                 std: float, *, batch_size: int = 32, batches: int = 1):
        n = min(len(images), batch_size * batches)
        bs = min(batch_size, n)
        if bs < 2:
            raise NasError(f"zero-cost proxies need at least 2 images per batch, got {n} image(s)")
        self.space, self.params, self.mean, self.std = space, params, float(mean), float(std)
        self._batches = [(np.asarray(images[s : s + bs]), np.asarray(labels[s : s + bs], np.int32))
                         for s in range(0, n - bs + 1, bs)]
        self._fns: dict[int, object] = {}

    def _fn(self, resolution: int):
        if resolution not in self._fns:
            space, mean, std = self.space, self.mean, self.std

            def proxies(params, images, labels, arch_arr):
                x = preprocess(images, resolution, mean, std)  # (B, R, R, C)

                def loss(p):
                    logits = space.supernet_apply(p, None, x, arch_arr, mode="train")
                    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

                grads = jax.grad(loss)(params)
                grad_norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree.leaves(grads)))

                abs_params = jax.tree.map(jnp.abs, params)
                syn = jax.grad(lambda p: space.supernet_apply(p, None, x, arch_arr, mode="train").sum())(abs_params)
                synflow = sum(jnp.sum(jnp.abs(p * g)) for p, g in zip(jax.tree.leaves(abs_params),
                                                                      jax.tree.leaves(syn)))

                jac = jax.grad(lambda xx: space.supernet_apply(params, None, xx, arch_arr, mode="train").sum())(x)
                jac = jac.reshape(jac.shape[0], -1)  # (B, R*R*C)
                jac = jac - jac.mean(1, keepdims=True)
                norm = jnp.sqrt(jnp.sum(jnp.square(jac), 1, keepdims=True))
                unit = jac / jnp.maximum(norm, 1e-12)
                corr = unit @ unit.T  # (B, B) correlation of the images' input gradients
                eig = jnp.clip(jnp.linalg.eigvalsh(corr), 0.0, None)
                jacob_cov = -jnp.sum(jnp.log(eig + _EPS) + 1.0 / (eig + _EPS))
                return jnp.stack([grad_norm, jnp.log10(1.0 + synflow), jacob_cov])

            self._fns[resolution] = jax.jit(proxies)
        return self._fns[resolution]

    def num_compiled(self) -> int:
        """Programs compiled so far (one per resolution met)."""
        return sum(f._cache_size() for f in self._fns.values())

    def __call__(self, arch: Arch) -> dict[str, float]:
        """The proxies of ``arch``, averaged over the batches, by name (:data:`PROXIES`).

        Raises:
          NasError: a proxy is not finite (e.g. a diverged supernet).
        """
        fn = self._fn(arch.resolution)
        arr = jnp.asarray(self.space.arch_arrays(arch))
        values = np.mean([np.asarray(fn(self.params, im, lb, arr)) for im, lb in self._batches], axis=0)
        if not np.all(np.isfinite(values)):
            raise NasError(f"zero-cost proxies of {self.space.encode(arch)} are not finite: "
                           f"{dict(zip(PROXIES, values.tolist()))}")
        return {name: float(v) for name, v in zip(PROXIES, values)}

    def many(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        return [self(a) for a in archs]
