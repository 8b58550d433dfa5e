"""Latency benchmark: MAPE and Kendall tau of the lookup table and of the learned predictor.

    python bench/latency.py [--space mobilenetv3] [--resolution R ...] [--width-mult W] [--in-channels C]
        [--num-classes K] [--samples 100] [--train-samples 100] [--repeats 10] [--rounds 20]
        [--calib-samples 4] [--model ridge] [--seed 0] [--runtime jax[,onnxruntime]] [--threads N]

Works for every supernet space (``--space``: mobilenetv3, resnet, vit and their -tiny variants);
options not given are the space's own (the full spaces: 24, 28 and 32 px, 3 channels). The
mobilenetv3 figures in bench/RESULTS.md are ``--space mobilenetv3 --resolution 32``.

Profiles the table on this device, measures ``--samples`` random subnets end to end (the test set,
predictors.latency.time_archs) and ``--train-samples`` other random subnets (the learned model's
training set), and scores on the test set: the table, the learned model on features + the table's
sum, and the learned model on features alone; ``repeatability`` is the test measurement against
itself (even vs odd timing rounds), the floor under any model's error. The reference subnets are
timed in every chunk: training targets are put at the table's level, and test predictions are
scaled to each test chunk's level (``*_uncalibrated``: not scaled). Prints one JSON object
(progress goes to stderr).

``--runtime jax,onnxruntime`` does all of that in each runtime, one after the other, on the same
subnets (the figures under ``runtimes``), and adds ``cross_runtime``: Kendall tau and Spearman
between the two runtimes' latencies of the test subnets (each at its own runtime's common device
level), and the median ratio. ``--threads`` is onnxruntime's intra-op thread count (default 1).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from predictors.latency import (  # noqa: E402
    FIT_STREAM,
    VALIDATE_STREAM,
    RUNTIMES,
    at_level,
    calibrated_predictions,
    common_level,
    fit_latency_model,
    get_runtime,
    make_latency_space,
    profile_steps,
    profile_table,
    reference_archs,
    repeatability,
    sample_archs,
    score,
    time_archs,
)
from predictors.metrics import kendall_tau, spearman  # noqa: E402
from search_spaces import supernet_space_names  # noqa: E402


def _progress(label: str, total: int):
    done = [0]

    def tick(n: int) -> None:
        done[0] += n
        print(f"\r{label}: {done[0]}/{total}", end="" if done[0] < total else "\n", file=sys.stderr, flush=True)

    return tick


def run(space_name: str = "mobilenetv3", resolutions=None, width_mult: float | None = None,
        in_channels: int | None = None, num_classes: int | None = None, samples: int = 100,
        train_samples: int = 100, repeats: int = 10, calib_samples: int = 4, model: str = "ridge", seed: int = 0,
        rounds: int = 20, runtimes: tuple[str, ...] = ("jax",), threads: int | None = None) -> dict:
    """The figures of one space in each runtime; options left None are the space's own."""
    space, options = make_latency_space(space_name, resolutions=resolutions, width_mult=width_mult,
                                        in_channels=in_channels, num_classes=num_classes)
    out = {"space": space_name, "options": options, "device": jax.devices()[0].device_kind,
           "pieces": len(space.latency_pieces())}
    per_runtime, test_ms = {}, {}
    for name in runtimes:
        figures, test_ms[name] = _run_runtime(space, options, name, threads if name != "jax" else None,
                                              samples=samples, train_samples=train_samples, repeats=repeats,
                                              calib_samples=calib_samples, model=model, seed=seed, rounds=rounds)
        per_runtime[name] = figures
    if len(runtimes) == 1:
        return {**out, **per_runtime[runtimes[0]]}
    out["runtimes"] = per_runtime
    first = runtimes[0]
    out["cross_runtime"] = {
        f"{first}_vs_{other}": {"kendall_tau": kendall_tau(test_ms[first], test_ms[other]),
                                "spearman": spearman(test_ms[first], test_ms[other]),
                                "median_ratio": float(np.median(test_ms[other] / test_ms[first])),
                                "n": len(test_ms[first])}
        for other in runtimes[1:]}
    return out


