"""Zero-cost proxies through the supernet: finite, deterministic, one compiled program for every
subnet of a resolution. Slow: compiling three gradients of a supernet takes minutes on 2 cores."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from search_spaces import get_space
from search_spaces.errors import NasError
from search_spaces.zero_cost import PROXIES, ZeroCostProxies


@pytest.mark.slow
def test_proxies_are_finite_deterministic_and_compile_once():
    space = get_space("resnet-tiny")
    params = space.init_supernet(jax.random.key(0))
    rng = np.random.default_rng(0)
    side = max(space.resolutions)
    images = rng.integers(0, 255, (8, side, side, space.in_channels), dtype=np.uint8)
    labels = rng.integers(0, space.config.num_classes, 8)
    zc = ZeroCostProxies(space, params, images, labels, 100.0, 50.0, batch_size=4, batches=2)
    big = space.largest()
    archs = [big, space.smallest()] + [a for a in (space.sample(rng) for _ in range(4)) if a.resolution == big.resolution]
    first = [zc(a) for a in archs]
    assert all(set(v) == set(PROXIES) and all(np.isfinite(list(v.values()))) for v in first)
    assert [zc(a) for a in archs] == first
    assert first[0] != first[1]
    assert zc.num_compiled() == len({a.resolution for a in archs})


def test_too_few_images_is_an_error():
    space = get_space("resnet-tiny")
    with pytest.raises(NasError, match="at least 2 images per batch, got 1"):
        ZeroCostProxies(space, {}, np.zeros((1, 8, 8, 1), np.uint8), np.zeros(1), 0.0, 1.0)
