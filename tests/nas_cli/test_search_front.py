"""The predictor loop's ``front`` proposal: candidates ranked by front against what is measured, the
pool (every cell of a small space, else random ones plus the front's neighbours), the features
option, and the true-front figures a benchmark table reports."""

from __future__ import annotations

import numpy as np
import pytest

from nas_cli.errors import UserError
from nas_cli.search import SearchConfig, parse_budget, run_search
from nas_cli.search.predictor_loop import CandidatePool
from nas_cli.search.selection import select_front
from nas_cli.evaluation.table import TableEvaluator, synthetic_nasbench201_rows, write_table
from search_spaces import get_space

NB = get_space("nas-bench-201")


def test_select_front_skips_candidates_that_measured_ones_dominate():
    measured = np.asarray([[0.2, 0.2]])
    F = np.asarray([[0.3, 0.3],   # dominated by the measured point: a later front
                    [0.1, 0.5],   # not dominated: first
                    [0.5, 0.1],   # not dominated: first
                    [0.4, 0.4]])  # dominated by the measured point and by candidate 0
    cv = np.zeros(4)
    assert sorted(select_front(F, cv, 2, measured)) == [1, 2]
    assert select_front(F, cv, 4, measured)[2:] == [0, 3]
    # predicted infeasible candidates come last, least infeasible first
    assert select_front(F, np.asarray([0.5, 0.0, 0.1, 0.0]), 4, measured) == [1, 3, 2, 0]


def test_pool_holds_every_cell_of_a_small_space_and_neighbours_of_a_large_one():
    pool = CandidatePool(NB, "structure", 20_000)
    keys, archs, X = pool.candidates([], np.random.default_rng(0))
    assert pool.exhaustive and len(keys) == len(set(keys)) == 15625 and X.shape == (15625, len(NB.structure_feature_names()) + len(NB.feature_names()))
    small = CandidatePool(NB, "onehot", 10)
    key = NB.encode(NB.largest())
    near = small.neighbours([key])
    assert len(near) == 6 * 4 and key not in near
    keys, _, X = small.candidates([key], np.random.default_rng(0))
    assert set(near) <= set(keys) and X.shape[1] == len(NB.feature_names())


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("nb") / "synthetic.csv"
    write_table(path, synthetic_nasbench201_rows(seed=0))
    return path


@pytest.mark.parametrize("features", ["structure", "onehot"])
def test_front_proposal_beats_random_and_reports_the_true_front(table, tmp_path, features):
    ev = TableEvaluator(NB, table, {"accuracy": "accuracy", "latency": "latency"})
    budget = (parse_budget("latency", "60%"),)
    cfg = SearchConfig(budgets=budget, evaluations=60, initial=20, batch=20, predictor="ridge", seed=0,
                       features=features)
    res = run_search(ev, cfg, tmp_path / "front")
    rnd = run_search(ev, SearchConfig(budgets=budget, algorithm="random", population=58, generations=1),
                     tmp_path / "random")
    last, base = res.log[-1], rnd.log[-1]
    assert last["n_evaluations"] == base["n_evaluations"] == 60
    assert 0 < last["true_front_found"] <= 1 and last["true_front_size"] > 0
    assert last["true_hypervolume_ratio"] > base["true_hypervolume_ratio"]
    # same seed, same search
    again = run_search(ev, cfg, tmp_path / "again")
    assert [r["hypervolume"] for r in again.log] == [r["hypervolume"] for r in res.log]


def test_explore_uses_the_predictive_std(table, tmp_path):
    ev = TableEvaluator(NB, table, {"accuracy": "accuracy", "latency": "latency"})
    budget = (parse_budget("latency", "60%"),)
    kw = dict(budgets=budget, evaluations=40, initial=20, batch=20, predictor="gp", seed=0)
    plain = run_search(ev, SearchConfig(**kw), tmp_path / "a")
    bold = run_search(ev, SearchConfig(explore=3.0, **kw), tmp_path / "b")
    measured = [(d / "cache.jsonl").read_text() for d in (plain.out_dir, bold.out_dir)]
    # the same initial design, then other picks: optimism moved what was measured next
    assert measured[0].splitlines()[:20] == measured[1].splitlines()[:20] and measured[0] != measured[1]


def test_accuracy_is_fitted_by_rank_and_costs_as_they_are(table, tmp_path, monkeypatch):
    import nas_cli.search.predictor_loop as loop

    fitted = []
    real = loop.get_predictor

    def spy(name, seed=0, **config):
        model = real(name, seed=seed, **config)
        fitted.append(model)
        return model

    monkeypatch.setattr(loop, "get_predictor", spy)
    ev = TableEvaluator(NB, table, {"accuracy": "accuracy", "latency": "latency"})
    cfg = SearchConfig(budgets=(parse_budget("latency", "60%"),), evaluations=30, initial=20, batch=10,
                       predictor="gp", objectives=("accuracy", "latency"), seed=0)
    run_search(ev, cfg, tmp_path / "s")
    # one iteration: the accuracy model first (objective order), then latency
    assert [m.targets for m in fitted] == ["rank", "standard"]