def _run_runtime(space, options, runtime_name, threads, *, samples, train_samples, repeats, calib_samples, model,
                 seed, rounds) -> tuple[dict, np.ndarray]:
    """One runtime's figures, and its test subnets' latencies at its common level."""
    runtime = get_runtime(runtime_name, threads=threads)
    t0 = time.perf_counter()
    table = profile_table(space, repeats=repeats, calib_samples=calib_samples, seed=seed, options=options, rounds=rounds,
                          runtime=runtime, progress=_progress(f"{runtime_name} profile",
                                                              profile_steps(space, calib_samples)))
    t1 = time.perf_counter()
    # the streams `nas latency fit` and `nas latency validate` draw from
    train = sample_archs(space, train_samples, seed, FIT_STREAM)
    test = sample_archs(space, samples, seed, VALIDATE_STREAM)
    refs = reference_archs(space)
    timed_train = time_archs(space, train, repeats=repeats, rounds=rounds, references=refs, runtime=runtime,
                             progress=_progress(f"{runtime_name} train subnets", len(train)))
    timed_test = time_archs(space, test, repeats=repeats, rounds=rounds, references=refs, runtime=runtime,
                            progress=_progress(f"{runtime_name} test subnets", len(test)))
    reference = table.reference
    y_train = at_level(timed_train, reference["level_ms"])  # at the table's device speed
    y_test = np.asarray([t["latency_ms"] for t in timed_test])  # as measured
    levels = [t["level_ms"] for t in timed_test]
    t2 = time.perf_counter()
    out = {
        "runtime": runtime.describe(),
        "per_piece_ms": table.data["per_piece_ms"],
        "overhead_ms": table.data["overhead_ms"],
        "test_latency_ms": {"min": float(y_test.min()), "median": float(sorted(y_test)[len(y_test) // 2]),
                            "max": float(y_test.max())},
        "rounds": rounds,
        "repeatability": repeatability(timed_test),
        "device_speed_test": reference["level_ms"] / float(np.median(levels)),
        "table": score(y_test, calibrated_predictions(table, test, levels)),
        "table_uncalibrated": score(y_test, table.predict_many(test)),
    }
    if train_samples >= 2:
        meta = {"reference": reference}
        with_lut = fit_latency_model(space, train, y_train, table=table, model=model, seed=seed, meta=meta)
        alone = fit_latency_model(space, train, y_train, table=None, model=model, seed=seed, meta=meta)
        out["learned"] = {"model": model, "train_n": len(train),
                          **score(y_test, calibrated_predictions(with_lut, test, levels))}
        out["learned_uncalibrated"] = score(y_test, with_lut.predict_many(test))
        out["learned_train_fit"] = score(y_train, with_lut.predict_many(train))
        out["table_on_train"] = score(y_train, table.predict_many(train))
        out["learned_without_table"] = {"model": model,
                                        **score(y_test, calibrated_predictions(alone, test, levels))}
    out["seconds"] = {"profile": round(t1 - t0, 1), "measure": round(t2 - t1, 1)}
    # every test subnet at the run's common level, in sample order (the same archs for the same seed and
    # a prefix of them for fewer samples), so two runs' figures can be compared subnet by subnet
    test_ms = at_level(timed_test, common_level(timed_test))
    out["test_ms"] = [round(float(v), 5) for v in test_ms]
    return out, test_ms


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mobilenetv3", choices=supernet_space_names())
    ap.add_argument("--resolution", type=int, action="append", help="repeatable; default: the space's")
    ap.add_argument("--width-mult", type=float, help="full spaces only; default 1.0")
    ap.add_argument("--in-channels", type=int, help="default: the space's")
    ap.add_argument("--num-classes", type=int, help="default: the space's")
    ap.add_argument("--samples", type=int, default=100, help="test subnets")
    ap.add_argument("--train-samples", type=int, default=100, help="learned model's training subnets (0: skip)")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--calib-samples", type=int, default=4)
    ap.add_argument("--model", default="ridge")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runtime", default="jax",
                    help=f"comma-separated latency runtimes, each measured in turn (known: {', '.join(RUNTIMES.names())})")
    ap.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default 1)")
    args = ap.parse_args(argv)
    runtimes = tuple(r.strip() for r in args.runtime.split(",") if r.strip())
    for r in runtimes:
        if r not in RUNTIMES.names():
            ap.error(f"--runtime {r!r}: known runtimes are {', '.join(RUNTIMES.names())}")
    if len(set(runtimes)) != len(runtimes) or not runtimes:
        ap.error(f"--runtime {args.runtime!r}: name each runtime once")
    result = run(args.space, args.resolution, args.width_mult, args.in_channels, args.num_classes, args.samples,
                 args.train_samples, args.repeats, args.calib_samples, args.model, args.seed, args.rounds, runtimes,
                 args.threads)
    result = {"command": shlex.join([sys.executable, *sys.argv]), **result}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
