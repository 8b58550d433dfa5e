"""Benchmark of data-parallel supernet training: step time and images/s on 1, 2, 4, ... devices.

Prints one JSON object. One process with ``--devices`` fake CPU devices
(``--xla_force_host_platform_device_count``, set here before JAX starts): the same sandwich step
(largest teaches smallest, the composed trainer `nas train-supernet` uses) at the same global batch
on meshes of 1, 2, 4, ... of them, interleaved in each repeat so machine noise hits every count.
Fake CPU devices share the same cores, so no speed-up is possible: what this shows is the cost of
data parallelism itself (the collectives GSPMD inserts, per-device dispatch), reported as
``overhead_ratio`` = step(max devices) / step(1 device), target <= 1.15. On real accelerators the
same script measures the speed-up.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mobilenetv3-tiny")
    ap.add_argument("--batch", type=int, default=64, help="global batch (split over the devices)")
    ap.add_argument("--devices", type=int, default=4, help="the largest device count; 1, 2, 4, ... up to it")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args(argv)
    if "jax" not in sys.modules:  # fake CPU devices must be asked for before JAX starts
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={args.devices}").strip()
    import jax

    from nas_cli import distributed as dist
    from nas_cli import runs
    from nas_cli.config import TrainConfig
    from nas_cli.train import TrainState, make_optimizer, train_step

    cfg = TrainConfig(space=args.space, batch_size=args.batch)
    ds = runs.load_run_dataset(cfg)
    space = runs.make_space(cfg, ds)
    archs = [space.largest(), space.smallest()]
    counts = [n for n in (1, 2, 4, 8, 16, 32) if n <= args.devices]
    setups = {}
    for n in counts:
        mesh = dist.make_mesh(n)
        dist.check_batch(args.batch, mesh)
        state = TrainState.create(dist.replicate(space.init_supernet(jax.random.key(0)), mesh),
                                  make_optimizer(cfg, 100))
        batch = dist.shard_batch(mesh, (ds.train.images[:args.batch], ds.train.labels[:args.batch]))
        setups[n] = [state, space.make_trainer(ds.mean, ds.std, 0.1, "xla"), batch]

    def step(n):
        state, net, batch = setups[n]
        t0 = time.perf_counter()
        state, metrics = train_step(state, net, archs, batch)
        jax.block_until_ready((state.params, metrics["loss"]))
        setups[n][0] = state
        return (time.perf_counter() - t0) * 1e3

    t0 = time.perf_counter()
    for _ in range(args.warmup):
        for n in counts:
            step(n)
    warmup_s = time.perf_counter() - t0
    times = {n: [] for n in counts}
    for r in range(args.repeats):
        for n in (counts if r % 2 == 0 else counts[::-1]):  # alternate the order within a repeat
            times[n].append(step(n))
    results = {}
    for n in counts:
        ms = statistics.median(times[n])
        results[str(n)] = {"step_ms": round(ms, 3), "images_per_s": round(args.batch / ms * 1e3, 1),
                           "per_device_batch": args.batch // n}
    out = {"space": args.space, "global_batch": args.batch, "repeats": args.repeats, "backend": jax.default_backend(),
           "device_kind": jax.devices()[0].device_kind, "warmup_s": round(warmup_s, 1), "results": results,
           "overhead_ratio": round(results[str(counts[-1])]["step_ms"] / results["1"]["step_ms"], 3),
           "overhead_ratio_devices": counts[-1], "target": 1.15,
           "cpu_count": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
