"""Compiled programs with a bounded footprint: how the library jits, and how many programs it keeps.

Measured on the 2-core CPU (bench/RESULTS.md, issue 29): every XLA:CPU executable of a supernet piece
holds about 120 memory mappings (each fused kernel's code, read-only data and data sections are
mapped apart), and a process may hold at most ``vm.max_map_count`` (65,530 by default). A
mobilenetv3 supernet at three resolutions compiles over 500 programs, so a README training command
died inside LLVM ("Unable to allocate section memory") with RAM to spare. Two measures bound it:

- :func:`jit` compiles for the CPU with the legacy fusion emitters and one codegen module per
  program: 7.5x fewer mappings per program (985 against 7,423 for the 43 programs of a mobilenetv3
  w1.0 sandwich's smallest and largest subnets) and 1.8x less compile time, at the same step time
  (smallest 1.06x, largest 0.85x of the default's, one run on a loaded machine). Other backends get
  their defaults.
- :class:`ProgramCache` holds a trainer's or an evaluator's programs, and all of them together are
  kept under :func:`mapping_budget` (half of ``vm.max_map_count``): when a new program would be
  compiled above it, the least recently used programs of every cache are dropped first. Nothing is
  lost but time: a dropped program needed again is read back from the persistent XLA cache
  (``nas_cli.runs.enable_compilation_cache``) or compiled again. A run whose programs fit (every
  README command on this machine) never drops one.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import gc
import itertools
import os
import sys
import weakref
from typing import Any, Callable, Hashable

import jax

#: XLA:CPU options of every program the library compiles (see the module docstring).
CPU_COMPILE_OPTIONS = {"xla_cpu_use_fusion_emitters": False, "xla_cpu_parallel_codegen_split_count": 1}

#: without /proc (not Linux): at most this many programs over all caches
FALLBACK_PROGRAM_LIMIT = 1000


@functools.cache
def compile_options() -> dict:
    """The compiler options for this process's default backend: :data:`CPU_COMPILE_OPTIONS` on a CPU
    whose XLA knows them (checked once with a trivial program), else none."""
    if jax.default_backend() != "cpu" or os.environ.get("NAS_XLA_DEFAULT_OPTIONS"):
        return {}
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILE_OPTIONS).lower(1.0).compile()
    except Exception:  # an XLA without these options: its defaults  # noqa: BLE001
        return {}
    return dict(CPU_COMPILE_OPTIONS)


class jit:  # noqa: N801 -- used like jax.jit
    """``jax.jit(fn, **kwargs)`` compiled with :func:`compile_options`, decided at the first call
    (deciding at definition time would start JAX's backend at import, before a multi-process run
    could initialise it). Called inside another transformation (``jax.eval_shape``, an outer jit),
    where JAX refuses compiler options on a nested jit, it is a plain ``jax.jit``: the outer program
    is what gets compiled."""

    __slots__ = ("_fn", "_kwargs", "_jitted", "_nested", "_ahead", "__weakref__")

    def __init__(self, fn: Callable, **kwargs):
        self._fn, self._kwargs, self._jitted, self._nested = fn, kwargs, None, None
        # executables compiled ahead of their first call (:meth:`ahead`), by argument signature:
        # None while compiling, False where one refused its arguments (the jit takes over)
        self._ahead: dict | None = None

    def _top(self):
        if self._jitted is None:
            self._jitted = jax.jit(self._fn, compiler_options=compile_options() or None, **self._kwargs)
        return self._jitted

    def _inner(self):
        if self._nested is None:
            self._nested = jax.jit(self._fn, **self._kwargs)
        return self._nested

    def _signature(self, args) -> tuple[Hashable, tuple]:
        """(a key of the static arguments and the others' pytree, shapes and dtypes; the others)."""
        static = self._kwargs.get("static_argnums", ())
        static = (static,) if isinstance(static, int) else tuple(static)
        dynamic = tuple(a for n, a in enumerate(args) if n not in static)
        leaves, tree = jax.tree.flatten(dynamic)
        key = (tuple(args[n] for n in static), tree, tuple((tuple(x.shape), str(x.dtype)) for x in leaves))
        return key, dynamic

    def ahead(self, *args) -> "tuple[Any, Callable] | None":
        """This function lowered for ``args`` (arrays or ``jax.ShapeDtypeStruct`` s, positional), to be
        compiled off the calling thread: (lowered, install), where ``install(lowered.compile())``
        makes later calls with such arguments run that executable. None when one was already
        compiled or is being compiled for them. (``jax.jit`` compiles again at its first call
        after an ahead-of-time ``lower().compile()``: its call cache is its own.)"""
        if self._ahead is None:
            self._ahead = {}
        key, _ = self._signature(args)
        if key in self._ahead:
            return None
        self._ahead[key] = None
        return self.lower(*args), functools.partial(self._ahead.__setitem__, key)

    def __call__(self, *args, **kwargs):
        if self._ahead and not kwargs:
            key, dynamic = self._signature(args)
            compiled = self._ahead.get(key)
            if compiled:
                try:
                    return compiled(*dynamic)
                except (TypeError, ValueError):  # shaped or placed unlike what it was compiled for: the jit then
                    self._ahead[key] = False
        jitted = self._jitted if self._jitted is not None else self._top()
        try:
            return jitted(*args, **kwargs)
        except ValueError as e:
            if "compiler_options" not in str(e):
                raise
        return self._inner()(*args, **kwargs)

    def lower(self, *args, **kwargs):
        return self._top().lower(*args, **kwargs)


def memory_mappings() -> int | None:
    """This process's memory mappings now (lines of /proc/self/maps), or None where there is none."""
    try:
        with open("/proc/self/maps", "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return None


@functools.cache
def max_memory_mappings() -> int | None:
    """The kernel's per-process limit (``vm.max_map_count``), or None where it is not readable."""
    try:
        with open("/proc/sys/vm/max_map_count", encoding="ascii") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def mapping_budget() -> int | None:
    """The mappings the library's programs may take the process to: half of ``vm.max_map_count``
    (``NAS_MAX_MAPPINGS`` overrides it), leaving the rest to everything else a process maps."""
    if os.environ.get("NAS_MAX_MAPPINGS"):
        return int(os.environ["NAS_MAX_MAPPINGS"])
    limit = max_memory_mappings()
    return None if limit is None else limit // 2


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (another C library, not Linux)."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Hands the C heap's free pages back to the kernel (glibc ``malloc_trim(0)``; nothing elsewhere).

    XLA's compiler frees what it allocated while compiling, but glibc keeps the freed pages in its
    heaps (one per compiling thread), where they count in the resident set until reused. Called
    after a batch of compilations (bench/RESULTS.md, issue 29)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


_tick = itertools.count()
_caches: "weakref.WeakSet[ProgramCache]" = weakref.WeakSet()
_stats = {"compiled": 0, "dropped": 0}
_warned: list[str] = []


def program_stats() -> dict:
    """Programs made and dropped over every cache of this process, and the mappings now."""
    return {**_stats, "kept": sum(len(c) for c in list(_caches)), "memory_mappings": memory_mappings(),
            "mapping_budget": mapping_budget()}


def drop_all() -> None:
    """Drops every program of every cache (what a bench measures them holding)."""
    for cache in list(_caches):
        cache.clear()
    gc.collect()


def _oldest_cache() -> "ProgramCache | None":
    live = [c for c in list(_caches) if len(c)]
    return min(live, key=lambda c: c.oldest_tick(), default=None)


def _make_room() -> None:
    """Drops the least recently used programs of every cache while the process is over budget."""
    budget = mapping_budget()
    if budget is None:
        while sum(len(c) for c in list(_caches)) >= FALLBACK_PROGRAM_LIMIT:
            cache = _oldest_cache()
            if cache is None:
                return
            cache.drop_oldest()
        return
    now = memory_mappings()
    if now is None or now < budget:
        return
    if not _warned:
        _warned.append("yes")
        print(f"warning: compiled programs hold {now} memory mappings, over nas's budget of {budget} "
              f"(half of vm.max_map_count); the least recently used are dropped and read back from the XLA "
              f"cache when needed again (slower); fewer resolutions (--resolutions) or a smaller space avoid it",
              file=sys.stderr)
    # drop a tenth of what is kept at a time: reading /proc/self/maps once per dropped program
    # would cost more than the programs
    while now is not None and now >= budget:
        kept = sum(len(c) for c in list(_caches))
        if kept == 0:
            return
        for _ in range(max(1, kept // 10)):
            cache = _oldest_cache()
            if cache is None:
                break
            cache.drop_oldest()
        gc.collect()
        now = memory_mappings()


class ProgramCache:
    """Programs by key (a jitted function each, made by ``make()`` on first use), in least recently
    used order. Before a new program is made, :func:`_make_room` drops the least recently used
    programs of all caches while the process is over :func:`mapping_budget`."""

    def __init__(self):
        self._programs: collections.OrderedDict[Hashable, list] = collections.OrderedDict()
        _caches.add(self)

    def __len__(self) -> int:
        return len(self._programs)

    def get(self, key: Hashable, make: Callable[[], Callable]) -> Callable:
        entry = self._programs.get(key)
        if entry is None:
            _make_room()
            entry = self._programs[key] = [make(), next(_tick)]
            _stats["compiled"] += 1
        else:
            self._programs.move_to_end(key)
            entry[1] = next(_tick)
        return entry[0]

    def programs(self) -> dict:
        """The programs kept, by key (a copy; benches wrap them with :meth:`replace` to time them)."""
        return {key: entry[0] for key, entry in self._programs.items()}

    def replace(self, key: Hashable, fn: Callable) -> None:
        """Puts ``fn`` in place of the kept program ``key`` (its place in the use order unchanged)."""
        self._programs[key][0] = fn

    def oldest_tick(self) -> int:
        return next(iter(self._programs.values()))[1]

    def drop_oldest(self) -> None:
        self._programs.popitem(last=False)
        _stats["dropped"] += 1

    def clear(self) -> None:
        self._programs.clear()
