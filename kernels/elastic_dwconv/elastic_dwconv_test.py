"""Elastic depthwise conv against lax.conv: interpret mode on CPU, the XLA path, and compiled on GPU."""

import jax
import jax.numpy as jnp
import pytest

from kernels.elastic_dwconv import elastic_dwconv, elastic_dwconv_reference
from kernels.tests.base import ElasticKernelTestBase

# (B, H, W, Cmax, Kmax, c, ks, stride, block_cap)
CASES = [
    (2, 8, 8, 20, 7, 20, 7, 1, 16),  # c = max, ks = max, two channel tiles
    (1, 7, 9, 20, 7, 1, 3, 2, 16),  # c = 1, odd sizes, stride 2
    (2, 6, 5, 12, 7, 5, 5, 1, 128),  # one channel tile, middle crop
    (1, 9, 10, 16, 5, 16, 3, 2, 16),  # Kmax = 5, stride 2
]


class TestElasticDwconvInterpret(ElasticKernelTestBase):
    SMALL_CASE = CASES[1]

    @pytest.fixture(params=CASES, ids=lambda c: "B{}_H{}_W{}_C{}_K{}_c{}_ks{}_s{}_cap{}".format(*c))
    def case(self, request):
        return request.param

    def make_inputs(self, case, dtype, key):
        b, hh, ww, cmax, kmax, c, ks, stride, _ = case
        kx, kw = jax.random.split(key)
        arrays = (jax.random.normal(kx, (b, hh, ww, cmax)), jax.random.normal(kw, (kmax, kmax, cmax)) / kmax)
        return tuple(a.astype(dtype) for a in arrays), {"c": c, "ks": ks}

    def apply(self, case, arrays, sizes, **impl):
        if impl.get("implementation") == "pallas":
            impl = {**impl, "_block_cap": case[-1]}
        return elastic_dwconv(*arrays, c=sizes["c"], ks=sizes["ks"], stride=case[7], **impl)

    def reference(self, case, arrays, sizes):
        return elastic_dwconv_reference(*arrays, c=sizes["c"], ks=sizes["ks"], stride=case[7])

    def zero_masks(self, case, arrays, sizes):
        b, hh, ww, cmax, kmax, c, ks, stride, _ = case
        ch_off = jnp.arange(cmax) >= c
        lo = (kmax - ks) // 2
        t = jnp.arange(kmax)
        tap_off = (t < lo) | (t >= lo + ks)
        ho, wo = -(-hh // stride), -(-ww // stride)
        return (
            jnp.broadcast_to(ch_off, (b, ho, wo, cmax)),
            jnp.broadcast_to(ch_off, (b, hh, ww, cmax)),
            tap_off[:, None, None] | tap_off[None, :, None] | ch_off[None, None, :],
        )


class TestElasticDwconvXla(TestElasticDwconvInterpret):
    IMPL = {"implementation": "xla"}


@pytest.mark.gpu
class TestElasticDwconvGpu(TestElasticDwconvInterpret):
    IMPL = {"implementation": "pallas"}


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks the CPU error")
def test_pallas_without_interpret_on_cpu_raises():
    with pytest.raises(ValueError, match="needs a GPU or TPU backend"):
        elastic_dwconv(jnp.ones((1, 4, 4, 8)), jnp.ones((3, 3, 8)), c=4, ks=3, stride=1, implementation="pallas")


def test_bad_stride_and_even_kernel_raise():
    with pytest.raises(ValueError, match="stride=3"):
        elastic_dwconv(jnp.ones((1, 4, 4, 8)), jnp.ones((3, 3, 8)), c=4, ks=3, stride=3)
    with pytest.raises(ValueError, match="must be odd"):
        elastic_dwconv(jnp.ones((1, 4, 4, 8)), jnp.ones((4, 4, 8)), c=4, ks=3, stride=1)
