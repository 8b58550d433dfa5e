"""Importing a full-size Once-for-All ResNet-50 (issue 32): seconds and peak memory of `nas import ofa
--net ofa_resnet50`.

    python bench/ofa_resnet_import.py --work /tmp/ofa_r50_bench [--repeats 2]

The checkpoint is written first by Once-for-All's own code (torch and the ``ofa`` package: the
``bench`` extra): ``OFAResNets`` as ``ofa_resnet50`` is built (depth 0-2, expand 0.2/0.25/0.35,
width 0.65/0.8/1.0), 1000 classes, random weights and BatchNorm statistics
(tests/fixtures/make_ofa_resnet_fixture.py's ``build``), saved in float32 as OFA publishes it
(``{"state_dict": ...}``). Each import runs as its own process (as a user runs it), timed by wall
clock, its own peak resident memory from ``wait4``. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(argv: list[str]) -> dict:
    """Runs ``argv`` to the end; its wall seconds, its own peak RSS (MB), exit code, last output line."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    lines = [line for line in out.strip().splitlines() if line.strip()]
    return {"status": "ok" if proc.returncode == 0 else f"exit {proc.returncode}",
            "seconds": round(time.perf_counter() - t0, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "last_line": lines[-1][:300] if lines else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    ckpt = args.work / "ofa_resnet50_random.pth"
    result: dict = {"net": "ofa_resnet50", "checkpoint": str(ckpt)}
    if not ckpt.exists():
        code = f"""
import sys, torch
sys.path.insert(0, {str(ROOT / 'tests' / 'fixtures')!r})
import make_ofa_resnet_fixture as m
m.NUM_CLASSES = 1000
net = m.build(1.0, 0)
torch.save({{"state_dict": net.state_dict()}}, {str(ckpt)!r})
"""
        result["write_checkpoint"] = run([sys.executable, "-c", code])
    result["checkpoint_mb"] = round(ckpt.stat().st_size / 2**20, 1)
    result["imports"] = []
    for i in range(args.repeats):
        out = args.work / f"run{i}"
        shutil.rmtree(out, ignore_errors=True)
        result["imports"].append(run([sys.executable, "-m", "nas_cli", "import", "ofa", str(ckpt), "--net",
                                      "ofa_resnet50", "--out", str(out)]))
    t0 = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from nas_cli.importing import read_pth  # noqa: PLC0415

    state = read_pth(ckpt)["state_dict"]
    result["read_pth_seconds"] = round(time.perf_counter() - t0, 2)
    result["tensors"] = len(state)
    result["load_avg"] = os.getloadavg()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
