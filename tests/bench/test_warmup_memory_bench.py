"""bench/warmup_memory.py runs (a benchmark that does not run is a defect): tiny space, one step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from nas_cli.runs import compilation_cache_dir

ROOT = Path(__file__).resolve().parents[2]


def test_warmup_memory_bench_reports_every_phase():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "warmup_memory.py"), "--space", "mobilenetv3-tiny", "--resolution", "8",
         "--batch", "8", "--steps", "1", "--settings", "ahead"],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        # the suite's persistent XLA cache (as tests/bench/test_bench.py's scripts get): timings mean nothing here
        env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_COMPILATION_CACHE_DIR": compilation_cache_dir("bench-warmup_memory"),
             "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.3"})
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    phases = out["settings"]["ahead"]
    assert list(phases) == ["import", "params", "compile", "first_step", "steps", "evaluator", "dropped"]
    assert phases["compile"]["programs_ahead"] > 0  # the composed trainer compiles the first step ahead of it
    assert phases["compile"]["programs_compiled"] > 0 and phases["compile"]["max_temp_mb"] > 0
    assert phases["first_step"]["time_to_first_step_s"] > 0
    assert 0 <= phases["evaluator"]["accuracy"] <= 1
    # dropping every program gives their memory mappings back
    assert phases["dropped"]["memory_mappings"] < phases["evaluator"]["memory_mappings"]
