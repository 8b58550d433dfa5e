"""Lowering without the hardware: export each kernel's forward and backward for CUDA (Triton) and TPU.

``jax.export`` runs the Pallas -> Triton / Mosaic lowering; it does not run ptxas or the TPU compiler, so
this catches unsupported ops and shapes, not resource limits found at compile time.
"""

import jax
import jax.numpy as jnp
import pytest
from jax import export

from kernels import _common
from kernels.elastic_dwconv.api import elastic_dwconv_pallas
from kernels.elastic_matmul.api import elastic_matmul_pallas
from kernels.elastic_mlp.api import elastic_mlp_pallas

# The Triton / Mosaic custom calls carry no cross-version compatibility promise, so export refuses
# them unless told; that is a serialization policy, not a lowering failure.
_CHECKS = [
    export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton"),
    export.DisabledSafetyCheck.custom_call("tpu_custom_call"),
]
_TARGETS = {
    "cuda": _common.PallasConfig(interpret=False, variant="operand", platform="gpu"),
    "tpu": _common.PallasConfig(interpret=False, variant="prefetch", platform="tpu"),
}
_I32 = jax.ShapeDtypeStruct((), jnp.int32)


def _ops(cfg, dtype):
    s = lambda *shape: jax.ShapeDtypeStruct(shape, dtype)
    return {
        "elastic_matmul": (
            lambda x, w, b, k, n: elastic_matmul_pallas(cfg, x, w, b, k, n),
            (
                s(64, 200),
                s(200, 300),
                s(
                    300,
                ),
            ),
            2,
        ),
        "elastic_mlp": (
            lambda x, w1, b1, w2, b2, h: elastic_mlp_pallas(cfg, "gelu", x, w1, b1, w2, b2, h),
            (
                s(64, 128),
                s(128, 512),
                s(
                    512,
                ),
                s(512, 128),
                s(
                    128,
                ),
            ),
            1,
        ),
        "elastic_dwconv": (
            lambda x, w, c, ks: elastic_dwconv_pallas(cfg, 2, x, w, c, ks),
            (s(2, 16, 16, 128), s(7, 7, 128)),
            2,
        ),
    }


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("op", ["elastic_matmul", "elastic_mlp", "elastic_dwconv"])
@pytest.mark.parametrize("platform", ["cuda", "tpu"])
def test_exports(platform, op, dtype, direction, request):
    if platform == "tpu" and op == "elastic_dwconv":
        # Seen with jax 0.10.2 on a CPU-only host: the Mosaic lowering of this kernel asks for the TPU
        # generation and fails with "ValueError: Unsupported TPU device kind: cpu"; needs a TPU host to check.
        request.applymarker(
            pytest.mark.xfail(
                raises=Exception, strict=False, reason="Mosaic TPU lowering needs TPU device info off-TPU"
            )
        )
    fn, arrays, n_sizes = _ops(_TARGETS[platform], jnp.dtype(dtype))[op]
    n = len(arrays)
    if direction == "backward":
        fwd = fn
        fn = lambda *args: jax.grad(lambda *a: fwd(*a, *args[n:]).astype(jnp.float32).sum(), argnums=tuple(range(n)))(
            *args[:n]
        )
    exported = export.export(jax.jit(fn), platforms=[platform], disabled_checks=_CHECKS)(*arrays, *([_I32] * n_sizes))
    text = exported.mlir_module()
    assert ("__gpu$xla.gpu.triton" if platform == "cuda" else "tpu_custom_call") in text
