"""Benchmark of the elastic kernels: kernel vs the static-shape XLA floor vs the masked full-size XLA path.

Prints one JSON object for one op (``--op``): the elastic matmul x @ W[:k, :n], the fused elastic MLP
act(x @ W1[:, :h] + b1[:h]) @ W2[:h] + b2, or the elastic depthwise conv (active channels c). For active
fractions 1/4, 1/2, 3/4, 1 of the elastic sizes it times, forward and backward (gradient wrt x and the weights):
  kernel  - the elastic op (kernels.elastic_matmul / elastic_mlp / elastic_dwconv) with run-time sizes
            (one compilation for all fractions); --implementation pallas on a GPU is the Pallas kernel,
  static  - XLA on the static active shape (the floor for that size),
  masked  - the masked full-size XLA path (kernels.elastic_*_xla).
kernel_over_masked_* is therefore Pallas / XLA when the kernel is Pallas. On CPU the kernel is the XLA
implementation unless --interpret is given, in which case the Pallas interpreter is timed and the JSON
says so (interpret timings say nothing about GPU/TPU speed).
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
OPS = ("matmul", "mlp", "dwconv")


def _time_ms(fn, args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))  # compile / warm up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 4)


def _problem(op: str, m: int, k: int, n: int, dt, side: int, kmax: int, stride: int, activation: str):
    """(operands, cotangent, elastic sizes per fraction, kernel(impl, interpret), masked, static(sizes))."""
    keys = jax.random.split(jax.random.key(0), 6)
    if op == "matmul":
        x = jax.random.normal(keys[0], (m, k), dt)
        w = (jax.random.normal(keys[1], (k, n)) / k**0.5).astype(dt)
        ct = jax.random.normal(keys[2], (m, n), dt)

        def sizes(frac):
            return {"k": max(1, round(frac * k)), "n": max(1, round(frac * n))}

        def kernel(implementation, interpret):
            return lambda x, w, ka, na: kernels.elastic_matmul(x, w, k=ka, n=na, implementation=implementation,
                                                               interpret=interpret)

        def masked(x, w, ka, na):
            return kernels.elastic_matmul_xla(x, w, k=ka, n=na)

        def static(sz):
            ka, na = sz["k"], sz["n"]
            # the cotangent is sliced to the static output inside the loss (see _loss)
            return lambda x, w: x[:, :ka] @ w[:ka, :na]

        return (x, w), ct, sizes, kernel, masked, static
    if op == "mlp":
        # x (M, D=k), hidden width Hmax = n, the active hidden width h = fraction * n
        x = jax.random.normal(keys[0], (m, k), dt)
        w1 = (jax.random.normal(keys[1], (k, n)) / k**0.5).astype(dt)
        b1 = (0.1 * jax.random.normal(keys[2], (n,))).astype(dt)
        w2 = (jax.random.normal(keys[3], (n, k)) / n**0.5).astype(dt)
        b2 = (0.1 * jax.random.normal(keys[4], (k,))).astype(dt)
        ct = jax.random.normal(keys[5], (m, k), dt)

        def sizes(frac):
            return {"h": max(1, round(frac * n))}

        def kernel(implementation, interpret):
            return lambda x, w1, b1, w2, b2, h: kernels.elastic_mlp(
                x, w1, b1, w2, b2, h=h, activation=activation, implementation=implementation, interpret=interpret)

        def masked(x, w1, b1, w2, b2, h):
            return kernels.elastic_mlp_xla(x, w1, b1, w2, b2, h=h, activation=activation)

        def static(sz):
            return lambda x, w1, b1, w2, b2: kernels.elastic_mlp_reference(x, w1, b1, w2, b2, h=sz["h"],
                                                                           activation=activation)

        return (x, w1, b1, w2, b2), ct, sizes, kernel, masked, static
    if op == "dwconv":
        # x (B=m, side, side, C=n), kernel (kmax, kmax, C); the active channels c = fraction * n, full kernel
        x = jax.random.normal(keys[0], (m, side, side, n), dt)
        w = (jax.random.normal(keys[1], (kmax, kmax, n)) / kmax).astype(dt)
        so = -(-side // stride)
        ct = jax.random.normal(keys[2], (m, so, so, n), dt)

        def sizes(frac):
            return {"c": max(1, round(frac * n)), "ks": kmax}

        def kernel(implementation, interpret):
            return lambda x, w, c, ks: kernels.elastic_dwconv(x, w, c=c, ks=ks, stride=stride,
                                                              implementation=implementation, interpret=interpret)

        def masked(x, w, c, ks):
            return kernels.elastic_dwconv_xla(x, w, c=c, ks=ks, stride=stride)

        def static(sz):
            return lambda x, w: kernels.elastic_dwconv_reference(x, w, c=sz["c"], ks=sz["ks"], stride=stride)

        return (x, w), ct, sizes, kernel, masked, static
    raise ValueError(f"op={op!r}; expected one of {OPS}")


def _loss(f, ct):
    """sum(f(...) * ct) in f32, the cotangent cropped to f's output (the static matmul's is smaller)."""
    def loss(*args):
        y = f(*args)
        c = ct[tuple(slice(0, s) for s in y.shape)]
        return jnp.sum((y * c).astype(jnp.float32))
    return loss


def run(m: int, k: int, n: int, dtype: str, repeats: int, implementation: str, interpret: bool, op: str = "matmul",
        side: int = 16, kmax: int = 7, stride: int = 1, activation: str = "relu") -> dict:
    dt = jnp.dtype(dtype)
    operands, ct, sizes_of, kernel_of, masked_fwd, static_of = _problem(op, m, k, n, dt, side, kmax, stride,
                                                                        activation)
    nops = len(operands)
    argnums = tuple(range(nops))  # the gradient wrt every operand (x and the weights)
    kernel_fwd = kernel_of(implementation, interpret)

    def bwd(f):
        # f(*operands, *sizes): differentiate wrt the operands, the sizes are run-time int32 values
        return lambda *a: jax.grad(lambda *ops: _loss(f, ct)(*ops, *a[nops:]), argnums=argnums)(*a[:nops])

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
        sz = sizes_of(frac)
        run_sizes = tuple(jnp.int32(v) for v in sz.values())
        static = static_of(sz)
        static_fwd = jax.jit(static)
        static_bwd = jax.jit(jax.grad(_loss(static, ct), argnums=argnums))
        first = frac == FRACTIONS[0]
        row = {"fraction": frac, **sz}
        row["kernel_fwd_ms"] = timed("kernel_fwd", (*operands, *run_sizes), first)
        row["static_fwd_ms"] = _time_ms(static_fwd, operands, repeats)
        row["masked_fwd_ms"] = timed("masked_fwd", (*operands, *run_sizes), first)
        row["kernel_bwd_ms"] = timed("kernel_bwd", (*operands, *run_sizes), first)
        row["static_bwd_ms"] = _time_ms(static_bwd, operands, repeats)
        row["masked_bwd_ms"] = timed("masked_bwd", (*operands, *run_sizes), first)
        # kernel / masked: Pallas against the masked XLA path when the kernel is Pallas (below 1: Pallas faster)
        row["kernel_over_masked_fwd"] = round(row["kernel_fwd_ms"] / max(row["masked_fwd_ms"], 1e-9), 3)
        row["kernel_over_masked_bwd"] = round(row["kernel_bwd_ms"] / max(row["masked_bwd_ms"], 1e-9), 3)
        results.append(row)
    cfg = kernels._common.resolve_implementation(implementation, interpret)
    shape = {"matmul": {"m": m, "k": k, "n": n}, "mlp": {"m": m, "d": k, "hmax": n, "activation": activation},
             "dwconv": {"batch": m, "side": side, "channels": n, "kmax": kmax, "stride": stride}}[op]
    return {
        "op": f"elastic_{op}",
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "jax": jax.__version__,
        "implementation": "xla" if cfg is None else "pallas",
        "interpret": bool(interpret),
        "timings_note": (
            "Pallas interpret mode: correctness run only, not a speed figure" if interpret else "compiled"
        ),
        **shape,
        "dtype": dtype,
        "repeats": repeats,
        "unit": "ms (median)",
        "recompiles_after_first_fraction": recompiles,
        "results": results,
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--op", choices=OPS, default="matmul",
                   help="matmul: x (m, k) @ W (k, n), k and n elastic; mlp: x (m, k), hidden width n elastic; "
                        "dwconv: x (m, side, side, n), channels n elastic, kernel --kmax")
    p.add_argument("--m", type=int, default=256, help="rows (matmul, mlp) or batch (dwconv)")
    p.add_argument("--k", type=int, default=512, help="matmul: inner size; mlp: the model width D")
    p.add_argument("--n", type=int, default=512, help="matmul: output size; mlp: hidden width; dwconv: channels")
    p.add_argument("--side", type=int, default=16, help="dwconv: image side")
    p.add_argument("--kmax", type=int, default=7, help="dwconv: the largest (odd) kernel size")
    p.add_argument("--stride", type=int, choices=[1, 2], default=1, help="dwconv: stride")
    p.add_argument("--activation", choices=list(kernels.ACTIVATIONS), default="relu", help="mlp: activation")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--implementation", choices=["auto", "xla", "pallas"], default="auto")
    p.add_argument("--interpret", action="store_true", help="time the Pallas kernel in interpret mode (CPU)")
    a = p.parse_args(argv)
    if min(a.m, a.k, a.n, a.repeats, a.side) < 1:
        p.error("--m, --k, --n, --side and --repeats must be >= 1")
    if a.kmax < 1 or a.kmax % 2 == 0:
        p.error(f"--kmax {a.kmax} must be odd and >= 1")
    try:
        out = run(a.m, a.k, a.n, a.dtype, a.repeats, a.implementation, a.interpret, a.op, a.side, a.kmax, a.stride,
                  a.activation)
    except ValueError as e:
        p.error(str(e))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
