"""Shared plumbing for the elastic kernels: dispatch, block sizes, padding and the pallas_call wrapper.

Every kernel reads its run-time sizes (active k, n, h, c, ks, ...) from a small int32 vector ``sizes``
that is the kernel's first ref. Two ways to hand it over, with the same kernel body:

* ``"prefetch"``: ``PrefetchScalarGridSpec(num_scalar_prefetch=1)``; the vector lands in scalar memory
  (SMEM on TPU) and index maps may read it. Used on TPU.
* ``"operand"``: an ordinary input whose block is the whole vector. Used on GPU, because the Triton
  backend does not implement scalar prefetch ("scalar prefetch not implemented in the Triton backend").

Grids are always fixed-size (the static maxima): neither GPU backend lowers a traced grid size, so inactive
tiles are skipped inside the kernel with ``pl.when``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

IMPLEMENTATIONS = ("xla", "pallas", "auto")


@dataclasses.dataclass(frozen=True)
class PallasConfig:
    """Static choices for one pallas_call (hashable, so it can be a custom_vjp nondiff argument).

    Attributes:
      interpret: run the kernel with the Pallas interpreter (the only way on CPU).
      variant: "operand" (sizes as an ordinary input) or "prefetch" (scalar prefetch).
      platform: "gpu", "tpu" or "cpu"; picks compiler parameters (Triton on GPU).
    """

    interpret: bool
    variant: str
    platform: str
    block_cap: int = 128


def resolve_implementation(
    implementation: str, interpret: bool, variant: str | None = None, platform: str | None = None, block_cap: int = 128
) -> PallasConfig | None:
    """Turns the public ``implementation``/``interpret`` pair into a config; ``None`` means the XLA path.

    Raises:
      ValueError: on an unknown implementation, on ``implementation="pallas"`` without ``interpret=True`` on a
        backend Pallas cannot compile for, and on ``interpret=True`` with ``implementation="xla"``.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation={implementation!r}; expected one of {IMPLEMENTATIONS}")
    platform = platform or jax.default_backend()
    if implementation == "auto":
        # interpret=True is an explicit request for the Pallas kernel; otherwise pallas only where it compiles.
        implementation = "pallas" if (platform in ("gpu", "tpu") or interpret) else "xla"
    if implementation == "xla":
        if interpret:
            raise ValueError("interpret=True only applies to implementation='pallas' (got implementation='xla')")
        return None
    if not interpret and platform not in ("gpu", "tpu"):
        raise ValueError(
            f"implementation='pallas' needs a GPU or TPU backend, but the current backend is {platform!r}; "
            "pass interpret=True to run the Pallas kernel in interpret mode, or use implementation='xla'."
        )
    if variant is None:
        variant = "prefetch" if (platform == "tpu" and not interpret) else "operand"
    if variant not in ("operand", "prefetch"):
        raise ValueError(f"variant={variant!r}; expected 'operand' or 'prefetch'")
    return PallasConfig(interpret=bool(interpret), variant=variant, platform=platform, block_cap=block_cap)


def block_size(dim: int, cap: int = 128, floor: int = 16) -> int:
    """A power-of-two block for a dimension: the whole (padded) dim when small, else ``cap``.

    Powers of two satisfy Triton; "equals the whole padded dim, or 128" satisfies TPU's (8, 128) rule.
    ``floor`` = 16 is the smallest operand ``tl.dot`` accepts.
    """
    p = max(floor, 1 << max(dim - 1, 0).bit_length())
    return min(cap, p)


def round_up(dim: int, block: int) -> int:
    return -(-dim // block) * block


def next_pow2(dim: int) -> int:
    return 1 << max(dim - 1, 0).bit_length()


def pad_to(x: jax.Array, shape: Sequence[int]) -> jax.Array:
    """Zero-pads ``x`` at the high end of each axis up to ``shape`` (no-op where equal)."""
    pads = [(0, t - s) for s, t in zip(x.shape, shape)]
    if all(p == (0, 0) for p in pads):
        return x
    return jnp.pad(x, pads)


def sizes_vector(*sizes: Any) -> jax.Array:
    """Packs run-time sizes (Python ints or traced int scalars) into an int32 vector of power-of-two length."""
    vals = [jnp.asarray(s, jnp.int32).reshape(()) for s in sizes]
    vals += [jnp.zeros((), jnp.int32)] * (next_pow2(len(vals)) - len(vals))
    return jnp.stack(vals)


def call(
    kernel: Callable,
    *,
    cfg: PallasConfig,
    grid: tuple[int, ...],
    in_specs: list,
    out_specs: Any,
    out_shape: Any,
    sizes: jax.Array,
    operands: Sequence[jax.Array],
    name: str,
) -> Any:
    """``pallas_call`` with the run-time ``sizes`` vector as the kernel's first ref.

    Index maps must accept trailing extra arguments (``lambda i, j, *_: ...``): under "prefetch" Pallas passes
    the sizes ref to them as well.
    """
    compiler_params = None
    if cfg.platform == "gpu" and not cfg.interpret:
        from jax.experimental.pallas import triton as pltriton  # Triton lowers fixed-grid kernels here.

        compiler_params = pltriton.CompilerParams(num_warps=4, num_stages=2)
    if cfg.variant == "prefetch":
        from jax.experimental.pallas import tpu as pltpu

        grid_spec = pltpu.PrefetchScalarGridSpec(
            num_scalar_prefetch=1, grid=grid, in_specs=in_specs, out_specs=out_specs
        )
        fn = pl.pallas_call(
            kernel,
            out_shape=out_shape,
            grid_spec=grid_spec,
            interpret=cfg.interpret,
            compiler_params=compiler_params,
            name=name,
        )
    else:
        sizes_spec = pl.BlockSpec(sizes.shape, lambda *_: (0,))
        fn = pl.pallas_call(
            kernel,
            out_shape=out_shape,
            grid=grid,
            in_specs=[sizes_spec, *in_specs],
            out_specs=out_specs,
            interpret=cfg.interpret,
            compiler_params=compiler_params,
            name=name,
        )
    return fn(sizes, *operands)


def iota_lt(start: Any, length: int, limit: Any) -> jax.Array:
    """Boolean (length,) vector: ``start + arange(length) < limit`` (1-D iota; Triton lowers 1-D ranges)."""
    return (start + jnp.arange(length, dtype=jnp.int32)) < limit
