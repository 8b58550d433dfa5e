"""Elastic matmul against its reference: interpret mode on CPU, the XLA path, and compiled on GPU."""

import jax
import jax.numpy as jnp
import pytest

from kernels.elastic_matmul import elastic_matmul, elastic_matmul_reference
from kernels.tests.base import ElasticKernelTestBase

# (M, Kmax, Nmax, k, n, with_bias, block_cap): a block cap of 16 gives several tiles at tiny sizes.
CASES = [
    (5, 24, 40, 24, 40, True, 128),  # k = max, n = max, one tile
    (9, 40, 36, 1, 1, True, 16),  # k = n = 1, most tiles inactive
    (20, 40, 36, 17, 33, False, 16),  # nothing a multiple of the block
    (33, 50, 20, 50, 7, True, 16),  # k = max, small n
]


class TestElasticMatmulInterpret(ElasticKernelTestBase):
    SMALL_CASE = CASES[2]

    @pytest.fixture(params=CASES, ids=lambda c: "M{}_K{}_N{}_k{}_n{}_b{}_cap{}".format(*c))
    def case(self, request):
        return request.param

    def make_inputs(self, case, dtype, key):
        m, kmax, nmax, k, n, with_bias, _ = case
        kx, kw, kb = jax.random.split(key, 3)
        arrays = (jax.random.normal(kx, (m, kmax)), jax.random.normal(kw, (kmax, nmax)) / kmax**0.5)
        if with_bias:
            arrays += (jax.random.normal(kb, (nmax,)),)
        return tuple(a.astype(dtype) for a in arrays), {"k": k, "n": n}

    def apply(self, case, arrays, sizes, **impl):
        if impl.get("implementation") == "pallas":
            impl = {**impl, "_block_cap": case[-1]}
        return elastic_matmul(*arrays, k=sizes["k"], n=sizes["n"], **impl)

    def reference(self, case, arrays, sizes):
        return elastic_matmul_reference(*arrays, k=sizes["k"], n=sizes["n"])

    def zero_masks(self, case, arrays, sizes):
        m, kmax, nmax, k, n, with_bias, _ = case
        cols_n = jnp.arange(nmax) >= n
        rows_k = jnp.arange(kmax) >= k
        masks = (
            jnp.broadcast_to(cols_n, (m, nmax)),
            jnp.broadcast_to(rows_k[None, :], (m, kmax)),
            rows_k[:, None] | cols_n[None, :],
        )
        return masks + ((cols_n,) if with_bias else ())


class TestElasticMatmulXla(TestElasticMatmulInterpret):
    IMPL = {"implementation": "xla"}


@pytest.mark.gpu
class TestElasticMatmulGpu(TestElasticMatmulInterpret):
    IMPL = {"implementation": "pallas"}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU error")
def test_pallas_without_interpret_on_cpu_raises():
    x, w = jnp.ones((4, 8)), jnp.ones((8, 8))
    with pytest.raises(ValueError, match="needs a GPU or TPU backend.*interpret=True"):
        elastic_matmul(x, w, k=3, n=4, implementation="pallas")


def test_auto_is_xla_on_cpu_and_bad_implementation_raises():
    x, w = jnp.ones((4, 8)), jnp.ones((8, 8))
    if jax.default_backend() == "cpu":
        jaxpr = jax.make_jaxpr(lambda x, w: elastic_matmul(x, w, k=3, n=4))(x, w)
        assert "pallas_call" not in str(jaxpr)
    with pytest.raises(ValueError, match="implementation='cuda'"):
        elastic_matmul(x, w, k=3, n=4, implementation="cuda")
    with pytest.raises(ValueError, match="interpret=True only applies"):
        elastic_matmul(x, w, k=3, n=4, implementation="xla", interpret=True)
