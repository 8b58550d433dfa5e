"""Importing a full-size Once-for-All MobileNetV3 (issue 32): seconds and peak memory of `nas import
ofa`, then (``--search``) a latency table at 224 px and a small search on the imported run.

    python bench/ofa_import.py --work /tmp/ofa_bench [--width 1.0] [--search] [--timeout 3000]

The checkpoint is written first by Once-for-All's own code (torch and the ``ofa`` package: the
``bench`` extra): OFAMobileNetV3 d234 e346 k357 at ``--width``, 1000 classes, random weights and
BatchNorm statistics, saved as OFA publishes it (``{"state_dict": ...}``). Every `nas` step runs as
its own process (as a user runs them), timed by wall clock, its peak resident memory from
``wait4``. The search's data is a seeded .npz of 64 random 224 px images naming 1000 classes (the
figures are of time, not accuracy). Prints one JSON object; a step that fails or times out is
recorded as such and the rest skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_checkpoint(path: Path, width: float) -> dict:
    code = f"""
import sys, torch
sys.path.insert(0, {str(ROOT / 'tests' / 'fixtures')!r})
import make_ofa_fixture as m
m.NUM_CLASSES = 1000
net = m.build({width}, 0)
torch.save({{"state_dict": net.state_dict()}}, {str(path)!r})
"""
    return run_step([sys.executable, "-c", code], timeout=900)


def run_step(argv: list[str], timeout: float) -> dict:
    """Runs ``argv``; returns its wall seconds, peak RSS (MB), exit code and last output line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        return {"status": "timeout", "seconds": round(time.perf_counter() - t0, 1)}
    # the child is reaped by communicate(); its peak RSS is the largest of the children's so far
    import resource

    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    lines = [line for line in out.strip().splitlines() if line.strip()]
    return {"status": "ok" if proc.returncode == 0 else f"exit {proc.returncode}",
            "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb_so_far": round(peak_mb, 1),
            "last_line": lines[-1][:300] if lines else ""}


def nas(*args) -> list[str]:
    return [sys.executable, "-m", "nas_cli", *[str(a) for a in args]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--width", type=float, default=1.0)
    parser.add_argument("--search", action="store_true")
    parser.add_argument("--timeout", type=float, default=3000, help="seconds per step")
    args = parser.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    net = f"ofa_mbv3_d234_e346_k357_w{args.width}"
    ckpt = work / f"{net}.pth"
    result: dict = {"net": net, "load": os.getloadavg(), "cpus": os.cpu_count()}
    if not ckpt.exists():
        result["write_checkpoint_with_ofa"] = make_checkpoint(ckpt, args.width)
    result["checkpoint_mb"] = round(ckpt.stat().st_size / 2**20, 1)
    # peak RSS of children is cumulative: the import runs first among the measured steps, and the
    # checkpoint writer (torch) is measured apart below by running the import in a fresh bench process
    run = work / "run"
    if run.exists():
        import shutil

        shutil.rmtree(run)
    step = run_step([sys.executable, "-c", f"""
import resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.call({nas('import', 'ofa', ckpt, '--net', net, '--out', run)!r})
print(f"rc={{rc}} seconds={{time.perf_counter() - t:.2f}} "
      f"peak_rss_mb={{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024:.1f}}")
"""], timeout=args.timeout)
    result["import"] = step
    if args.search and step["status"] == "ok":
        data = work / "data.npz"
        rng = np.random.default_rng(0)
        np.savez(data, images=rng.integers(0, 256, (64, 224, 224, 3), dtype=np.uint8),
                 labels=rng.integers(0, 1000, 64), class_names=np.asarray([f"c{i}" for i in range(1000)]))
        srun = work / "run224"
        if srun.exists():
            import shutil

            shutil.rmtree(srun)
        steps = [
            ("import_with_data", nas("import", "ofa", ckpt, "--net", net, "--out", srun, "--dataset", "npz",
                                     "--data-dir", data, "--resolutions", "224", "--batch-size", "16",
                                     "--calib-images", "32")),
            ("latency_profile_224", nas("latency", "profile", "--space", "mobilenetv3-imagenet", "--resolution", "224",
                                        "--num-classes", "1000", "--width-mult", args.width, "--repeats", "3",
                                        "--rounds", "3", "--calib-samples", "1", "--out", work / "lut224.json")),
            ("search", nas("search", srun, "--latency-budget", "80%", "--latency-table", work / "lut224.json",
                           "--population", "4", "--generations", "1", "--seed", "0")),
        ]
        for name, argv in steps:
            result[name] = run_step(argv, timeout=args.timeout)
            print(json.dumps({name: result[name]}), file=sys.stderr, flush=True)
            if result[name]["status"] != "ok":
                break
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
