"""Measured latency of static subnets on the current device.

Protocol: jit the static subnet's forward (weights as arguments, as a deployed model holds them),
run it ``warmup`` times, then time ``repeats`` runs with ``block_until_ready``; report the median
and the inter-quartile spread. Latency does not depend on the weights' values, so the model is
built with its own initialisation.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def compile_forward(model: nnx.Module, input_shape: tuple[int, ...]):
    """A compiled forward of ``model`` for inputs of ``input_shape``, and its argument."""
    graphdef, state = nnx.split(model)

    def forward(state, x):
        return nnx.merge(graphdef, state)(x)

    x = jnp.zeros(input_shape, jnp.float32)
    compiled = jax.jit(forward).lower(state, x).compile()
    return compiled, state, x


def time_compiled(compiled, state, x, *, repeats: int = 30, warmup: int = 3) -> dict:
    for _ in range(warmup):
        jax.block_until_ready(compiled(state, x))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(state, x))
        times.append((time.perf_counter() - start) * 1000.0)
    q1, median, q3 = np.percentile(times, [25, 50, 75])
    return {"latency_ms": float(median), "iqr_ms": float(q3 - q1), "repeats": repeats}


def measure_latency(space, arch, *, batch: int = 1, repeats: int = 30, warmup: int = 3) -> dict:
    """Median latency (ms) of ``arch``'s static subnet forward at ``batch``, with its spread."""
    model = space.static_model(arch, nnx.Rngs(0))
    shape = (batch, arch.resolution, arch.resolution, space.in_channels)
    compiled, state, x = compile_forward(model, shape)
    return time_compiled(compiled, state, x, repeats=repeats, warmup=warmup)
