"""Benchmark of the elastic matmul: kernel vs the static-shape XLA floor vs the masked full-size matmul.

Prints one JSON object. For active fractions 1/4, 1/2, 3/4, 1 of k and n it times, forward and backward
(gradient wrt x and W):
  kernel  - kernels.elastic_matmul with run-time k, n (one compilation for all fractions),
  static  - an XLA matmul of the static active shape x[:, :k] @ W[:k, :n] (the floor for that size),
  masked  - the masked full-size XLA matmul (kernels.elastic_matmul_xla).
On CPU the kernel is the XLA implementation unless --interpret is given, in which case the Pallas
interpreter is timed and the JSON says so (interpret timings say nothing about GPU/TPU speed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

# Drop bench/ from the path so that `import kernels` is always the package (this file was once
# bench/kernels.py, which shadowed it for every other bench script).
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import kernels  # noqa: E402
from kernels.tests.compilations import count_compilations  # noqa: E402

FRACTIONS = (0.25, 0.5, 0.75, 1.0)


def _time_ms(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile / warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 4)


def run(m: int, k: int, n: int, dtype: str, repeats: int, implementation: str, interpret: bool) -> dict:
    dt = jnp.dtype(dtype)
    kx, kw, kc = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (m, k), dt)
    w = (jax.random.normal(kw, (k, n)) / k**0.5).astype(dt)
    ct = jax.random.normal(kc, (m, n), dt)

    def kernel_fwd(x, w, ka, na):
        return kernels.elastic_matmul(x, w, k=ka, n=na, implementation=implementation, interpret=interpret)

    def masked_fwd(x, w, ka, na):
        return kernels.elastic_matmul_xla(x, w, k=ka, n=na)

    def bwd(f):
        return lambda x, w, ka, na, ct: jax.grad(
            lambda x, w: jnp.sum((f(x, w, ka, na) * ct).astype(jnp.float32)), argnums=(0, 1)
        )(x, w)

    jitted = {
        "kernel_fwd": jax.jit(kernel_fwd),
        "kernel_bwd": jax.jit(bwd(kernel_fwd)),
        "masked_fwd": jax.jit(masked_fwd),
        "masked_bwd": jax.jit(bwd(masked_fwd)),
    }
    results = []
    # Programs the elastic functions lower after the first fraction: 0 when the sizes are run-time values.
    recompiles = dict.fromkeys(jitted, 0)

    def timed(name, args, first):
        with count_compilations() as compiled:
            ms = _time_ms(jitted[name], args, repeats)
        recompiles[name] += 0 if first else compiled.n
        return ms

    for frac in FRACTIONS:
        ka, na = max(1, round(frac * k)), max(1, round(frac * n))
        sizes = (jnp.int32(ka), jnp.int32(na))
        static_fwd = jax.jit(lambda x, w: x[:, :ka] @ w[:ka, :na])
        static_bwd = jax.jit(
            jax.grad(
                lambda x, w, ct: jnp.sum((x[:, :ka] @ w[:ka, :na] * ct[:, :na]).astype(jnp.float32)), argnums=(0, 1)
            )
        )
        row = {"fraction": frac, "k": ka, "n": na}
        row["kernel_fwd_ms"] = timed("kernel_fwd", (x, w, *sizes), frac == FRACTIONS[0])
        row["static_fwd_ms"] = _time_ms(static_fwd, (x, w), repeats)
        row["masked_fwd_ms"] = timed("masked_fwd", (x, w, *sizes), frac == FRACTIONS[0])
        row["kernel_bwd_ms"] = timed("kernel_bwd", (x, w, *sizes, ct), frac == FRACTIONS[0])
        row["static_bwd_ms"] = _time_ms(static_bwd, (x, w, ct), repeats)
        row["masked_bwd_ms"] = timed("masked_bwd", (x, w, *sizes, ct), frac == FRACTIONS[0])
        results.append(row)
    cfg = kernels._common.resolve_implementation(implementation, interpret)
    return {
        "op": "elastic_matmul",
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "implementation": "xla" if cfg is None else "pallas",
        "interpret": bool(interpret),
        "timings_note": (
            "Pallas interpret mode: correctness run only, not a speed figure" if interpret else "compiled"
        ),
        "m": m,
        "k": k,
        "n": n,
        "dtype": dtype,
        "repeats": repeats,
        "unit": "ms (median)",
        "recompiles_after_first_fraction": recompiles,
        "results": results,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--m", type=int, default=256)
    p.add_argument("--k", type=int, default=512)
    p.add_argument("--n", type=int, default=512)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--implementation", choices=["auto", "xla", "pallas"], default="auto")
    p.add_argument("--interpret", action="store_true", help="time the Pallas kernel in interpret mode (CPU)")
    a = p.parse_args(argv)
    if min(a.m, a.k, a.n, a.repeats) < 1:
        p.error("--m, --k, --n and --repeats must be >= 1")
    try:
        out = run(a.m, a.k, a.n, a.dtype, a.repeats, a.implementation, a.interpret)
    except ValueError as e:
        p.error(str(e))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
