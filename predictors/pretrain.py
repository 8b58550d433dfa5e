"""Free architecture statistics for FBNetV3-style predictor pretraining.

FLOPs and parameter counts cost nothing to compute for any number of architectures, and they
correlate with accuracy; a network that first learns to predict them from the encoding starts
its accuracy fit from features that already mean something, which helps most with few samples.
"""

from __future__ import annotations

import numpy as np

from search_spaces.base import SearchSpace

STAT_NAMES = ("log_flops", "log_params")


def has_stats(space: SearchSpace) -> bool:
    """Whether ``space`` counts FLOPs and params (a :class:`SupernetSpace` does)."""
    return callable(getattr(space, "flops", None)) and callable(getattr(space, "params", None))


def arch_stats(space: SearchSpace, archs) -> np.ndarray:
    """``(N, 2)`` log FLOPs and log params of ``archs`` (logs: both span orders of magnitude)."""
    if not has_stats(space):
        raise ValueError(
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
