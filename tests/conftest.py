"""Test-session set-up: the persistent XLA cache, so programs compiled once (the same supernet pieces
in several trainings) are not compiled again within or across test runs; and the in-memory programs
freed after each test module.

Every compiled XLA CPU program keeps its own memory mappings until it is dropped (a tiny training adds
about 2,000), and a process may hold at most ``vm.max_map_count`` (65,530 here): a whole suite in one
process crossed it and aborted inside XLA (mmap failing in ``compilation_cache.put_executable_and_time``
and ``get_executable_and_time``). Clearing JAX's caches at each module's end gives the mappings back
(measured: 15,605 after three trainings, 1,509 with the caches cleared after each); a later module
that needs a program again reads it from the persistent cache.
"""

import gc

import jax
import pytest

from nas_cli.runs import enable_compilation_cache

enable_compilation_cache()


@pytest.fixture(autouse=True, scope="module")
def _free_compiled_programs():
    yield
    jax.clear_caches()
    gc.collect()
