"""Where a supernet training's warm-up and memory go: one child process per setting, phase by phase.

Each child trains as `nas train-supernet` does (nas_cli.training.supernet's TrainState and train_step, the
space's composed trainer, sandwich steps: largest teaching smallest + 2 random) and then evaluates
the largest subnet as training's validation does (SubnetEvaluator: BatchNorm recalibration, then
accuracy). After each phase it records wall seconds, resident memory (now and peak), memory mappings
and the programs compiled and kept:

  params      the supernet's weights and AdamW state
  compile     the composed trainer's programs of the first sandwich step, compiled ahead of it
              (search_spaces.engine.ComposedTrainer.prepare; nothing under ``nas``, ``default``, ``warm``), with the
              largest temporary buffer one of them needs (XLA's memory analysis)
  first_step  the first sandwich step (unless compiled ahead, it compiles its programs as it calls them);
              ``time_to_first_step_s`` is the warm-up
  steps       --steps more steps of the same sandwich (median step ms; nothing left to compile)
  evaluator   recalibrating and evaluating the largest subnet (the evaluator's own programs)
  dropped     every program dropped (what compiled programs held)

Settings (``--settings``): ``nas`` (the library as it runs by default: XLA:CPU options of
search_spaces/programs.py, each program compiled when the step first calls it), ``ahead`` (the step's
programs compiled ahead of it on one thread: NAS_COMPILE_THREADS=1), ``threads2`` (ahead, on two
threads), ``default`` (XLA's default options, NAS_XLA_DEFAULT_OPTIONS=1), ``arena2``
(``nas`` with glibc's MALLOC_ARENA_MAX=2), and ``warm`` (``nas`` again, reading the persistent
compilation cache that an earlier ``nas`` child of the same run filled: a second run, or a
``--resume``). Prints one JSON object: every child's phases and each setting's ratios to nas.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

SETTINGS = {  # name: environment of its child
    "nas": {}, "ahead": {"NAS_COMPILE_THREADS": "1"}, "threads2": {"NAS_COMPILE_THREADS": "2"},
    "default": {"NAS_XLA_DEFAULT_OPTIONS": "1"}, "arena2": {"MALLOC_ARENA_MAX": "2"}, "warm": {},
}


def _cpu_seconds() -> float:
    """This process's CPU time, all threads (wall time on a shared machine says little about work:
    with the kernel's autogroup scheduling a process gets its session's share of the cores)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _status() -> dict:
    out = {}
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return {"rss_mb": round(out.get("VmRSS", 0), 1), "peak_rss_mb": round(out.get("VmHWM", 0), 1)}


def _code_sizes(trainer) -> dict:
    """XLA's memory analysis of the programs compiled ahead: the largest temporary buffer one
    program needs while it runs."""
    cache = getattr(trainer, "_programs", None)  # the composed engine's ProgramCache
    compiled = []
    for entry in cache.programs().values() if cache is not None else ():
        for prog in entry if isinstance(entry, tuple) else (entry,):
            if getattr(prog, "compiled", None) is not None:
                compiled.append(prog.compiled.memory_analysis())
    compiled = [m for m in compiled if m is not None]
    if not compiled:
        return {}
    # (XLA:CPU reports no generated code size: the memory mappings say what the code takes)
    return {"max_temp_mb": round(max(m.temp_size_in_bytes for m in compiled) / 2**20, 1)}


