"""bench/predictors.py runs end to end on a small synthetic arch table and prints one JSON object."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from search_spaces.base import SPACES, SpaceEntry
from test_predictor_cli import arch_rows, write_csv
from test_predictors import ToySpace

BENCH = Path(__file__).resolve().parents[1] / "bench" / "predictors.py"


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_predictors", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_reports_every_model_with_and_without_pretraining(tmp_path, capsys):
    data = write_csv(tmp_path / "measured.csv", ["arch", "accuracy", "id"], arch_rows(50, 3))
    bench = load_bench()
    with SPACES.scoped("toy-bench", SpaceEntry(ToySpace)):
        rc = bench.main([str(data), "--ignore", "id", "--sizes", "16,32,64", "--models", "ridge,mlp",
                         "--repeats", "1", "--pretrain-samples", "200", "--space", "toy-bench"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sizes"] == [16, 32]  # 64 leaves too few test rows
    assert set(out["results"]) == {"ridge", "mlp", "ridge+pretrain", "mlp+pretrain"}
    for by_size in out["results"].values():
        assert set(by_size) == {"16", "32"}
        for entry in by_size.values():
            assert {"kendall_tau", "spearman", "rmse", "fit_s"} <= set(entry)


def test_bench_bad_input_is_one_error_line(tmp_path, capsys):
    bench = load_bench()
    assert bench.main([str(tmp_path / "missing.csv")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
