"""The kernel formulation of supernet training (GPU/TPU: --kernels pallas) against the composed one."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from search_spaces import get_space
from search_spaces.planned import KernelTrainer


def _max_rel(a, b):
    return max(float(jnp.abs(x - y).max() / (jnp.abs(x).max() + 1e-6)) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _compare(implementation: str, interpret: bool):
    space = get_space("mobilenetv3-tiny", in_channels=1, num_classes=10)
    params = space.init_supernet(jax.random.key(0))
    rng = np.random.default_rng(1)
    images = jnp.asarray(rng.integers(0, 255, size=(16, 8, 8, 1)), jnp.uint8)
    labels = jnp.asarray(rng.integers(0, 10, 16), jnp.int32)
    zeros = lambda: jax.tree.map(jnp.zeros_like, params)  # noqa: E731
    composed = space.make_trainer(0.3, 0.3, 0.0, "xla")
    elastic = KernelTrainer(space, 0.3, 0.3, implementation=implementation, interpret=interpret)
    soft = jax.nn.softmax(jnp.asarray(rng.normal(size=(16, 10)), jnp.float32))
    for arch, targets in ((space.sample(rng), None), (space.smallest(), soft), (space.largest(), None)):
        l1, lg1, g1 = composed.accumulate_grad(params, zeros(), arch, images, labels, targets)
        l2, lg2, g2 = elastic.accumulate_grad(params, zeros(), arch, images, labels, targets)
        assert float(jnp.abs(lg1 - lg2).max()) < 1e-4
        assert abs(float(l1) - float(l2)) < 1e-4
        assert _max_rel(g1, g2) < 2e-2
    assert elastic.num_compiled() == 2  # one program per (resolution, distillation), whatever the subnet


@pytest.mark.slow  # compiling the one-program supernet takes minutes on 2 CPU cores
def test_masked_xla_formulation_matches_composed():
    _compare("xla", interpret=False)


@pytest.mark.slow
def test_pallas_interpret_formulation_matches_composed():
    _compare("pallas", interpret=True)


@pytest.mark.gpu
def test_pallas_compiled_formulation_matches_composed():
    _compare("pallas", interpret=False)


def test_pallas_on_cpu_is_an_error_not_a_fallback():
    from nas_cli.errors import UserError
    from nas_cli.training.supernet import resolve_kernels

    if jax.default_backend() != "cpu":
        pytest.skip("CPU-only check")
    with pytest.raises(UserError, match="needs a GPU or TPU"):
        resolve_kernels("pallas")
    assert resolve_kernels("auto") == "xla"
