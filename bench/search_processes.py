"""How a search's accuracy measurements scale over processes: `nas search` on one supernet run with
one process, then with P processes on 127.0.0.1, the same seed and settings.

    python bench/search_processes.py RUN_DIR --out-root DIR [--processes 2] [--pin]
        [--latency-budget 80%] [--evaluations 32] [--initial 16] [--batch 16] [--seed 0]
        [--latency-table TABLE.json] [--predictor NAME]

Each search gets its own copy of the run without its accuracy cache (``subnet_accuracy.jsonl``),
so both measure every subnet. With ``--pin`` process ``p`` is pinned to core ``p`` (``taskset``)
and the one-process search to core 0: P one-core hosts against one, on one machine (without it the
processes share every core, and on a small machine the ratio only shows the overhead). Prints one
JSON object: each search's wall time and front, the wall-time ratio, and the fronts' members in
common. Latency is measured by process 0, so the fronts may differ by timing noise, unless
``--latency-table`` is given (``nas latency profile``; read without calibration): then the search's
only measurements are the accuracies, and the fronts must be the same. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NAS = "import sys; from nas_cli.main import main; sys.argv[0] = 'nas'; main()"
#: what a search needs of a training run (its accuracy cache is left behind)
RUN_FILES = ("config.json", "data.json", "checkpoint", "checksums.json", "final.json")


def copy_run(run: Path, dest: Path) -> Path:
    if not dest.is_dir():
        dest.mkdir(parents=True)
        for name in RUN_FILES:
            src = run / name
            if src.is_dir():
                shutil.copytree(src, dest / name)
            elif src.is_file():
                shutil.copy2(src, dest / name)
    return dest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_search(run: Path, out: Path, processes: int, pin: bool, args, timeout: float = 3600) -> float:
    base = [sys.executable, "-c", NAS, "search", str(run), "--out", str(out), "--latency-budget", args.latency_budget,
            "--evaluations", str(args.evaluations), "--initial", str(args.initial), "--batch", str(args.batch),
            "--seed", str(args.seed)]
    if args.predictor is not None:
        base += ["--predictor", args.predictor]
    if args.latency_table is not None:
        base += ["--latency-table", str(args.latency_table), "--no-latency-calibrate"]
    port = free_port()
    cmds = [base if processes == 1 else base + ["--coordinator", f"127.0.0.1:{port}", "--num-processes",
                                                 str(processes), "--process-id", str(p)] for p in range(processes)]
    if pin:
        cmds = [["taskset", "-c", str(p)] + cmd for p, cmd in enumerate(cmds)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    print(f"$ {shlex.join(cmds[-1])}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    procs = [subprocess.Popen(cmd, env=env, stdout=sys.stderr, stderr=sys.stderr) for cmd in cmds]
    try:
        codes = [p.wait(timeout=max(1.0, timeout - (time.perf_counter() - t0))) for p in procs]
    finally:
        for p in procs:  # every process this bench started ends here, whatever happened
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(codes):
        raise SystemExit(f"nas search with {processes} process(es) exited {codes}")
    return time.perf_counter() - t0


def front(out: Path) -> list[str]:
    return [row["arch"] for row in json.loads((out / "pareto.json").read_text())["front"]]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--out-root", type=Path, required=True)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--pin", action="store_true", help="pin process p to core p (taskset)")
    ap.add_argument("--latency-budget", default="80%")
    ap.add_argument("--evaluations", type=int, default=32)
    ap.add_argument("--initial", type=int, default=16)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--predictor", help="nas search --predictor (default: nas search's)")
    ap.add_argument("--latency-table", type=Path, help="a lookup table: latency predicted, not measured")
    args = ap.parse_args()
    if args.processes < 2:
        raise SystemExit(f"--processes {args.processes}: give 2 or more (one process is always the baseline)")
    if args.pin and (shutil.which("taskset") is None or (os.cpu_count() or 1) < args.processes):
        raise SystemExit(f"--pin needs taskset and at least {args.processes} cores")
    results = {}
    for n in (1, args.processes):
        run = copy_run(args.run, args.out_root / f"run-{n}")
        out = args.out_root / f"search-{n}"
        if out.exists():
            shutil.rmtree(out)
        results[n] = {"seconds": round(run_search(run, out, n, args.pin, args), 1), "front": front(out)}
    one, many = results[1], results[args.processes]
    print(json.dumps({"command": shlex.join(sys.argv), "run": str(args.run), "processes": args.processes,
                      "pinned": args.pin, "evaluations": args.evaluations,
                      "latency": "measured" if args.latency_table is None else f"table {args.latency_table}", "results": {str(k): v for k, v in results.items()},
                      "time_ratio": round(many["seconds"] / one["seconds"], 3),
                      "front_members_in_common": len(set(one["front"]) & set(many["front"]))}))


if __name__ == "__main__":
    main()
