"""Evaluating subnets through the supernet: BatchNorm recalibration, accuracy, logits.

Every subnet is chosen at run time by its branch-index array, so one compiled program per
(resolution, batch shape) serves all subnets.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nas_cli.data import Split
from search_spaces.base import Arch, SupernetSpace
from search_spaces.engine import placed_like
from search_spaces.layers import preprocess
from search_spaces.programs import ProgramCache, jit


def preprocess_recorded(images_uint8, record: dict) -> jax.Array:
    """uint8 images (N, H, W, C) as an exported subnet's input, by the preprocessing ``record`` that
    the export wrote (subnet.json's "input", also model.onnx's metadata): per-channel mean/std, then
    resized to its resolution."""
    mean, std = (jnp.asarray(record[k], jnp.float32) for k in ("mean", "std"))
    return preprocess(jnp.asarray(images_uint8), record["resolution"], mean, std)


# one program each, not an eager op per BatchNorm statistic (a launch on every device under a mesh)
_tree_add = jit(lambda a, b: jax.tree.map(jnp.add, a, b))
_tree_divide = jit(lambda t, n: jax.tree.map(lambda x: x / n, t), static_argnums=1)


class SubnetEvaluator:
    """Recalibrates BatchNorm for a subnet and measures its accuracy, with the supernet's weights.

    With a ``mesh`` (one axis) every batch is split over its devices and the weights replicated:
    GSPMD makes the calibration statistics those of the whole batch, so the numbers are the serial
    ones (up to float32 summation order) and each measurement takes about 1/N of the device time.
    """

    def __init__(self, space: SupernetSpace, mean: float, std: float, batch_size: int = 128, mesh=None):
        self.space, self.mean, self.std = space, mean, std
        self.mesh = mesh if mesh is not None and mesh.devices.size > 1 else None
        n = 1 if self.mesh is None else self.mesh.devices.size
        self.batch_size = -(-batch_size // n) * n  # a multiple of the device count
        self._programs = ProgramCache()  # bounded with every other cache of the process (programs.py)
        self._signatures: set[tuple] = set()  # (kind, resolution, batch shape) of every call

    def _fns(self, resolution: int):
        space, mean, std = self.space, self.mean, self.std

        def calib(params, images, arch_arr):
            x = preprocess(images, resolution, mean, std)
            return space.supernet_apply(params, None, x, arch_arr, mode="calib")[1]

        def evaluate(params, stats, images, arch_arr):
            x = preprocess(images, resolution, mean, std)
            return space.supernet_apply(params, stats, x, arch_arr, mode="eval")

        return (self._programs.get(("calib", resolution), lambda: jit(calib)),
                self._programs.get(("eval", resolution), lambda: jit(evaluate)))

    def num_compiled(self) -> int:
        """Programs compiled so far: one per distinct (calib or eval, resolution, batch shape) called
        (the parameters' shapes are fixed). The evaluator counts what it has called; the tests
        check the real compilations with JAX's monitoring hooks."""
        return len(self._signatures)

    def _placed(self, params, chunk=None):
        """``params`` replicated and ``chunk`` split over the mesh (unchanged without one)."""
        if self.mesh is None:
            return params, chunk
        from jax.sharding import NamedSharding, PartitionSpec  # noqa: PLC0415

        axis = self.mesh.axis_names[0]
        params = jax.device_put(params, NamedSharding(self.mesh, PartitionSpec()))
        return params, None if chunk is None else jax.device_put(chunk, NamedSharding(self.mesh, PartitionSpec(axis)))

    def calibrate(self, params, arch: Arch, images: np.ndarray):
        """BatchNorm statistics of ``arch``: the mean over batches of each layer's batch mean and
        variance, forwarding ``images`` (OFA's recipe; a partial last batch is dropped)."""
        calib, _ = self._fns(arch.resolution)
        bs = min(self.batch_size, len(images))
        if self.mesh is not None:  # whole batches per device
            bs = max(bs - bs % self.mesh.devices.size, self.mesh.devices.size)
        params, _ = self._placed(params)
        arr = self._arch_array(params, arch)
        total, n = None, 0
        for start in range(0, len(images) - bs + 1, bs):
            chunk = images[start : start + bs]
            self._signatures.add(("calib", arch.resolution, chunk.shape, chunk.dtype.str))
            stats = calib(params, self._placed(None, chunk)[1], arr)
            if not jax.tree.leaves(stats):  # no BatchNorm (vit): more forwards would average nothing
                return stats
            total = stats if total is None else _tree_add(total, stats)
            n += 1
        return _tree_divide(total, n)

    def _arch_array(self, params, arch: Arch):
        """``arch``'s branch indices where ``params`` live (on every device of the mesh)."""
        return placed_like(self.space.arch_arrays(arch), jax.tree.leaves(params)[0])

    def logits(self, params, stats, arch: Arch, images: np.ndarray) -> np.ndarray:
        _, evaluate = self._fns(arch.resolution)
        bs = self.batch_size
        params, _ = self._placed(params)
        arr = self._arch_array(params, arch)
        out = []
        for start in range(0, len(images), bs):
            chunk = images[start : start + bs]
            n = len(chunk)
            if n < bs:  # pad to one batch shape: one compiled program
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], bs - n, axis=0)])
            self._signatures.add(("eval", arch.resolution, chunk.shape, chunk.dtype.str))
            out.append(np.asarray(evaluate(params, stats, self._placed(None, chunk)[1], arr))[:n])
        return np.concatenate(out)

    def accuracy(self, params, stats, arch: Arch, split: Split) -> float:
        pred = self.logits(params, stats, arch, split.images).argmax(-1)
        return float((pred == split.labels).mean())

    def calibrated_accuracy(self, params, arch: Arch, calib_images: np.ndarray, split: Split) -> float:
        return self.accuracy(params, self.calibrate(params, arch, calib_images), arch, split)
