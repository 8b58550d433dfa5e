"""bench/search_command.py times `nas search` on a table as a user runs it and accounts for every CPU second."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from nas_cli.evaluation.table import synthetic_nasbench201_rows, write_table

BENCH = Path(__file__).resolve().parents[2] / "bench" / "search_command.py"


def test_bench_times_the_command_and_its_children(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_search_command", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    table = tmp_path / "nb201.csv"
    write_table(table, synthetic_nasbench201_rows(seed=0))
    assert bench.main(["--table", str(table), "--variants", "ridge+free", "--evaluations", "12",
                       "--objectives", "accuracy=accuracy,latency=latency"]) == 0
    out = json.loads(capsys.readouterr().out)
    (run,) = out["runs"]
    assert run["variant"] == "ridge+free" and run["evaluations"] == 12 and run["run"] == 1
    # the command's own CPU (sampled before it exits) is part of what wait4 reports for it
    assert 0 < run["cpu_self_seconds"] <= run["cpu_seconds"] + 0.5
    assert run["max_children"] == 0 and run["cpu_children_seconds"] == 0.0
    assert run["wall_seconds"] >= run["overhead_seconds"] > 0
    assert {"fit", "score", "write"} <= set(run["parts_seconds"])
    assert 0 <= run["hv_ratio"] <= 1 and 0 <= run["front_found"] <= 1
