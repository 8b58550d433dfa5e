"""Measured latency of static subnets on the current device.

Protocol: jit the static subnet's forward (weights as arguments, as a deployed model holds them),
run it ``warmup`` times, then time ``rounds`` passes of ``repeats`` runs with ``block_until_ready``;
report the median over every run and the inter-quartile spread. Latency does not depend on the
weights' values, so the model is built with its own initialisation.

Several programs are timed interleaved (round 1 of each, round 2 of each, ...). On a shared machine
a neighbour's burst lasts longer than one program's 30 runs (~0.1 s at batch 1), so timing programs
one after another lets the burst land on whichever was being timed; interleaved, each program's
samples spread over the whole measurement and a burst falls on all of them alike. Measured on the
2-core CPU (bench/RESULTS.md): back-to-back medians of the same subnet disagreed by 13% MAPE;
interleaved in 5 rounds of 30 runs, the even and the odd rounds still disagreed by 8-10%. A
subnet's median moves by +-20% from one round to the next (the device's speed, not the subnet), so
many short rounds beat a few long ones: 20 rounds of 10 runs (the CLI's default) bring the halves
to 3.5-5%. Those two medians are kept, so the measurement's own repeatability is reported beside
any model's error. (The speed also moves between processes; predictors.latency's reference
subnets measure it.)
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


def time_interleaved(programs, *, repeats: int = 30, warmup: int = 3, rounds: int = 1) -> list[dict]:
    """Times each ``(compiled, state, x)`` of ``programs`` in ``rounds`` interleaved passes of
    ``repeats`` runs. Per program: ``latency_ms`` (median of all runs), ``iqr_ms``, ``repeats``
    (runs in all), and with two rounds or more ``halves_ms``: the medians of the even and the odd
    rounds, two independent measurements of the same thing."""
    for compiled, state, x in programs:
        for _ in range(warmup):
            jax.block_until_ready(compiled(state, x))
    times = [[[] for _ in range(rounds)] for _ in programs]
    for r in range(rounds):
        for i, (compiled, state, x) in enumerate(programs):
            for _ in range(repeats):
                start = time.perf_counter()
                jax.block_until_ready(compiled(state, x))
                times[i][r].append((time.perf_counter() - start) * 1000.0)
    out = []
    for per_round in times:
        every = np.concatenate(per_round)
        q1, median, q3 = np.percentile(every, [25, 50, 75])
        m = {"latency_ms": float(median), "iqr_ms": float(q3 - q1), "repeats": len(every)}
        if rounds >= 2:
            m["halves_ms"] = [float(np.median(np.concatenate(per_round[h::2]))) for h in (0, 1)]
        out.append(m)
    return out


def time_compiled(compiled, state, x, *, repeats: int = 30, warmup: int = 3, rounds: int = 1) -> dict:
    return time_interleaved([(compiled, state, x)], repeats=repeats, warmup=warmup, rounds=rounds)[0]


def compile_subnet(space, arch, batch: int = 1):
    """``compile_forward`` of ``arch``'s static subnet for a batch of ``batch``."""
    model = space.static_model(arch, nnx.Rngs(0))
    return compile_forward(model, (batch, arch.resolution, arch.resolution, space.in_channels))


def measure_latency(space, arch, *, batch: int = 1, repeats: int = 30, warmup: int = 3, rounds: int = 1) -> dict:
    """Median latency (ms) of ``arch``'s static subnet forward at ``batch``, with its spread."""
    return time_compiled(*compile_subnet(space, arch, batch), repeats=repeats, warmup=warmup, rounds=rounds)
