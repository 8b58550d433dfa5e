"""One test base for every elastic kernel: shapes x dtypes x (forward, gradient) against the reference.

A subclass supplies the op through four hooks (``make_inputs``, ``apply``, ``reference``, ``zero_masks``)
and its shapes through a ``case`` fixture; ``IMPL`` picks the implementation under test. The interpret-mode
subclass runs on CPU; a ``gpu``-marked subclass with ``IMPL = {"implementation": "pallas"}`` covers the
compiled kernels.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from kernels.tests.compilations import count_compilations

# Max error relative to the reference's largest magnitude; bf16 has 8 mantissa bits.
TOLERANCE = {jnp.dtype(jnp.float32): 2e-5, jnp.dtype(jnp.bfloat16): 3e-2}

_JIT_CACHE: dict[Any, Any] = {}


def assert_close(actual, expected, dtype, what: str):
    actual = np.asarray(jnp.asarray(actual, jnp.float32))
    expected = np.asarray(jnp.asarray(expected, jnp.float32))
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    scale = max(float(np.abs(expected).max()), 1e-6)
    err = float(np.abs(actual - expected).max()) / scale
    assert err <= TOLERANCE[jnp.dtype(dtype)], f"{what}: relative error {err:.3g} (scale {scale:.3g})"


class ElasticKernelTestBase:
    """Subclasses define the ``case`` fixture (a hashable tuple), ``SMALL_CASE`` and the hooks below."""

    SMALL_CASE: Any = None

    IMPL: dict = {"implementation": "pallas", "interpret": True}

    @pytest.fixture(params=["float32", "bfloat16"])
    def dtype(self, request):
        return jnp.dtype(request.param)

    # ---- hooks ----
    def make_inputs(self, case, dtype, key) -> tuple[tuple, dict]:
        """Returns (differentiable arrays, sizes as Python ints)."""
        raise NotImplementedError

    def apply(self, case, arrays, sizes, **impl):
        """The op under test; ``sizes`` values are traced int32 scalars."""
        raise NotImplementedError

    def reference(self, case, arrays, sizes):
        """The oracle, with Python-int sizes."""
        raise NotImplementedError

    def zero_masks(self, case, arrays, sizes) -> tuple:
        """Boolean masks (or None) of where the output and each gradient must be exactly zero."""
        raise NotImplementedError

    # ---- machinery ----
    def _jitted(self, case, impl: dict, kind: str):
        key = (type(self).__name__, case, tuple(sorted(impl.items())), kind)
        if key not in _JIT_CACHE:
            fwd = lambda arrays, sizes: self.apply(case, arrays, sizes, **impl)
            if kind == "fwd":
                fn = fwd
            else:
                fn = lambda arrays, sizes, ct: jax.vjp(lambda *a: fwd(a, sizes), *arrays)[1](ct)
            _JIT_CACHE[key] = jax.jit(fn)
        return _JIT_CACHE[key]

    def _traced_sizes(self, sizes):
        return {k: jnp.asarray(v, jnp.int32) for k, v in sizes.items()}

    def _check(self, case, dtype, impl):
        arrays, sizes = self.make_inputs(case, dtype, jax.random.key(0))
        ts = self._traced_sizes(sizes)
        out = self._jitted(case, impl, "fwd")(arrays, ts)
        ref_arrays = tuple(a.astype(jnp.float32) for a in arrays)
        ref, ref_vjp = jax.vjp(lambda *a: self.reference(case, a, sizes), *ref_arrays)
        assert out.dtype == dtype
        assert_close(out, ref, dtype, "forward")
        ct = jax.random.normal(jax.random.key(1), out.shape, jnp.float32).astype(dtype)
        grads = self._jitted(case, impl, "vjp")(arrays, ts, ct)
        ref_grads = ref_vjp(ct.astype(jnp.float32))
        masks = self.zero_masks(case, arrays, sizes)
        for i, (g, rg, a) in enumerate(zip(grads, ref_grads, arrays)):
            assert g.shape == a.shape and g.dtype == a.dtype, (i, g.shape, g.dtype)
            assert_close(g, rg, dtype, f"gradient {i}")
        for i, (value, mask) in enumerate(zip((out, *grads), masks)):
            if mask is not None:
                assert not np.any(np.asarray(value)[np.asarray(mask)]), f"nonzero outside the active block ({i})"

    # ---- tests ----
    def test_forward_and_gradient(self, case, dtype):
        self._check(case, dtype, self.IMPL)

    def test_scalar_prefetch_variant(self):
        """The TPU hand-over of the sizes (scalar prefetch), run by the interpreter."""
        if not self.IMPL.get("interpret"):
            pytest.skip("the variant is chosen by the platform when compiled")
        self._check(self.SMALL_CASE, jnp.dtype(jnp.float32), {**self.IMPL, "_variant": "prefetch"})

    def test_sizes_change_does_not_recompile(self):
        case = self.SMALL_CASE
        arrays, sizes = self.make_inputs(case, jnp.float32, jax.random.key(0))
        fn = jax.jit(lambda arrays, sizes: self.apply(case, arrays, sizes, **self.IMPL))
        fn(arrays, self._traced_sizes(sizes)).block_until_ready()
        with count_compilations() as compiled:
            for scale in (1.0, 0.5):
                smaller = {k: max(1, int(v * scale)) | 1 for k, v in sizes.items()}  # odd keeps ks valid
                smaller = {k: min(v, sizes[k]) for k, v in smaller.items()}
                fn(arrays, self._traced_sizes(smaller)).block_until_ready()
        assert compiled.n == 0
