"""Zero-cost proxies through the supernet: finite, deterministic, one compiled program for every
subnet of a resolution. Slow: compiling three gradients of a supernet takes minutes on 2 cores."""

from __future__ import annotations

import types

import jax
import numpy as np
import pytest

from search_spaces import get_space
from search_spaces.errors import NasError
from search_spaces.zero_cost import DEFAULT_PROXIES, PROXIES, ZeroCostProxies, check_proxies, zero_cost_of_run


@pytest.mark.slow
def test_proxies_are_finite_deterministic_and_compile_once():
    space = get_space("resnet-tiny")
    params = space.init_supernet(jax.random.key(0))
    rng = np.random.default_rng(0)
    side = max(space.resolutions)
    images = rng.integers(0, 255, (8, side, side, space.in_channels), dtype=np.uint8)
    labels = rng.integers(0, space.config.num_classes, 8)
    zc = ZeroCostProxies(space, params, images, labels, 100.0 / 255, 50.0 / 255, batch_size=4, batches=2,
                         proxies=PROXIES)
    big = space.largest()
    archs = [big, space.smallest()] + [a for a in (space.sample(rng) for _ in range(4)) if a.resolution == big.resolution]
    first = zc.many(archs)
    assert all(list(v) == list(PROXIES) and all(np.isfinite(list(v.values()))) for v in first)
    assert [zc(a) for a in archs] == first
    assert first[0] != first[1]
    assert zc.num_compiled() == len({a.resolution for a in archs})
    cost = zc.cost()
    assert cost["subnets"] == 2 * len(archs) and cost["seconds_per_subnet"] > 0 and cost["compile_seconds"] > 0
    # the subset of the defaults is the same numbers, from its own (smaller) program
    some = ZeroCostProxies(space, params, images, labels, 100.0 / 255, 50.0 / 255, batch_size=4, batches=2)
    assert list(some(big)) == list(DEFAULT_PROXIES)
    np.testing.assert_allclose([some(big)[p] for p in DEFAULT_PROXIES], [first[0][p] for p in DEFAULT_PROXIES],
                               rtol=1e-4)


def test_too_few_images_is_an_error():
    space = get_space("resnet-tiny")
    with pytest.raises(NasError, match="at least 2 images per batch, got 1"):
        ZeroCostProxies(space, {}, np.zeros((1, 8, 8, 1), np.uint8), np.zeros(1), 0.0, 1.0)


def test_proxy_names_are_checked():
    assert check_proxies(["synflow", "grad_norm"]) == ("grad_norm", "synflow")
    with pytest.raises(NasError, match="unknown zero-cost proxy 'snip'; known proxies: grad_norm, synflow"):
        check_proxies(["snip"])
    with pytest.raises(NasError, match="at most once"):
        check_proxies(["synflow", "synflow"])


def test_a_runs_proxy_images_are_drawn_by_its_seed():
    """The same run gives the same images (so the same proxies) in every process; another seed others."""
    class Split:
        def __init__(self, n):
            self.images = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(8, 1).repeat(8, 2)
            self.labels = np.arange(n) % 10

        def __len__(self):
            return len(self.labels)

        def read(self, idx):
            return self.images[idx], self.labels[idx], ()

    space = get_space("resnet-tiny")

    def run(seed):
        ds = types.SimpleNamespace(train=Split(100), mean=np.zeros(1), std=np.ones(1))
        return types.SimpleNamespace(space=space, params={}, dataset=ds, config=types.SimpleNamespace(seed=seed))

    a, b, c = (zero_cost_of_run(run(s), batch_size=4, batches=2) for s in (0, 0, 1))
    assert a._images.shape == (2, 4, 8, 8, 1)
    np.testing.assert_array_equal(a._images, b._images)
    assert not np.array_equal(a._images, c._images)
