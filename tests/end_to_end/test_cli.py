"""End to end through the CLI: a one-epoch tiny run, search under a budget, export; and the errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nas_cli.main import app

runner = CliRunner()

TINY_TRAIN = ["--dataset", "digits", "--epochs", "1", "--batch-size", "32", "--limit-train", "256",
              "--calib-images", "64", "--seed", "0"]


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "digits"
    result = invoke("train-supernet", *TINY_TRAIN, "--out", out)
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def searched(run_dir: Path) -> Path:
    # 150% of the largest subnet's latency: at 8 px the tiny space's latencies are mostly per-call
    # overhead (largest ~1.1-2x the smallest), and on a loaded machine a 90% budget fell below the
    # smallest subnet's measured latency (a correct one-line refusal, but not this test's subject)
    result = invoke("search", run_dir, "--latency-budget", "150%", "--population", "6", "--generations", "2",
                    "--seed", "0")
    assert result.exit_code == 0, result.output
    return run_dir / "search"


def test_train_writes_a_run(run_dir: Path):
    assert json.loads((run_dir / "config.json").read_text())["epochs"] == 1
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    for key in ("epoch", "loss", "val_acc_largest", "val_acc_smallest"):
        assert key in record
    assert np.isfinite(record["loss"])
    assert (run_dir / "checkpoint").is_dir()
    final = json.loads((run_dir / "final.json").read_text())
    assert 0.0 <= final["test_acc_largest"] <= 1.0


def test_search_writes_a_feasible_front(searched: Path):
    pareto = json.loads((searched / "pareto.json").read_text())
    assert pareto["front"], "empty front"
    budget = pareto["budgets"]["latency"]["value"]
    for row in pareto["front"]:
        assert row["latency_ms"] <= budget + 1e-9
        assert 0.0 <= row["accuracy"] <= 1.0
    header = (searched / "pareto.csv").read_text().splitlines()[0]
    assert header.split(",")[:6] == ["rank", "arch", "accuracy", "latency_ms", "flops", "params"]
    assert pareto["latency_protocol"].startswith("measured here (batch 1, jax")
    assert (searched / "pareto.png").stat().st_size > 0
    # measured latencies were timed beside reference subnets and put at the search's first level
    record = json.loads((searched / "latency_calibration.json").read_text())
    assert record["mode"] == "measured" and record["level_ms"] > 0 and len(record["references"]) == 3


def test_measured_latencies_are_put_at_the_level_of_the_searchs_start(run_dir: Path, tmp_path: Path, monkeypatch):
    import predictors.latency.timing as timing
    from nas_cli.evaluation.supernet import open_run_evaluator

    out = tmp_path / "s"
    out.mkdir()
    (out / "latency_calibration.json").write_text(json.dumps({"mode": "measured", "level_ms": 2.0}))
    ev = open_run_evaluator(run_dir, calibrate_in=out)  # a resumed search: the start level is kept

    def fake(programs, **kw):  # subnets 1.0 ms; references at level 4.0 (the device half as fast)
        return [{"latency_ms": 1.0} for _ in programs[:-3]] + [{"latency_ms": 4.0} for _ in programs[-3:]]

    monkeypatch.setattr(timing, "time_interleaved", fake)
    space = ev.space
    assert ev.measured_latencies([space.smallest(), space.largest()]) == [0.5, 0.5]


def test_predictor_sample_measures_distinct_subnets_once(run_dir: Path, tmp_path: Path):
    first = invoke("predictor", "sample", run_dir, "--n", "5", "--seed", "3", "--out", tmp_path / "a.csv")
    assert first.exit_code == 0, first.output
    rows = (tmp_path / "a.csv").read_text().splitlines()
    assert rows[0] == "arch,accuracy,flops,params" and len(rows) == 6
    archs = [r.split(",")[0] for r in rows[1:]]
    assert len(set(archs)) == 5
    assert all(0.0 <= float(r.split(",")[1]) <= 1.0 for r in rows[1:])
    cache = run_dir / "subnet_accuracy.jsonl"
    measured = cache.read_text()
    assert all(a in measured for a in archs)
    again = invoke("predictor", "sample", run_dir, "--n", "5", "--seed", "3", "--out", tmp_path / "b.csv")
    assert again.exit_code == 0, again.output
    assert (tmp_path / "b.csv").read_text() == (tmp_path / "a.csv").read_text()
    assert cache.read_text() == measured  # nothing was measured twice


def test_predictor_sample_latencies_share_one_device_speed(run_dir: Path, tmp_path: Path, monkeypatch):
    calls = []

    def fake(programs, **kw):  # two chunks: the device twice as slow in the second
        calls.append(len(programs))
        level = 1.0 if len(calls) == 1 else 2.0
        return [{"latency_ms": level} for _ in programs[:-3]] + [{"latency_ms": level} for _ in programs[-3:]]

    monkeypatch.setattr("predictors.latency.timing.time_interleaved", fake)
    monkeypatch.setattr("predictors.latency.timing.CHUNK", 3)
    res = invoke("predictor", "sample", run_dir, "--n", "5", "--latency", "--out", tmp_path / "lat.csv")
    assert res.exit_code == 0, res.output
    rows = (tmp_path / "lat.csv").read_text().splitlines()
    assert rows[0] == "arch,accuracy,flops,params,latency_ms"
    # every subnet took the references' time in its own chunk: at one level they are all equal
    assert calls == [6, 5] and len({float(r.split(",")[-1]) for r in rows[1:]}) == 1


def test_predictor_fits_a_sample_with_the_runs_space(run_dir: Path, tmp_path: Path):
    data = tmp_path / "sample.csv"
    assert invoke("predictor", "sample", run_dir, "--n", "12", "--out", data).exit_code == 0
    fitted = invoke("predictor", "fit", data, "--target", "accuracy", "--model", "ridge", "--space", run_dir,
                    "--folds", "3", "--out", tmp_path / "model")
    assert fitted.exit_code == 0, fitted.output
    saved = "".join(p.read_text() for p in (tmp_path / "model").glob("*.json"))
    assert '"resolutions": [' in saved and '"in_channels": 1' in saved  # the run's space options travel along
    scored = invoke("predictor", "evaluate", tmp_path / "model", data, "--target", "accuracy", "--json")
    assert scored.exit_code == 0 and json.loads(scored.output)["n"] == 12


def test_search_with_a_latency_table_remeasures_the_front(run_dir: Path, tmp_path: Path):
    lut = tmp_path / "lut.json"
    made = invoke("latency", "profile", "--space", "mobilenetv3-tiny", "--resolution", "8", "--in-channels", "1",
                  "--num-classes", "10", "--repeats", "3", "--calib-samples", "1", "--out", lut)
    assert made.exit_code == 0, made.output
    result = invoke("search", run_dir, "--latency-budget", "90%", "--latency-table", lut, "--population", "4",
                    "--generations", "1", "--out", tmp_path / "s")
    assert result.exit_code == 0, result.output
    front = json.loads((tmp_path / "s" / "pareto.json").read_text())["front"]
    assert front and all(row["latency_measured_ms"] > 0 for row in front)
    assert "latency_measured_ms" in (tmp_path / "s" / "pareto.csv").read_text().splitlines()[0]
    assert "measured" in result.output
    # the table's predictions were put at the device's speed now, and a resumed search keeps that scale
    cal = json.loads((tmp_path / "s" / "latency_calibration.json").read_text())
    assert cal["scale"] > 0 and cal["level_now_ms"] > 0 and "scaled by" in result.output
    again = invoke("search", run_dir, "--latency-budget", "90%", "--latency-table", lut, "--population", "4",
                   "--generations", "1", "--out", tmp_path / "s")
    assert again.exit_code == 0, again.output
    assert json.loads((tmp_path / "s" / "latency_calibration.json").read_text()) == cal


def test_export_matches_the_supernet_and_reloads(run_dir: Path, searched: Path, tmp_path: Path):
    from nas_cli.data import load_dataset
    from nas_cli.export import load_subnet

    out = tmp_path / "export"
    result = invoke("export", "subnet", run_dir, "--rank", "1", "--out", out)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "subnet.json").read_text())
    pareto = json.loads((searched / "pareto.json").read_text())
    assert info["arch"] == pareto["front"][0]["arch"]
    assert info["parity_max_abs_diff"] <= 1e-4
    for key in ("accuracy", "latency_ms", "flops", "params", "run"):
        assert key in info
    subnet = load_subnet(out)
    test = load_dataset("digits").test
    acc = float((subnet.predict(test.images).argmax(-1) == test.labels).mean())
    assert acc == pytest.approx(info["test_accuracy"], abs=1e-9)
    # a second export into the same folder refuses to overwrite finished work
    again = runner.invoke(app, ["export", "subnet", str(run_dir), "--rank", "1", "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output


def test_export_by_arch_string(run_dir: Path, tmp_path: Path):
    arch = "r8-k3e3-k5e6.k3e3-k3e6"
    result = invoke("export", "subnet", run_dir, "--arch", arch, "--out", tmp_path / "e")
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e" / "subnet.json").read_text())["arch"] == arch


def test_invalid_arch_string_names_the_field(run_dir: Path, tmp_path: Path):
    result = runner.invoke(app, ["export", "subnet", str(run_dir), "--arch", "r8-k4e3-k3e3-k3e3",
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "stage 1 block 1: kernel 4 not in {3, 5}" in result.output
    assert not (tmp_path / "x" / "subnet.json").exists()


def test_infeasible_budget_names_the_smallest_latency(run_dir: Path, tmp_path: Path):
    result = runner.invoke(app, ["search", str(run_dir), "--latency-budget", "0.0001ms",
                                 "--out", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert "smallest" in result.output.lower() and "ms" in result.output


def test_run_dir_that_is_not_a_run(tmp_path: Path):
    for args in (["search", str(tmp_path), "--latency-budget", "1ms"],
                 ["export", "subnet", str(tmp_path), "--rank", "1", "--out", str(tmp_path / "e")]):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert "is not a training run" in result.output


def test_missing_data_dir(tmp_path: Path):
    missing = tmp_path / "nowhere"
    result = runner.invoke(app, ["train-supernet", "--dataset", "mnist", "--data-dir", str(missing),
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert str(missing) in result.output and "train-images-idx3-ubyte.gz" in result.output
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["train-supernet", "--dataset", "cifar10", "--data-dir", str(empty),
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "data_batch_1.bin" in result.output


def test_bad_options_are_one_line_errors(tmp_path: Path):
    cases = [
        (["--dataset", "imagenet"], "imagenet"),
        (["--space", "nope"], "nope"),
        (["--epochs", "0"], "--epochs 0"),
        (["--recipe", "magic"], "magic"),
    ]
    for extra, needle in cases:
        result = runner.invoke(app, ["train-supernet", *extra, "--out", str(tmp_path / "r")])
        assert result.exit_code == 2, (extra, result.output)
        assert needle in result.output
    bad = tmp_path / "cfg.json"
    bad.write_text(json.dumps({"epochz": 3}))
    result = runner.invoke(app, ["train-supernet", "--config", str(bad), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "epochz" in result.output


def test_existing_run_is_not_overwritten(run_dir: Path):
    before = (run_dir / "metrics.jsonl").read_text()
    result = runner.invoke(app, ["train-supernet", *TINY_TRAIN, "--out", str(run_dir)])
    assert result.exit_code == 2 and "already holds a training run" in result.output
    assert (run_dir / "metrics.jsonl").read_text() == before
