"""Fused elastic MLP against its reference: interpret mode on CPU, the XLA path, and compiled on GPU."""

import jax
import jax.numpy as jnp
import pytest

from kernels.elastic_mlp import elastic_mlp, elastic_mlp_reference
from kernels.tests.base import ElasticKernelTestBase

# (M, D, Hmax, h, activation, block_cap)
CASES = [
    (6, 24, 40, 40, "relu", 128),  # h = max, one hidden chunk
    (9, 20, 40, 1, "gelu", 16),  # h = 1
    (20, 24, 48, 17, "hard_swish", 16),  # h not a multiple of the block
]


class TestElasticMlpInterpret(ElasticKernelTestBase):
    SMALL_CASE = CASES[2]

    @pytest.fixture(params=CASES, ids=lambda c: "M{}_D{}_H{}_h{}_{}_cap{}".format(*c))
    def case(self, request):
        return request.param

    def make_inputs(self, case, dtype, key):
        m, d, hmax, h, _, _ = case
        ks = jax.random.split(key, 5)
        arrays = (
            jax.random.normal(ks[0], (m, d)),
            jax.random.normal(ks[1], (d, hmax)) / d**0.5,
            jax.random.normal(ks[2], (hmax,)),
            jax.random.normal(ks[3], (hmax, d)) / hmax**0.5,
            jax.random.normal(ks[4], (d,)),
        )
        return tuple(a.astype(dtype) for a in arrays), {"h": h}

    def apply(self, case, arrays, sizes, **impl):
        if impl.get("implementation") == "pallas":
            impl = {**impl, "_block_cap": case[-1]}
        return elastic_mlp(*arrays, h=sizes["h"], activation=case[4], **impl)

    def reference(self, case, arrays, sizes):
        return elastic_mlp_reference(*arrays, h=sizes["h"], activation=case[4])

    def zero_masks(self, case, arrays, sizes):
        m, d, hmax, h, _, _ = case
        off = jnp.arange(hmax) >= h
        return (None, None, jnp.broadcast_to(off, (d, hmax)), off, jnp.broadcast_to(off[:, None], (hmax, d)), None)


class TestElasticMlpXla(TestElasticMlpInterpret):
    IMPL = {"implementation": "xla"}


@pytest.mark.gpu
class TestElasticMlpGpu(TestElasticMlpInterpret):
    IMPL = {"implementation": "pallas"}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU error")
def test_pallas_without_interpret_on_cpu_raises():
    x, w1, b1 = jnp.ones((4, 8)), jnp.ones((8, 16)), jnp.ones((16,))
    with pytest.raises(ValueError, match="needs a GPU or TPU backend"):
        elastic_mlp(x, w1, b1, w1.T, jnp.ones((8,)), h=3, implementation="pallas")


def test_unknown_activation_raises():
    x, w1, b1 = jnp.ones((4, 8)), jnp.ones((8, 16)), jnp.ones((16,))
    with pytest.raises(ValueError, match="activation='swish'"):
        elastic_mlp(x, w1, b1, w1.T, jnp.ones((8,)), h=3, activation="swish")
