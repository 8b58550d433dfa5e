"""Wall and CPU seconds of the README's NAS-Bench-201 table search, run as a user runs it: the
``nas search`` command in a fresh process (imports and all), one variant after another.

    python bench/search_command.py --table /work/shared/data/nasbench201/nb201_dev.csv \
        --variants auto,gp,auto+free,gp+free

A variant is ``PREDICTOR`` or ``PREDICTOR+free`` (``--free-metrics latency``). ``--repos A,B``
times the same command of other checkouts (e.g. main's, before a change) interleaved with this one,
variant by variant, so that their ratios come from one run at one load. Every (checkout, variant)
starts with an empty XLA cache of its own (``NAS_CACHE_DIR``); ``--repeat 2`` runs it again on what
the first run cached (a user's second search). Each runs

    nas search OUT --benchmark-table TABLE --evaluations 300 \
        --objectives accuracy=cifar100_test_acc,latency=lat_ms_raspi4 --latency-budget 50% --out OUT

and reports, as one JSON line per variant on stderr and one JSON object at the end on stdout:
``wall_seconds`` (the whole command), ``cpu_seconds`` (the command's process and every descendant it
waited for: ``wait4``'s usage), ``cpu_self_seconds`` / ``cpu_children_seconds`` (the command's own
CPU and that of its reaped children, sampled with psutil just before it exits: a scikit-learn
joblib/loky worker would show here), ``max_children`` (the most child processes seen at once),
the log's parts (``parts_seconds``: fit, score, track, write, ... summed over its lines;
``overhead_seconds``: all of them but ``evaluate``), ``outside_log_seconds`` (wall not in any log
line: the imports, reading the table, the final outputs) and the front's quality (``hv_ratio``,
``front_found``). The load average before and after each run is printed too: the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

_HERE = Path(__file__).resolve().parent
DEV_TABLE = _HERE.parent.parent / "shared" / "data" / "nasbench201" / "nb201_dev.csv"


def run_variant(table: Path, variant: str, args, work: Path, repo: Path, cache: Path, tag: str) -> dict:
    predictor, _, free = variant.partition("+")
    if free not in ("", "free"):
        raise SystemExit(f"--variants {variant!r}: use PREDICTOR or PREDICTOR+free")
    out = work / tag
    cmd = [sys.executable, "-m", "nas_cli", "search", str(out), "--benchmark-table", str(table),
           "--evaluations", str(args.evaluations), "--objectives", args.objectives,
           "--latency-budget", args.budget, "--predictor", predictor, "--seed", str(args.seed), "--out", str(out),
           *(["--free-metrics", "latency"] if free else []), *args.extra]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
           "NAS_CACHE_DIR": str(cache)}
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    err_path = work / f"{out.name}.stderr"
    with open(err_path, "w") as err:
        # run from the checkout: `python -m` puts the working directory ahead of PYTHONPATH
        proc = subprocess.Popen(cmd, env=env, cwd=repo, stdout=subprocess.DEVNULL, stderr=err)
    ps = psutil.Process(proc.pid)
    last, max_children = None, 0
    while True:  # wait4 itself (not Popen.poll) reaps it, so that its resource usage comes back
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        try:
            last = ps.cpu_times()
            max_children = max(max_children, len(ps.children(recursive=True)))
        except psutil.Error:  # it exited between the wait and the sample
            pass
        time.sleep(0.2)
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if code != 0:
        raise SystemExit(f"{variant}: exit {code}: {err_path.read_text()[-2000:]}")
    log = [json.loads(line) for line in (out / "search_log.jsonl").read_text().splitlines() if line.strip()]
    parts: dict[str, float] = {}
    for rec in log:
        for part, sec in rec.get("seconds", {}).items():
            parts[part] = parts.get(part, 0.0) + sec
    in_log = sum(parts.values())
    rec = {
        "variant": variant, "repo": str(repo), "wall_seconds": round(wall, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "cpu_self_seconds": round(last.user + last.system, 1) if last else None,
        "cpu_children_seconds": round(last.children_user + last.children_system, 1) if last else None,
        "max_children": max_children,
        "overhead_seconds": round(sum(v for k, v in parts.items() if k != "evaluate"), 1),
        "parts_seconds": {k: round(v, 1) for k, v in sorted(parts.items())},
        "outside_log_seconds": round(wall - in_log, 1),
        "iterations": len(log) - 1, "evaluations": log[-1]["n_evaluations"],
        "hv_ratio": round(log[-1]["true_hypervolume_ratio"], 4),
        "front_found": round(log[-1]["true_front_found"], 4),
        "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
    }
    if not args.keep:
        shutil.rmtree(out, ignore_errors=True)
    return rec


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, default=DEV_TABLE)
    ap.add_argument("--variants", default="auto,gp,auto+free,gp+free")
    ap.add_argument("--evaluations", type=int, default=300)
    ap.add_argument("--objectives", default="accuracy=cifar100_test_acc,latency=lat_ms_raspi4")
    ap.add_argument("--budget", default="50%")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repos", default=str(_HERE.parent),
                    help="comma-separated checkouts whose nas to time, interleaved (default: this one)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each (checkout, variant); the later ones "
                    "find the first one's XLA cache")
    ap.add_argument("--keep", action="store_true", help="keep the search folders (printed as 'work')")
    ap.add_argument("extra", nargs="*", help="more options for nas search (after --)")
    args = ap.parse_args(argv)
    if not args.table.is_file():
        print(json.dumps({"skipped": f"{args.table} is absent; pass --table"}))
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench_search_command_"))
    runs = []
    repos = [Path(r).resolve() for r in args.repos.split(",") if r.strip()]
    for variant in filter(None, (v.strip() for v in args.variants.split(","))):
        for run in range(args.repeat):
            for i, repo in enumerate(repos):
                tag = f"{variant.replace('+', '_')}-{i}"
                rec = run_variant(args.table, variant, args, work, repo, work / f"xla-{tag}", f"{tag}-{run}")
                runs.append({**rec, "run": run + 1})
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"table": str(args.table), "evaluations": args.evaluations, "objectives": args.objectives,
                      "budget": args.budget, "seed": args.seed, "cpus": os.cpu_count(),
                      **({"work": str(work)} if args.keep else {}), "runs": runs}))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