def child(args) -> dict:
    import gc

    import jax
    import numpy as np

    from nas_cli.runs import enable_compilation_cache
    from nas_cli.evaluation.subnet import SubnetEvaluator
    from nas_cli.training.supernet import TrainState, train_step
    from search_spaces import get_space, programs
    from nas_cli.data import Split
    import optax

    t_start = time.perf_counter()
    if args.cache_dir:
        os.environ["NAS_CACHE_DIR"] = args.cache_dir
        enable_compilation_cache()
    phases = {}

    def mark(name, t0, **extra):
        stats = programs.program_stats()
        phases[name] = {"s": round(time.perf_counter() - t0, 2), "cpu_s": round(_cpu_seconds() - cpu0[0], 2), **_status(),
                        "memory_mappings": stats["memory_mappings"], "programs_compiled": stats["compiled"],
                        "programs_kept": stats["kept"], **extra}

    cpu0 = [0.0]  # the process's CPU time at the start of the phase being timed

    mark("import", t_start)
    options = {} if args.space.endswith("-tiny") else {"width_mult": args.width_mult}
    space = get_space(args.space, in_channels=3, num_classes=10, resolutions=(args.resolution,), **options)
    t0, cpu0[0] = time.perf_counter(), _cpu_seconds()
    params = space.init_supernet(jax.random.key(0))
    tx = optax.chain(optax.clip_by_global_norm(5.0), optax.adamw(1e-3, weight_decay=1e-4))
    state = TrainState.create(params, tx)
    jax.block_until_ready(state.params)
    mark("params", t0, parameters=int(sum(np.prod(a.shape) for a in jax.tree.leaves(params))))

    trainer = space.make_trainer(0.45, 0.25, 0.1, "xla")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.batch, args.resolution, args.resolution, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (args.batch,)).astype(np.int32)
    batch = (jax.numpy.asarray(images), jax.numpy.asarray(labels))
    largest, smallest = space.largest(), space.smallest()

    step_archs = [largest, smallest] + [space.sample(rng) for _ in range(2)]

    t0, cpu0[0] = time.perf_counter(), _cpu_seconds()
    prepared = trainer.prepare(state.params, step_archs, *batch) if hasattr(trainer, "prepare") else 0
    mark("compile", t0, programs_ahead=prepared, **_code_sizes(trainer))

    t0, cpu0[0] = time.perf_counter(), _cpu_seconds()
    state, metrics = train_step(state, trainer, step_archs, batch)
    jax.block_until_ready(metrics["loss"])
    mark("first_step", t0, time_to_first_step_s=round(time.perf_counter() - t_start, 2))

    t0, cpu0[0] = time.perf_counter(), _cpu_seconds()
    times = []
    for _ in range(args.steps):
        t1 = time.perf_counter()
        state, metrics = train_step(state, trainer, step_archs, batch)  # compiled: the step alone
        jax.block_until_ready(metrics["loss"])
        times.append((time.perf_counter() - t1) * 1e3)
    mark("steps", t0, step_ms_median=round(statistics.median(times), 1) if times else None)

    evaluator = None
    if not args.no_evaluator:
        t0, cpu0[0] = time.perf_counter(), _cpu_seconds()
        evaluator = SubnetEvaluator(space, 0.45, 0.25, batch_size=args.batch)
        stats = evaluator.calibrate(state.params, largest, images)
        acc = evaluator.accuracy(state.params, stats, largest, Split(images, labels))
        mark("evaluator", t0, accuracy=acc)

    t0, cpu0[0] = time.perf_counter(), _cpu_seconds()
    programs.drop_all()
    del trainer, evaluator
    jax.clear_caches()
    gc.collect()
    mark("dropped", t0)
    return phases


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="mobilenetv3")
    p.add_argument("--width-mult", type=float, default=1.0)
    p.add_argument("--resolution", type=int, default=32)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--settings", default="nas,ahead,warm", help=f"comma-separated: {', '.join(SETTINGS)}")
    p.add_argument("--no-evaluator", action="store_true", help="skip the evaluator phase (training's warm-up only)")
    p.add_argument("--verbose", action="store_true", help="each child's phases on stderr as it ends")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cache-dir", default="", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    bad = [s for s in settings if s not in SETTINGS]
    if bad:
        p.error(f"--settings {bad[0]!r}: choose from {', '.join(SETTINGS)}")
    out: dict = {"space": args.space, "width_mult": args.width_mult, "resolution": args.resolution,
                 "batch": args.batch, "steps": args.steps, "cpu_count": os.cpu_count(), "settings": {}}
    with tempfile.TemporaryDirectory() as cache:
        for setting in settings:
            env = {k: v for k, v in os.environ.items()
                   if k not in ("NAS_XLA_DEFAULT_OPTIONS", "NAS_COMPILE_THREADS", "MALLOC_ARENA_MAX")}
            env.update(SETTINGS[setting])
            cmd = [sys.executable, os.path.abspath(__file__), "--child", "--space", args.space,
                   "--width-mult", str(args.width_mult), "--resolution", str(args.resolution),
                   "--batch", str(args.batch), "--steps", str(args.steps)] + (["--no-evaluator"] if args.no_evaluator else [])
            # each child writes a fresh persistent cache as a first `nas train-supernet` does;
            # warm reads what the nas child wrote
            cmd += ["--cache-dir", os.path.join(cache, "nas" if setting == "warm" else setting)]
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
            if args.verbose:
                print(f"{setting}: {done.stdout.strip()[-2000:] or done.stderr.strip()[-2000:]}", file=sys.stderr, flush=True)
            if done.returncode != 0:
                out["settings"][setting] = {"error": done.stderr.strip().splitlines()[-1:]}
                continue
            out["settings"][setting] = json.loads(done.stdout.strip().splitlines()[-1])
    s = out["settings"]
    n = s.get("nas", {})
    if "first_step" in n:  # every other finished setting against nas, side by side in this run
        out["ratios_over_nas"] = {name: {
            "time_to_first_step": round(d["first_step"]["time_to_first_step_s"] / n["first_step"]["time_to_first_step_s"], 3),
            "peak_rss_to_first_step": round(d["first_step"]["peak_rss_mb"] / n["first_step"]["peak_rss_mb"], 3),
            "peak_rss": round(d["dropped"]["peak_rss_mb"] / n["dropped"]["peak_rss_mb"], 3),
            "memory_mappings_after_steps": round(d["steps"]["memory_mappings"] / n["steps"]["memory_mappings"], 3),
            "step_ms": (round(d["steps"]["step_ms_median"] / n["steps"]["step_ms_median"], 3)
                        if d["steps"]["step_ms_median"] and n["steps"]["step_ms_median"] else None),
        } for name, d in s.items() if name != "nas" and "first_step" in d}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
