"""Counting XLA compilations in tests through JAX's public monitoring hooks (no private jit API)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import jax

# Recorded once per program lowered to MLIR, i.e. once per jit cache miss, whether or not the
# persistent compilation cache then serves the executable.
LOWERING_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"


class Count:
    """How many programs were lowered inside a :func:`count_compilations` block."""

    def __init__(self):
        self.n = 0


@contextlib.contextmanager
def count_compilations() -> Iterator[Count]:
    """``with count_compilations() as c: ...``, then ``c.n`` is the number of new programs."""
    count = Count()

    def listener(event: str, duration: float, **kwargs) -> None:
        if event == LOWERING_EVENT:
            count.n += 1

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        yield count
    finally:
        jax.monitoring.unregister_event_duration_listener(listener)
