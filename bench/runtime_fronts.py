"""How much the searched front depends on the runtime that measures latency: `nas search` on one
supernet run, once per runtime, with the same seed, budget and evaluations.

    python bench/runtime_fronts.py RUN_DIR --out-root DIR [--runtimes jax,onnxruntime]
        [--latency-budget 80%] [--evaluations 24] [--initial 8] [--batch 8] [--predictor ridge]
        [--pool 2000] [--seed 0]

Each search is the `nas search` command itself, in its own process, writing to
``DIR/search-<runtime>`` (a finished search there is read back, not redone). The searches share the
run's accuracy cache, so the accuracies are the same; what differs is each subnet's measured
latency, and through it which subnets are proposed, which meet the budget, and which are on the
front. Prints one JSON object: per runtime, the front (arch, accuracy, latency) and the wall time;
per pair, the members the fronts have in common (and their Jaccard index), and the Kendall tau and
Spearman of the latencies of the subnets both searches measured (front members in common, and all
subnets evaluated by both), with the median latency ratio. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
ROOT = _HERE.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from predictors.metrics import kendall_tau, spearman  # noqa: E402

NAS = "import sys; from nas_cli.main import main; sys.argv[0] = 'nas'; main()"


def search(run_dir: Path, out: Path, runtime: str, args) -> float:
    """Runs `nas search --latency-runtime runtime` into ``out`` unless it finished there; its seconds."""
    if (out / "pareto.json").is_file():
        return 0.0
    cmd = [sys.executable, "-c", NAS, "search", str(run_dir), "--out", str(out), "--latency-runtime", runtime,
           "--latency-budget", args.latency_budget, "--evaluations", str(args.evaluations),
           "--initial", str(args.initial), "--batch", str(args.batch), "--predictor", args.predictor,
           "--pool", str(args.pool), "--seed", str(args.seed)]
    print(f"$ {shlex.join(cmd)}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr)
    if proc.returncode != 0:
        raise SystemExit(f"nas search --latency-runtime {runtime} exited {proc.returncode}")
    return time.perf_counter() - t0


def evaluated(out: Path) -> dict[str, float]:
    """Every subnet the search evaluated, with its latency (its cache.jsonl)."""
    lat = {}
    for line in (out / "cache.jsonl").read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            lat[rec["arch"]] = float(rec["metrics"]["latency"])
    return lat


def correlation(a: dict[str, float], b: dict[str, float]) -> dict:
    """Rank agreement of two runtimes' latencies over the archs both have."""
    common = sorted(set(a) & set(b))
    out = {"n": len(common)}
    if len(common) >= 2:
        x, y = np.asarray([a[k] for k in common]), np.asarray([b[k] for k in common])
        out.update(kendall_tau=kendall_tau(x, y), spearman=spearman(x, y), median_ratio=float(np.median(y / x)))
    return out


def compare(run_dir: Path, out_root: Path, args) -> dict:
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    fronts, caches, per = {}, {}, {}
    for rt in runtimes:
        out = out_root / f"search-{rt}"
        seconds = search(run_dir, out, rt, args)
        pareto = json.loads((out / "pareto.json").read_text())
        fronts[rt] = {m["arch"]: m for m in pareto["front"]}
        caches[rt] = evaluated(out)
        per[rt] = {"out": str(out), "seconds": round(seconds, 1), "n_evaluations": pareto["n_evaluations"],
                   "front": [{"arch": m["arch"], "accuracy": m["accuracy"], "latency_ms": m["latency_ms"]}
                             for m in pareto["front"]]}
    pairs = {}
    first = runtimes[0]
    for other in runtimes[1:]:
        a, b = set(fronts[first]), set(fronts[other])
        pairs[f"{first}_vs_{other}"] = {
            "front_sizes": [len(a), len(b)],
            "members_in_common": len(a & b),
            "jaccard": len(a & b) / len(a | b) if a | b else 1.0,
            "front_latency_common": correlation({k: fronts[first][k]["latency_ms"] for k in a & b},
                                                {k: fronts[other][k]["latency_ms"] for k in a & b}),
            "evaluated_in_common": correlation(caches[first], caches[other]),
        }
    return {"run_dir": str(run_dir), "latency_budget": args.latency_budget, "evaluations": args.evaluations,
            "seed": args.seed, "runtimes": per, "comparison": pairs}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path, help="a training run (the supernet to search)")
    ap.add_argument("--out-root", type=Path, required=True, help="searches go to OUT_ROOT/search-<runtime>")
    ap.add_argument("--runtimes", default="jax,onnxruntime", help="comma-separated, at least two")
    ap.add_argument("--latency-budget", default="80%")
    ap.add_argument("--evaluations", type=int, default=24)
    ap.add_argument("--initial", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--predictor", default="ridge")
    ap.add_argument("--pool", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    runtimes = [r.strip() for r in args.runtimes.split(",") if r.strip()]
    if len(runtimes) < 2 or len(set(runtimes)) != len(runtimes):
        ap.error(f"--runtimes {args.runtimes!r}: name two or more different runtimes")
    if not args.run_dir.is_dir():
        ap.error(f"run_dir {args.run_dir}: not a directory")
    result = compare(args.run_dir, args.out_root, args)
    print(json.dumps({"command": shlex.join([sys.executable, *sys.argv]), **result}))


if __name__ == "__main__":
    main()
