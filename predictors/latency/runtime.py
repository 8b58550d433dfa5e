"""What a latency runtime is, and the registry that finds one by name.

A runtime turns a static flax.nnx module into a program it can run, and times programs with the
interleaved protocol of :mod:`predictors.latency.timing`. Everything above it (the lookup table,
the learned model, the reference subnets) only holds programs and reads the timing results, so a
new runtime (another compiler, a device reached over a wire) is one module with a class following
:class:`LatencyRuntime` and one ``RUNTIMES.register(name, instance)`` line; ``jax`` (XLA jit on the
current JAX device) is in :mod:`predictors.latency.timing`, ``onnxruntime`` in :mod:`predictors.latency.ort`.
A file made without a recorded runtime (before runtimes were recorded) was measured by ``jax``.
"""

from __future__ import annotations

from typing import Any, Protocol, Sequence

from search_spaces.registry import Registry

#: the runtime every measurement uses unless told otherwise
DEFAULT_RUNTIME = "jax"


class LatencyRuntime(Protocol):
    """Compiles static modules into programs and times them."""

    def compile(self, model: Any, input_shape: tuple[int, ...]) -> Any:
        """A program running ``model`` on an input of ``input_shape`` (batch axis first)."""

    def time(self, programs: Sequence[Any], *, repeats: int, warmup: int, rounds: int) -> list[dict]:
        """Per program, in order: ``latency_ms`` (median of every run), ``iqr_ms``, ``repeats`` (runs in
        all) and, with two rounds or more, ``halves_ms`` (medians of the even and the odd rounds)."""

    def dispatch(self, *, batch: int, repeats: int, warmup: int, rounds: int) -> dict:
        """:meth:`time`'s result for an almost empty program: the fixed cost of one call."""

    def device(self) -> dict:
        """``{"platform", "kind"}`` of the device it times on (recorded in every latency file)."""

    def configure(self, *, threads: int | None = None) -> "LatencyRuntime":
        """The runtime with these settings (``threads``: None keeps its own)."""

    def describe(self) -> dict:
        """``{"name", "version", ...settings}``: what a latency file records of the runtime."""


#: every latency runtime, by name
RUNTIMES: Registry[LatencyRuntime] = Registry("latency runtime")


def get_runtime(name: "str | LatencyRuntime" = DEFAULT_RUNTIME, *, threads: int | None = None) -> LatencyRuntime:
    """The runtime registered as ``name`` (an unknown name lists the known ones), configured with
    ``threads`` when given; a runtime object passes through."""
    rt = RUNTIMES.get(name) if isinstance(name, str) else name
    return rt if threads is None else rt.configure(threads=threads)


def runtime_of(data: dict) -> str:
    """The name of the runtime a latency file was measured with (``jax`` for a file that predates
    the record)."""
    return (data.get("runtime") or {}).get("name", "jax")
