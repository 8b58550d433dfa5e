"""The timing protocol, and the ``jax`` runtime: static subnets jitted on the current JAX device.

Protocol: compile the static module's forward (weights as arguments, as a deployed model holds
them), run it ``warmup`` times, then time ``rounds`` passes of ``repeats`` runs with
``block_until_ready``; report the median over every run and the inter-quartile spread. Latency
does not depend on the weights' values.

Several programs are timed interleaved (round 1 of each, round 2 of each, ...). On a shared machine
a neighbour's burst lasts longer than one program's 30 runs (~0.1 s at batch 1), so timing programs
one after another lets the burst land on whichever was being timed; interleaved, each program's
samples spread over the whole measurement and a burst falls on all of them alike. Measured on the
2-core CPU (bench/RESULTS.md): back-to-back medians of the same subnet disagreed by 13% MAPE;
interleaved in 5 rounds of 30 runs, the even and the odd rounds still disagreed by 8-10%. A
subnet's median moves by +-20% from one round to the next (the device's speed, not the subnet), so
many short rounds beat a few long ones: 20 rounds of 10 runs (the CLI's default) bring the halves
to 3.5-5%. Those two medians are kept, so the measurement's own repeatability is reported beside
any model's error. (The speed also moves between processes; :mod:`predictors.latency.measure`'s
reference subnets measure it.)

Many programs are compiled and timed ``CHUNK`` at a time (:func:`time_chunked`), which bounds the
memory that compiled programs hold. Tests replace :func:`time_interleaved` and :data:`CHUNK` on this
module (``monkeypatch.setattr("predictors.latency.timing.time_interleaved", fake)``): every caller
looks them up here when it runs.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from predictors.latency.errors import LatencyError
from predictors.latency.runtime import DEFAULT_RUNTIME, RUNTIMES, get_runtime

#: programs compiled and timed together (interleaved); bounds the memory of compiled subnets held
CHUNK = 25

Progress = Callable[[int], None]


def zeros_like_built(make: Callable[[], nnx.Module]) -> nnx.Module:
    """``make()``'s module with zero weights, built without running its initialisers.

    Latency does not depend on the weights' values, and eager initialisation compiles and runs a
    small kernel per parameter shape: building a full mobilenetv3 subnet that way took 19-58 s on
    the shared 2-core CPU, this way 1.4 s. (Those kernels also stay cached, with their memory
    mappings, for the life of the process.)
    """
    graphdef, state = nnx.split(nnx.eval_shape(make))
    state = jax.tree.map(lambda a: jax.device_put(np.zeros(a.shape, a.dtype)), state)
    return nnx.merge(graphdef, state)


def compile_forward(model: nnx.Module, input_shape: tuple[int, ...]):
    """A compiled forward of ``model`` for inputs of ``input_shape``, and its arguments:
    ``(compiled, state, x)``, the program :func:`time_interleaved` runs."""
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
    calls = [lambda c=c, s=s, x=x: jax.block_until_ready(c(s, x)) for c, s, x in programs]
    return time_calls(calls, repeats=repeats, warmup=warmup, rounds=rounds)


def time_calls(calls: Sequence[Callable[[], object]], *, repeats: int = 30, warmup: int = 3,
               rounds: int = 1) -> list[dict]:
    """:func:`time_interleaved`'s protocol over zero-argument calls that return once their result
    is ready (any runtime's programs)."""
    for call in calls:
        for _ in range(warmup):
            call()
    times = [[[] for _ in range(rounds)] for _ in calls]
    for r in range(rounds):
        for i, call in enumerate(calls):
            for _ in range(repeats):
                start = time.perf_counter()
                call()
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
    """:func:`time_interleaved` of one program."""
    return time_interleaved([(compiled, state, x)], repeats=repeats, warmup=warmup, rounds=rounds)[0]


def measure_dispatch(*, batch: int = 1, repeats: int = 30, warmup: int = 3, rounds: int = 1) -> dict:
    """Median time of calling an almost empty compiled function: the per-executable fixed cost."""
    x = jnp.zeros((batch, 1), jnp.float32)
    compiled = jax.jit(lambda state, x: x + state).lower(jnp.float32(1.0), x).compile()
    return time_compiled(compiled, jnp.float32(1.0), x, repeats=repeats, warmup=warmup, rounds=rounds)


def current_device() -> dict:
    """``{"platform", "kind"}`` of the JAX device programs run on."""
    device = jax.devices()[0]
    return {"platform": device.platform, "kind": device.device_kind}


class XlaRuntime:
    """The :class:`~predictors.latency.runtime.LatencyRuntime` of this module's protocol."""

    def compile(self, model: nnx.Module, input_shape: tuple[int, ...]):
        return compile_forward(model, input_shape)

    def time(self, programs, *, repeats: int, warmup: int, rounds: int) -> list[dict]:
        return time_interleaved(programs, repeats=repeats, warmup=warmup, rounds=rounds)

    def dispatch(self, *, batch: int, repeats: int, warmup: int, rounds: int) -> dict:
        return measure_dispatch(batch=batch, repeats=repeats, warmup=warmup, rounds=rounds)

    def device(self) -> dict:
        return current_device()

    def configure(self, *, threads: int | None = None) -> "XlaRuntime":
        if threads is not None:
            raise LatencyError(f"threads {threads}: the jax runtime takes no thread count (XLA picks its own)")
        return self

    def describe(self) -> dict:
        return {"name": "jax", "version": jax.__version__}


RUNTIMES.register("jax", XlaRuntime())


def compile_subnet(space, arch, batch: int = 1, runtime: str = DEFAULT_RUNTIME):
    """``arch``'s static subnet (zero weights, :func:`zeros_like_built`) compiled for a batch of ``batch``."""
    model = zeros_like_built(lambda: space.static_model(arch, nnx.Rngs(0)))
    return get_runtime(runtime).compile(model, (batch, arch.resolution, arch.resolution, space.in_channels))


def measure_latency(space, arch, *, batch: int = 1, repeats: int = 30, warmup: int = 3, rounds: int = 1,
                    runtime: str = DEFAULT_RUNTIME) -> dict:
    """Median latency (ms) of ``arch``'s static subnet forward at ``batch``, with its spread."""
    program = compile_subnet(space, arch, batch, runtime)
    return get_runtime(runtime).time([program], repeats=repeats, warmup=warmup, rounds=rounds)[0]


def level_of(timed_refs: Sequence[dict]) -> float:
    """A chunk's level: the geometric mean of the reference programs' medians."""
    return float(np.exp(np.mean(np.log([t["latency_ms"] for t in timed_refs]))))


def time_chunked(make_programs: Sequence[Callable], *, repeats: int, warmup: int, rounds: int,
                 progress: Progress | None = None, references: Sequence[Callable] = (),
                 runtime: str = DEFAULT_RUNTIME) -> list[dict]:
    """Compiles :data:`CHUNK` programs at a time (``make()`` of each) and times each chunk interleaved.

    ``references`` (program makers, compiled once) are timed in every round of every chunk; each
    program's result then carries ``level_ms``, its chunk's level (:func:`level_of`). ``progress``
    gets each chunk's size."""
    rt = get_runtime(runtime)
    refs = [make() for make in references]
    out = []
    for start in range(0, len(make_programs), CHUNK):
        programs = [make() for make in make_programs[start:start + CHUNK]]
        timed = rt.time(programs + refs, repeats=repeats, warmup=warmup, rounds=rounds)
        body = timed[:len(timed) - len(refs)]
        # dropped before the next chunk compiles: each compiled XLA CPU program holds its own memory
        # mappings until it is freed, and a process may hold only vm.max_map_count of them
        del programs
        if refs:
            level = level_of(timed[len(body):])
            for t in body:
                t["level_ms"] = level
        out += body
        if progress is not None:
            progress(len(body))
    return out
