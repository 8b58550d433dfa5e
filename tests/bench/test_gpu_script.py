"""bench/gpu.sh, the one-shot GPU check (issue 29), runs: its dry run does every step at tiny sizes on CPU.

The GPU machines reach no package index and the script runs there rarely, so the dry run is what keeps
it from rotting: every step must run and write JSON that parses, with the figures the summary reads.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nas_cli.runs import compilation_cache_dir

ROOT = Path(__file__).resolve().parents[2]
STEPS = ("env", "kernel_matmul", "kernel_mlp", "kernel_dwconv", "weight_sharing", "train_pallas", "train_xla")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    out = tmp_path_factory.mktemp("gpu") / "out"
    # a persistent XLA cache, so a second run of the suite compiles little (the dry run keeps one it is given)
    env = {**os.environ, "NAS_CACHE_DIR": compilation_cache_dir("gpu-dry-run"),
           "JAX_COMPILATION_CACHE_DIR": compilation_cache_dir("gpu-dry-run-bench"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.3"}
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=2700)
    return proc, out


def test_every_step_writes_json(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{s}.json" for s in STEPS] + ["summary.json"])
    recs = {s: json.loads((out / f"{s}.json").read_text()) for s in STEPS}
    for name, rec in recs.items():
        assert rec["step"] == name and rec["limit_s"] > 0 and rec["command"]
    # CPU: --kernels pallas is refused (never silently run as XLA); everything else ran
    assert recs["train_pallas"]["status"] == "refused" and "needs a GPU" in recs["train_pallas"]["error"]
    assert all(r["status"] == "ok" for n, r in recs.items() if n != "train_pallas"), {
        n: (r["status"], r.get("error")) for n, r in recs.items()}
    assert recs["env"]["result"]["nas_imports"] == "ok"
    for op in ("matmul", "mlp", "dwconv"):
        res = recs[f"kernel_{op}"]["result"]
        assert res["op"] == f"elastic_{op}" and res["implementation"] == "pallas" and res["interpret"]
        assert [r["fraction"] for r in res["results"]] == [0.25, 0.5, 0.75, 1.0]
        assert set(res["recompiles_after_first_fraction"].values()) == {0}
    assert recs["weight_sharing"]["result"]["recompiles"] == 0
    epochs = recs["train_xla"]["result"]["epochs"]
    assert len(epochs) == 2 and all(e["images_per_s"] > 0 for e in epochs)


def test_summary(dry_run):
    proc, out = dry_run
    summary = json.loads((out / "summary.json").read_text())
    assert summary["dry_run"] is True and summary["elapsed_s"] <= summary["budget_s"] + 60
    assert set(summary["status"]) == set(STEPS)
    assert set(summary["figures"]) == {"kernel_matmul", "kernel_mlp", "kernel_dwconv", "weight_sharing", "train_xla"}
    assert "gpu.sh --dry-run" in proc.stdout and "train_xla" in proc.stdout


def test_a_step_over_its_limit_is_stopped_and_recorded(tmp_path):
    """The wall-clock guard: a budget too small for the steps stops them, says so, and still summarises."""
    out = tmp_path / "out"
    # an interpreter whose env step outlasts any budget, so the guard is tested on any machine speed
    # (a fast machine imports jax and the CLI inside 3 s)
    slow = tmp_path / "python"
    slow.write_text(f'#!/bin/bash\ncase "$1" in */env.py) exec sleep 60;; esac\nexec {sys.executable} "$@"\n')
    slow.chmod(0o755)
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--dry-run", "--budget", "3", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHON": str(slow)})
    assert proc.returncode == 1
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["status"]) == set(STEPS) and summary["elapsed_s"] < 60
    # the first step (importing jax and the CLI) gets the 2-3 s left and is stopped; none after it starts
    assert summary["status"]["env"] == "timeout", summary["status"]
    assert {s for n, s in summary["status"].items() if n != "env"} == {"skipped"}
    env = json.loads((out / "env.json").read_text())
    assert env["exit_code"] == 124 and env["limit_s"] <= 3 and env["result"] is None


@pytest.mark.parametrize("args, message", [
    ([], "missing the output folder"),
    (["--wheels", "/no/such/folder", "x"], "is not a folder"),
    (["--budget", "soon", "x"], "whole seconds"),
    (["--frobnicate", "x"], "unknown option --frobnicate"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    proc = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=30)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
