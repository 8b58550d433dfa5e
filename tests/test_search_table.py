"""Tabular benchmark mode: the table evaluator, the CLI over a table, predictor-in-the-loop quality."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nas_cli.errors import UserError
from nas_cli.main import app
from nas_cli.search import SearchConfig, parse_budget, run_search
from nas_cli.search.tracking import feasible_front
from nas_cli.table_eval import TableEvaluator, synthetic_nasbench201_rows, write_table
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
    assert (out / "pareto.csv").read_text().startswith("arch,accuracy,latency_ms,flops,params\n")


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