@pytest.mark.parametrize("field, value, match", [
    ("proposal", "grid", "--proposal 'grid' is unknown; use one of: front, inner"),
    ("features", "pixels", "--features 'pixels' is unknown; use one of: structure, onehot, structure\\+zc"),
    ("features", "structure+zc", "--features structure\\+zc computes the zero-cost proxies of every candidate"),
    ("explore", -1.0, "--explore -1.0 must be a finite number >= 0"),
    ("pool", 0, "--pool 0 is too small"),
])
def test_bad_front_settings_are_one_line_errors(field, value, match):
    import re

    from nas_cli.commands.flags import FLAGS
    from nas_cli.errors import one_line

    with pytest.raises(UserError) as e:
        SearchConfig(evaluations=10, **{field: value})
    # the config names the field; the CLI prints its flag (nas_cli.commands.flags.FLAGS)
    assert re.search(match.replace("--", ""), str(e.value)), str(e.value)
    assert re.search(match, one_line(e.value, names=FLAGS)[0]), one_line(e.value, names=FLAGS)[0]


def test_cli_front_search_prints_the_true_front_figures(table, tmp_path):
    from typer.testing import CliRunner

    from nas_cli.main import app

    args = ["search", str(tmp_path / "run"), "--benchmark-table", str(table), "--latency-budget", "60%",
            "--evaluations", "30", "--initial", "10", "--batch", "20", "--predictor", "ridge"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    # iteration lines are progress (stderr); the front itself is the result (stdout)
    assert "of the true front's hypervolume" in r.stderr and "of its members found" in r.stderr
    assert "Pareto front" in r.stdout
    bad = CliRunner().invoke(app, args[:-1] + ["ridge", "--proposal", "grid"])
    assert bad.exit_code == 2 and "--proposal 'grid' is unknown; use one of: front, inner" in bad.output
    assert "Traceback" not in bad.output


class _TableProxies:
    """A stand-in for ZeroCostProxies on a benchmark table: one proxy, the cell's true accuracy
    (a perfect proxy), and the cost fields the search logs."""

    proxies = ("synflow",)

    def __init__(self, rows):
        self.truth = {r["arch_str"]: float(r["accuracy"]) for r in rows}
        self.calls = 0

    def __call__(self, arch):
        self.calls += 1
        return {"synflow": self.truth[NB.encode(arch)]}

    def cost(self):
        return {"subnets": self.calls, "seconds_per_subnet": 0.0, "compile_seconds": 0.0}


class _RunTable(TableEvaluator):
    run = object()  # what zero_cost_features looks for: a supernet run to compute proxies through


def test_zero_cost_features_in_the_predictor_loop(table, tmp_path, monkeypatch):
    import search_spaces.zero_cost

    made = []

    def fake_of_run(run):
        made.append(_TableProxies(synthetic_nasbench201_rows(seed=0)))
        return made[-1]

    monkeypatch.setattr(search_spaces.zero_cost, "zero_cost_of_run", fake_of_run)
    budget = (parse_budget("latency", "60%"),)
    kw = dict(budgets=budget, evaluations=60, initial=20, batch=20, predictor="ridge", seed=0, pool=500)
    ev = _RunTable(NB, table, {"accuracy": "accuracy", "latency": "latency"})
    res = run_search(ev, SearchConfig(features="structure+zc", **kw), tmp_path / "zc")
    logged = [r["zero_cost"] for r in res.log if "zero_cost" in r]
    assert logged and logged[-1]["subnets"] == made[-1].calls > 500  # every candidate, each once (cached)
    # with a perfect proxy beside the structure, the loop's first predicted batch ranks near-perfectly
    first = next(r for r in res.log if "batch_kendall_tau" in r)
    assert first["batch_kendall_tau"] > 0.8, first
    again = run_search(ev, SearchConfig(features="structure+zc", **kw), tmp_path / "zc2")
    assert [r["hypervolume"] for r in again.log] == [r["hypervolume"] for r in res.log]
    # a table search has no supernet to compute proxies through
    with pytest.raises(UserError, match="zero-cost proxies are computed through a trained supernet"):
        run_search(TableEvaluator(NB, table, {"accuracy": "accuracy", "latency": "latency"}),
                   SearchConfig(features="zc", **kw), tmp_path / "table")

