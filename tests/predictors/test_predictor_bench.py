"""bench/predictors.py runs end to end on small synthetic tables and prints one JSON object."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from search_spaces.base import SPACES, SpaceEntry
from test_predictor_cli import NB201_HEADER, arch_rows, nb201_rows, write_csv
from test_predictors import ToySpace

BENCH = Path(__file__).resolve().parents[2] / "bench" / "predictors.py"


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
                         "--repeats", "1", "--pretrain-samples", "200", "--space", "toy-bench", "--no-baselines",
                         "--score-candidates", "0"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["sizes"] == [16, 32]  # 64 leaves too few test rows
    assert out["targets"] == ["accuracy"] and "scoring" not in out
    results = out["results"]["accuracy"]
    assert set(results) == {"ridge", "mlp", "ridge+pretrain", "mlp+pretrain"}
    for by_size in results.values():
        assert set(by_size) == {"16", "32"}
        for entry in by_size.values():
            assert {"kendall_tau", "spearman", "rmse", "fit_s"} <= set(entry)


def test_bench_on_a_development_style_table(tmp_path, capsys):
    """Every accuracy column, the one-hot sklearn baselines beside our models on structure features,
    a summary of the margins, and the scoring time of the chosen predictor."""
    rows = [r[:2] + [r[2], f"{float(r[2]) * 0.6:.4f}", r[3]] for r in nb201_rows(70, 4)]
    header = NB201_HEADER[:3] + ["imagenet16_120_test_acc"] + NB201_HEADER[3:]
    data = write_csv(tmp_path / "dev.csv", header, rows)
    bench = load_bench()
    rc = bench.main(["--table", str(data), "--sizes", "20,40", "--test-rows", "25", "--models", "ridge,rf",
                     "--repeats", "2", "--score-candidates", "500", "--score-model", "rf"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["targets"] == ["cifar100_test_acc", "imagenet16_120_test_acc"]
    assert out["features"] == "structure" and out["baseline_features"] == "onehot" and out["test_rows"] == 25
    for target in out["targets"]:
        labels = set(out["results"][target])
        assert labels == {"sklearn_rf(onehot)", "sklearn_gb(onehot)", "ridge", "rf"}
        assert set(out["summary"][target]) == {"ridge", "rf"}
        assert set(out["summary"][target]["rf"]["margin_over_best_baseline"]) == {"20", "40"}
    assert out["scoring"]["candidates"] == 500 and out["scoring"]["predict_s"] >= 0


def test_bench_skips_an_absent_development_table(tmp_path, capsys):
    bench = load_bench()
    assert bench.main(["--table", str(tmp_path / "shared" / "nb201_dev.csv")]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("skipped: the development table")


def test_bench_bad_input_is_one_error_line(tmp_path, capsys):
    bench = load_bench()
    assert bench.main([str(tmp_path / "missing.csv")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
