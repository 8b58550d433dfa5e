"""Benchmark of data-parallel supernet training: step time and images/s on 1, 2, 4, ... devices.

Prints one JSON object. One process with ``--devices`` fake CPU devices
(``--xla_force_host_platform_device_count``, set here before JAX starts): the same sandwich step
(largest teaches smallest, the composed trainer `nas train-supernet` uses) at the same global batch
on meshes of 1, 2, 4, ... of them, interleaved in each repeat so machine noise hits every count.
Fake CPU devices share the same cores, so no speed-up is possible: what this shows is the cost of
data parallelism itself (the collectives GSPMD inserts, per-device dispatch), reported as
``overhead_ratio`` = step(max devices) / step(1 device), target <= 1.15. On real accelerators the
same script measures the speed-up.

``--also SPACE:BATCH`` (repeatable) times more workloads in the same run, interleaved with the
first (e.g. a larger global batch: more work per device for the same collectives), each with its
own ratio under ``workloads``. ``breakdown`` says where a step's time goes on 1 and on the most
devices: each program kind (piece forwards, piece backwards, heads, the optimiser update, and
``other``: the step's zero gradient, teacher softmax and mean loss) timed
call by call (each call waited for, so the kinds add up to more than an overlapped step), and the
cross-device reductions each kind's compiled programs hold; ``micro`` prices one program launch
and one all-reduce on those devices, so ``explained_ms`` = launches x launch cost + reductions x
all-reduce cost can be set against the measured extra time per step.

``--bn fused|plain|both`` picks the training-mode BatchNorm: ``fused`` is the library's
(``search_spaces.layers.batch_norm``: one cross-device reduction forward, one backward), ``plain``
the textbook formula (``batch_norm_reference``: two dependent reductions forward, autodiff
backward), swapped in for the calls of that workload only; ``both`` times every workload with each,
interleaved in the same repeats (an A/B in one process), and names each entry's ``bn``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import statistics
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

_COLLECTIVE = re.compile(r" (all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)(?:-start)?\(")


def _workload(spec: str) -> tuple[str, int]:
    space, _, batch = spec.rpartition(":")
    if not space or not batch.isdigit():
        raise SystemExit(f"--also {spec!r} is not SPACE:BATCH, e.g. resnet-tiny:256")
    return space, int(batch)


def _collectives(fn, args) -> int:
    """Cross-device collectives in the compiled program ``fn`` runs for ``args`` (already compiled
    by the call: lowering again hits JAX's cache)."""
    return len(_COLLECTIVE.findall(fn.lower(*args).compile().as_text()))


@contextlib.contextmanager
def _bn_impl(name: str):
    """Every loaded search-space module calls ``name``'s BatchNorm inside the block (its jitted
    programs trace under it: each workload has its own trainer, so its own compiled programs)."""
    from search_spaces import layers

    if name == "fused":
        yield
        return
    fused = layers.batch_norm
    # the spaces' modules that imported it by name (not layers itself: it keeps the original)
    modules = [m for k, m in list(sys.modules.items())
               if k.startswith("search_spaces.") and m is not layers and getattr(m, "batch_norm", None) is fused]
    for m in modules:
        m.batch_norm = layers.batch_norm_reference
    try:
        yield
    finally:
        for m in modules:
            m.batch_norm = fused


def _micro(counts: list[int], repeats: int = 300) -> dict:
    """The median cost of launching a trivial program and of one all-reduce (a chain of 16 batch
    means, each a global mean under the mesh) on each device count, in microseconds."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from nas_cli import distributed as dist

    def chain(x):
        for _ in range(16):
            x = x - 0.5 * jnp.mean(x, axis=0)
        return x

    def timed(f, x):
        jax.block_until_ready(f(x))
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(f(x))
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts) * 1e6

    out = {}
    for n in counts:
        (x,) = dist.shard_batch(dist.make_mesh(n), (np.ones((64, 32), np.float32),))
        launch, reduce16 = timed(jax.jit(lambda x: x * 2), x), timed(jax.jit(chain), x)
        out[str(n)] = {"launch_us": round(launch, 1), "all_reduce_us": round((reduce16 - launch) / 16, 1)}
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mobilenetv3-tiny")
    ap.add_argument("--batch", type=int, default=64, help="global batch (split over the devices)")
    ap.add_argument("--also", action="append", default=[], metavar="SPACE:BATCH",
                    help="another workload timed in the same run (repeatable)")
    ap.add_argument("--devices", type=int, default=4, help="the largest device count; 1, 2, 4, ... up to it")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--bn", choices=("fused", "plain", "both"), default="fused",
                    help="training-mode BatchNorm: the library's fused one, the textbook one, or an A/B of both")
    ap.add_argument("--breakdown-steps", type=int, default=3, help="steps timed call by call (0: none)")
    args = ap.parse_args(argv)
    bns = ["fused", "plain"] if args.bn == "both" else [args.bn]
    workloads = [(space, batch, bn) for space, batch in [(args.space, args.batch)] + [_workload(w) for w in args.also]
                 for bn in bns]
    if "jax" not in sys.modules:  # fake CPU devices must be asked for before JAX starts
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.devices}").strip()
    import jax

    from nas_cli import distributed as dist
    from nas_cli import runs
    from nas_cli.training import supernet as train_module
    from nas_cli.config import TrainConfig
    from nas_cli.training.supernet import TrainState, make_optimizer, train_step

    counts = [n for n in (1, 2, 4, 8, 16, 32) if n <= args.devices]
    setups, archs = {}, {}
    for w, (space_name, batch, _) in enumerate(workloads):
        cfg = TrainConfig(space=space_name, batch_size=batch)
        ds = runs.load_run_dataset(cfg)
        space = runs.make_space(cfg, ds)
        archs[w] = [space.largest(), space.smallest()]
        for n in counts:
            mesh = dist.make_mesh(n)
            dist.check_batch(batch, mesh)
            state = TrainState.create(dist.replicate(space.init_supernet(jax.random.key(0)), mesh),
                                      make_optimizer(cfg, 100))
            setups[w, n] = [state, space.make_trainer(ds.mean, ds.std, 0.1, "xla"),
                            dist.shard_batch(mesh, (ds.train.images[:batch], ds.train.labels[:batch]))]

    def step(key):
        state, net, batch = setups[key]
        with _bn_impl(workloads[key[0]][2]):
            t0 = time.perf_counter()
            state, metrics = train_step(state, net, archs[key[0]], batch)
            jax.block_until_ready((state.params, metrics["loss"]))
        setups[key][0] = state
        return (time.perf_counter() - t0) * 1e3

    keys = list(setups)
    t0 = time.perf_counter()
    for _ in range(args.warmup):
        for key in keys:
            step(key)
    warmup_s = time.perf_counter() - t0
    times = {key: [] for key in keys}
    for r in range(args.repeats):
        for key in (keys if r % 2 == 0 else keys[::-1]):  # alternate the order within a repeat
            times[key].append(step(key))

    def breakdown(key) -> dict:
        """Per program kind: ms per step (each call waited for), calls and collectives per step."""
        net = setups[key][1]
        spent: dict[str, list[float]] = {}
        held: dict[str, int] = {}  # collectives run, per kind
        programs: dict[tuple, int] = {}  # collectives of each program

        def wrap(kind, name, fn):
            def call(*a):
                t0 = time.perf_counter()
                out = jax.block_until_ready(fn(*a))
                spent.setdefault(kind, []).append((time.perf_counter() - t0) * 1e3)
                if (kind, name) not in programs:  # zero_grads is a function around its program: none
                    jitted = getattr(fn, "jitted", fn)  # an engine Program holds its jitted function
                    programs[kind, name] = _collectives(jitted, a) if hasattr(jitted, "lower") else 0
                held[kind] = held.get(kind, 0) + programs[kind, name]
                return out
            return call

        # the engine's ProgramCache: keys ("piece" | "head", piece key, shapes...); a piece's entry is
        # its (forward, backward) pair of programs, a head's one program
        cache = net._programs
        kept = cache.programs()
        # the step's own programs: the optimiser update, and the zero gradient, teacher softmax and mean loss
        own = {"_update": "update", "zero_grads": "other", "_softmax": "other", "_mean": "other"}
        saved = {name: getattr(train_module, name) for name in own}
        for k, fn in kept.items():
            if k[0] == "piece":
                cache.replace(k, (wrap("forward", k[1:], fn[0]), wrap("backward", k[1:], fn[1])))
            else:
                cache.replace(k, wrap("head", k[1:], fn))
        for name, kind in own.items():
            setattr(train_module, name, wrap(kind, name, saved[name]))
        try:
            steps = [step(key) for _ in range(args.breakdown_steps)]
        finally:
            for k, fn in kept.items():
                cache.replace(k, fn)
            for name, fn in saved.items():
                setattr(train_module, name, fn)
        s = args.breakdown_steps
        kinds = {kind: {"ms_per_step": round(sum(v) / s, 2), "calls_per_step": len(v) // s,
                        "collectives_per_step": held[kind] // s} for kind, v in spent.items()}
        return {"step_ms_waited": round(statistics.median(steps), 2), "kinds": kinds}

    micro = _micro([1, counts[-1]]) if args.breakdown_steps else None
    summary = []
    for w, (space_name, batch, bn) in enumerate(workloads):
        results = {}
        for n in counts:
            ms = statistics.median(times[w, n])
            results[str(n)] = {"step_ms": round(ms, 3), "images_per_s": round(batch / ms * 1e3, 1),
                               "per_device_batch": batch // n, "step_ms_min": round(min(times[w, n]), 3)}
        top = str(counts[-1])
        # the fastest step of each count too: on a machine loaded by other jobs, the least disturbed
        entry = {"space": space_name, "global_batch": batch, "bn": bn, "results": results,
                 "overhead_ratio": round(results[top]["step_ms"] / results["1"]["step_ms"], 3),
                 "overhead_ratio_min": round(results[top]["step_ms_min"] / results["1"]["step_ms_min"], 3)}
        if args.breakdown_steps:
            one, many = breakdown((w, 1)), breakdown((w, counts[-1]))
            launches = sum(k["calls_per_step"] for k in many["kinds"].values())
            reductions = sum(k["collectives_per_step"] for k in many["kinds"].values())
            lo, hi = micro["1"], micro[str(counts[-1])]
            entry["breakdown"] = {
                "1": one, str(counts[-1]): many, "programs_per_step": launches,
                "collectives_per_step": reductions,
                "extra_ms_measured": round(results[str(counts[-1])]["step_ms"] - results["1"]["step_ms"], 2),
                "explained_ms": round((launches * (hi["launch_us"] - lo["launch_us"])
                                       + reductions * hi["all_reduce_us"]) / 1e3, 2)}
        summary.append(entry)
    first = summary[0]
    out = {"space": first["space"], "global_batch": first["global_batch"], "bn": first["bn"], "repeats": args.repeats,
           "backend": jax.default_backend(), "device_kind": jax.devices()[0].device_kind,
           "warmup_s": round(warmup_s, 1), "results": first["results"],
           "overhead_ratio": first["overhead_ratio"], "overhead_ratio_devices": counts[-1], "target": 1.15,
           "workloads": summary, "micro": micro, "cpu_count": os.cpu_count(),
           "load": [round(x, 2) for x in os.getloadavg()],
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
