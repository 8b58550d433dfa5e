"""Tabular benchmark mode: the table evaluator, the CLI over a table, predictor-in-the-loop quality."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nas_cli.errors import UserError
from nas_cli.main import app
from nas_cli.search import SearchConfig, parse_budget, run_search
from nas_cli.search.tracking import feasible_front
from nas_cli.evaluation.table import TableEvaluator, synthetic_nasbench201_rows, write_table
from search_spaces.nasbench201 import NASBench201Space

SPACE = NASBench201Space()
ALL_NONE = "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"
ALL_CONV = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.fixture(scope="module")
def full_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("table") / "nb201.csv"
    write_table(path, synthetic_nasbench201_rows(seed=0))
    return path


def _tiny(path, rows):
    path.write_text("arch_str,val_acc,lat_ms,notes\n" + "".join(f"{a},{acc},{lat},x\n" for a, acc, lat in rows))
    return path


def test_table_evaluator_reads_columns_and_percent_accuracy(tmp_path):
    t = _tiny(tmp_path / "t.csv", [(ALL_NONE, 10.0, 0.8), (ALL_CONV, 93.5, 4.0)])
    ev = TableEvaluator(SPACE, t, {"accuracy": "val_acc", "latency": "lat_ms"})
    assert ev.metric_names() == ("accuracy", "latency")
    (m,) = ev.evaluate([SPACE.largest()])
    assert m == {"accuracy": pytest.approx(0.935), "latency": 4.0}


def test_table_errors_name_the_problem(tmp_path):
    t = _tiny(tmp_path / "t.csv", [(ALL_NONE, 0.1, 0.8)])
    with pytest.raises(UserError, match=r"lacks column\(s\) 'latency'.*arch_str, val_acc, lat_ms, notes"):
        TableEvaluator(SPACE, t, {"accuracy": "val_acc", "latency": "latency"})
    ev = TableEvaluator(SPACE, t, {"accuracy": "val_acc", "latency": "lat_ms"})
    with pytest.raises(UserError, match="not in benchmark table"):
        ev.evaluate([SPACE.largest()])
    bad = _tiny(tmp_path / "bad.csv", [(ALL_NONE.replace("none~2", "conv~2"), 0.1, 0.8)])
    with pytest.raises(UserError, match="line 2.*'conv'.*nor_conv_3x3"):
        TableEvaluator(SPACE, bad, {"accuracy": "val_acc", "latency": "lat_ms"})


def _cli(*args):
    return CliRunner().invoke(app, ["search", *map(str, args)])


def test_cli_infeasible_budget_exits_2_naming_smallest_latency(tmp_path):
    t = _tiny(tmp_path / "t.csv", [(ALL_NONE, 0.1, 0.8), (ALL_CONV, 0.93, 4.0)])
    r = _cli(tmp_path / "run", "--benchmark-table", t, "--objectives", "accuracy=val_acc,latency=lat_ms",
             "--latency-budget", "0.5ms")
    assert r.exit_code == 2
    assert "smallest latency achievable is 0.8 ms" in r.stderr and "Traceback" not in r.output


@pytest.mark.parametrize("args, needle", [
    (["--latency-budget", "soon"], "'soon' is not understood"),
    (["--latency-budget", "50%", "--algorithm", "sa"], "known algorithms: nsga2"),
    (["--latency-budget", "50%", "--objectives", "accuracy=val_acc,latency=lat_ms"], "is not in benchmark table"),
    (["--latency-budget", "50%", "--objectives", "accuracy,latency"], "lacks column(s) 'accuracy', 'latency'"),
])
def test_cli_user_errors_exit_2(tmp_path, args, needle):
    t = _tiny(tmp_path / "t.csv", [(ALL_NONE, 0.1, 0.8), (ALL_CONV, 0.93, 4.0)])
    r = _cli(tmp_path / "run", "--benchmark-table", t, *args)
    assert r.exit_code == 2, r.output
    assert needle in r.stderr


def test_cli_table_search_writes_outputs(tmp_path, full_table):
    r = _cli(tmp_path / "run", "--benchmark-table", full_table, "--latency-budget", "60%",
             "--population", "8", "--generations", "2")
    assert r.exit_code == 0, r.output
    assert "Pareto front" in r.stdout and "rank  accuracy" in r.stdout
    out = tmp_path / "run" / "search"
    pareto = json.loads((out / "pareto.json").read_text())
    assert pareto["space"] == "nas-bench-201" and pareto["objectives"] == ["accuracy", "latency"]
    assert pareto["front"][0]["rank"] == 1 and SPACE.canonical(pareto["front"][0]["arch"])
    assert (out / "pareto.csv").read_text().startswith("rank,arch,accuracy,latency_ms,flops,params\n")
    assert pareto["latency_protocol"] == "the benchmark table nb201.csv's latency column, as recorded there"


@pytest.mark.parametrize("seed", [0, 1])
def test_predictor_loop_reaches_98pct_of_true_front_with_5pct_evaluations(full_table, tmp_path, seed):
    pytest.importorskip("predictors")
    ev = TableEvaluator(SPACE, full_table, {"accuracy": "accuracy", "latency": "latency"},
                        {"flops": "flops", "params": "params"})
    n_archs = len(ev.table)
    budget = int(0.032 * n_archs)  # 500 of 15625 evaluations
    cfg = SearchConfig(budgets=(parse_budget("latency", "60%"),), population=40, generations=20,
                       evaluations=budget, initial=100, batch=50, predictor="ridge", seed=seed)
    res = run_search(ev, cfg, tmp_path)
    assert res.log[-1]["n_evaluations"] == budget <= 0.05 * n_archs
    keys = list(ev.table)
    _, true_hv = feasible_front(keys, [ev.table[k] for k in keys], res.normaliser, res.bounds)
    assert res.log[-1]["hypervolume"] >= 0.98 * true_hv


def test_free_metrics_are_served_for_every_cell_and_not_learned(tmp_path, full_table, monkeypatch):
    import nas_cli.search.predictor_loop as loop

    fitted = []
    real = loop.get_predictor
    monkeypatch.setattr(loop, "get_predictor", lambda name, **kw: fitted.append(name) or real(name, **kw))
    ev = TableEvaluator(SPACE, full_table, {"accuracy": "accuracy", "latency": "latency"}, free=["latency"])
    (est,) = ev.estimate([SPACE.largest()])
    assert est["latency"] == ev.evaluate([SPACE.largest()])[0]["latency"] and "accuracy" not in est
    cfg = SearchConfig(budgets=(parse_budget("latency", "60%"),), evaluations=40, initial=20, batch=20,
                       predictor="ridge", seed=0)
    res = run_search(ev, cfg, tmp_path / "free")
    assert fitted == ["ridge"]  # one iteration, one model: accuracy's; latency is read, not predicted
    plain = run_search(TableEvaluator(SPACE, full_table, {"accuracy": "accuracy", "latency": "latency"}), cfg,
                       tmp_path / "plain")
    # knowing every latency, the search proposes cells on the latency budget's side it measures
    assert res.log[-1]["n_evaluations"] == plain.log[-1]["n_evaluations"] == 40
    assert res.log[-1]["true_front_found"] >= plain.log[-1]["true_front_found"]


def test_free_metrics_errors_and_resume_identity(tmp_path, full_table):
    t = _tiny(tmp_path / "t.csv", [(ALL_NONE, 0.1, 0.8), (ALL_CONV, 0.93, 4.0)])
    with pytest.raises(UserError, match="--free-metrics accuracy: accuracy is what a search spends"):
        TableEvaluator(SPACE, t, {"accuracy": "val_acc", "latency": "lat_ms"}, free=["accuracy"])
    with pytest.raises(UserError, match="--free-metrics flops: benchmark table .* gives no 'flops'"):
        TableEvaluator(SPACE, t, {"accuracy": "val_acc", "latency": "lat_ms"}, free=["flops"])
    r = _cli(tmp_path / "run", "--latency-budget", "50%", "--free-metrics", "latency")
    assert r.exit_code == 2 and "--free-metrics latency only applies with --benchmark-table" in r.stderr
    base = ["--benchmark-table", full_table, "--latency-budget", "60%", "--evaluations", "24", "--initial", "12",
            "--batch", "12", "--predictor", "ridge", "--out", tmp_path / "s"]
    assert _cli(tmp_path / "run", *base, "--free-metrics", "latency").exit_code == 0
    # the same directory without the free latency is another search: refused, not silently mixed
    again = _cli(tmp_path / "run", *base)
    assert again.exit_code == 2 and "latency read for every architecture' there, 'benchmark table' now" in again.stderr
