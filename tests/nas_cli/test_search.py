"""The search library: operators, budgets, one conformance suite over every strategy, resume."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from nas_cli.errors import UserError
from nas_cli.evaluation import Evaluator
from nas_cli.search import (
    ALGORITHMS,
    SearchConfig,
    parse_budget,
    parse_objectives,
    point_crossover,
    repair_genomes,
    resample_mutation,
    run_search,
    sample_genomes,
    select_diverse,
    uniform_crossover,
)
from nas_cli.search.operators import canonical_keys, n_choices
from search_spaces.base import ArchError, Gene, SearchSpace


@dataclasses.dataclass(frozen=True)
class ToyArch:
    depth: int
    widths: tuple[int, ...]


class ToySpace(SearchSpace):
    """depth in {1,2,3} switches off trailing width genes: 3 + 9 + 27 = 39 architectures."""

    name = "toy"
    _genes = (Gene("depth", (1, 2, 3)),) + tuple(Gene(f"w{i}", (8, 16, 32)) for i in range(3))

    @property
    def genes(self):
        return self._genes

    def from_genome(self, genome):
        g = [int(x) for x in genome]
        depth = self._genes[0].choices[g[0]]
        return ToyArch(depth, tuple(self._genes[1 + i].choices[g[1 + i]] for i in range(depth)))

    def to_genome(self, arch):
        g = [self._genes[0].choices.index(arch.depth)] + [0, 0, 0]
        for i, w in enumerate(arch.widths):
            g[1 + i] = self._genes[1 + i].choices.index(w)
        return np.asarray(g, np.int64)

    def encode(self, arch):
        return "d{}-".format(arch.depth) + "-".join(str(w) for w in arch.widths)

    def decode(self, text):
        try:
            d, *ws = text.split("-")
            arch = ToyArch(int(d[1:]), tuple(int(w) for w in ws))
            assert len(arch.widths) == arch.depth
            self.to_genome(arch)
        except (ValueError, AssertionError, IndexError):
            raise ArchError(f"bad toy arch {text!r}") from None
        return arch


class Killed(RuntimeError):
    pass


class ToyEvaluator(Evaluator):
    """Analytic accuracy/latency with an accuracy-latency trade-off; counts and can fail on demand."""

    def __init__(self, fail_after: int | None = None):
        self.space = ToySpace()
        self.calls: list[str] = []
        self.fail_after = fail_after

    def metric_names(self):
        return ("accuracy", "latency", "flops", "params")

    def _truth(self, a):
        cost = sum(w * (i + 1) for i, w in enumerate(a.widths))
        h = (sum(a.widths) % 7) / 700.0  # a little structure a predictor must learn
        return {"accuracy": 0.5 + 0.45 * (1 - np.exp(-cost / 60.0)) + h, "latency": 0.5 + cost / 40.0,
                "flops": float(cost * 1000), "params": float(sum(a.widths) * 10)}

    def evaluate(self, archs):
        out = []
        for a in archs:
            if self.fail_after is not None and len(self.calls) >= self.fail_after:
                raise Killed("simulated crash")
            self.calls.append(self.space.encode(a))
            out.append(self._truth(a))
        return out

    def estimate(self, archs):
        return [{"flops": self._truth(a)["flops"]} for a in archs]


SPACE = ToySpace()
BUDGET = (parse_budget("latency", "70%"),)


# --- operators ---------------------------------------------------------------------------------


def _valid(X):
    k = n_choices(SPACE)
    assert X.dtype.kind == "i" and np.all(X >= 0) and np.all(X < k)
    assert np.array_equal(repair_genomes(SPACE, X), X), "not canonical"


def test_operators_keep_genomes_valid_and_canonical():
    rng = np.random.default_rng(0)
    X = sample_genomes(SPACE, 64, rng)
    _valid(X)
    parents = np.stack([X[:32], X[32:]])  # (2, M, V)
    for child in (uniform_crossover(parents, rng), point_crossover(parents, rng, 2)):
        assert child.shape == parents.shape
        # every gene comes from one of the two parents
        assert np.all((child == parents[0]) | (child == parents[1]))
        _valid(repair_genomes(SPACE, child.reshape(-1, 4)))
    M = resample_mutation(X, n_choices(SPACE), 1.0, rng)
    assert np.all(M != X) and np.all(M < n_choices(SPACE))  # prob 1: every gene moves to another choice
    _valid(repair_genomes(SPACE, M))
    assert np.array_equal(resample_mutation(X, n_choices(SPACE), 0.0, rng), X)


def test_repair_resets_switched_off_genes():
    X = np.asarray([[0, 2, 2, 1], [1, 1, 2, 2]])
    assert repair_genomes(SPACE, X).tolist() == [[0, 2, 0, 0], [1, 1, 2, 0]]
    assert canonical_keys(SPACE, X) == ["d1-32", "d2-16-32"]


def test_operators_are_deterministic_in_the_generator():
    a = sample_genomes(SPACE, 10, np.random.default_rng(3))
    b = sample_genomes(SPACE, 10, np.random.default_rng(3))
    assert np.array_equal(a, b)


def test_select_diverse_prefers_feasible_front_then_least_infeasible():
    F = np.asarray([[0.1, 0.9], [0.9, 0.1], [0.5, 0.5], [0.6, 0.6], [0.0, 0.0]])
    cv = np.asarray([0, 0, 0, 0, 0.3])
    assert select_diverse(F, cv, 3) == [0, 1, 2]
    assert select_diverse(F, cv, 5)[-1] == 4


# --- budgets and objectives --------------------------------------------------------------------


@pytest.mark.parametrize("text, value, relative", [
    ("3.5ms", 3.5, False), ("3.5", 3.5, False), (" 2 ms", 2.0, False), ("60%", 60.0, True), ("12.5 %", 12.5, True),
])
def test_latency_budget_forms(text, value, relative):
    b = parse_budget("latency", text)
    assert (b.value, b.relative) == (value, relative)


def test_count_budget_forms():
    assert parse_budget("flops", "300M").value == 300e6
    assert parse_budget("params", "1.5k").value == 1500
    assert parse_budget("flops", "2e9").value == 2e9
    assert parse_budget("flops", "50%").resolve(1000.0) == 500.0


@pytest.mark.parametrize("metric, text", [
    ("latency", "fast"), ("latency", "-1ms"), ("latency", "0"), ("latency", "3.5s"), ("latency", "nan"),
    ("latency", "%"), ("flops", "3X"), ("params", ""),
])
def test_bad_budgets_name_value_and_forms(metric, text):
    with pytest.raises(UserError) as e:
        parse_budget(metric, text)
    msg = str(e.value)
    assert repr(text.strip()) in msg and "%" in msg


def test_objectives_parsing():
    assert parse_objectives("accuracy,latency") == (("accuracy", None), ("latency", None))
    assert parse_objectives("accuracy=val_acc, latency=lat") == (("accuracy", "val_acc"), ("latency", "lat"))
    for bad, needle in [("accuracy,speed", "speed"), ("accuracy", "at least two"), ("accuracy,accuracy", "twice"),
                        ("accuracy=,latency", "column")]:
        with pytest.raises(UserError, match=needle):
            parse_objectives(bad)


def test_infeasible_budget_names_smallest_latency(tmp_path):
    cfg = SearchConfig(budgets=(parse_budget("latency", "0.1ms"),), population=4, generations=1)
    with pytest.raises(UserError, match=r"smallest latency achievable is 0\.7"):
        run_search(ToyEvaluator(), cfg, tmp_path)


def test_corrected_budget_after_infeasible_one_runs_in_same_out(tmp_path):
    with pytest.raises(UserError):
        run_search(ToyEvaluator(), SearchConfig(budgets=(parse_budget("latency", "0.1"),)), tmp_path)
    cfg = SearchConfig(budgets=BUDGET, population=4, generations=1)
    run_search(ToyEvaluator(), cfg, tmp_path)
    assert _front(tmp_path)


def test_unknown_algorithm_lists_known(tmp_path):
    with pytest.raises(UserError, match="nsga2, nsga3, agemoea2, moead, random"):
        run_search(ToyEvaluator(), SearchConfig(budgets=BUDGET, algorithm="cmaes"), tmp_path)


# --- one conformance suite over every strategy --------------------------------------------------


def _front(out):
    return json.loads((out / "pareto.json").read_text())["front"]


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_strategy_conformance(name, tmp_path):
    cfg = SearchConfig(budgets=BUDGET, algorithm=name, population=6, generations=3, seed=1)
    ev = ToyEvaluator()
    res = run_search(ev, cfg, tmp_path / "a")
    # runs, never measures an architecture twice, logs one line per generation
    assert len(ev.calls) == len(set(ev.calls)) and len(res.log) == 3
    assert [r["iteration"] for r in res.log] == [1, 2, 3]
    assert all(np.isfinite(r["hypervolume"]) and r["hypervolume"] > 0 for r in res.log)
    # feasible, canonical, ranked outputs
    bound = res.bounds["latency"]
    front = _front(tmp_path / "a")
    assert front and [r["rank"] for r in front] == list(range(1, len(front) + 1))
    assert all(r["latency_ms"] <= bound for r in front)
    assert all(SPACE.canonical(r["arch"]) == r["arch"] for r in front)
    accs = [r["accuracy"] for r in front]
    assert accs == sorted(accs, reverse=True)
    for f in ("pareto.json", "pareto.csv", "pareto.png", "search_log.jsonl", "cache.jsonl"):
        assert (tmp_path / "a" / f).stat().st_size > 0
    # same seed, same result
    run_search(ToyEvaluator(), cfg, tmp_path / "b")
    assert _front(tmp_path / "b") == front


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_strategy_conformance_as_inner_search_of_the_predictor_loop(name, tmp_path):
    if not _predictor_available():
        pytest.skip("predictors package not importable")
    cfg = SearchConfig(budgets=BUDGET, algorithm=name, population=6, generations=2, seed=2,
                       evaluations=14, initial=6, batch=4, predictor="ridge", proposal="inner")
    ev = ToyEvaluator()
    res = run_search(ev, cfg, tmp_path / "a")
    assert len(ev.calls) == len(set(ev.calls)) == 14 == res.log[-1]["n_evaluations"]
    front = _front(tmp_path / "a")
    assert front and all(r["latency_ms"] <= res.bounds["latency"] for r in front)
    run_search(ToyEvaluator(), cfg, tmp_path / "b")
    assert _front(tmp_path / "b") == front


def test_budgets_are_constraints_not_penalties(tmp_path):
    cfg = SearchConfig(budgets=(parse_budget("latency", "1.6"), parse_budget("flops", "20k")),
                       population=6, generations=3)
    run_search(ToyEvaluator(), cfg, tmp_path)
    front = _front(tmp_path)
    assert front and all(r["latency_ms"] <= 1.6 and r["flops"] <= 20000 for r in front)
    cache = [json.loads(line) for line in (tmp_path / "cache.jsonl").read_text().splitlines()]
    assert any(c["metrics"]["latency"] > 1.6 for c in cache)  # infeasible ones were seen, and excluded


def test_other_settings_in_same_out_is_an_error(tmp_path):
    run_search(ToyEvaluator(), SearchConfig(budgets=BUDGET, population=4, generations=1), tmp_path)
    with pytest.raises(UserError, match="generations: 1 there, 2 now"):
        run_search(ToyEvaluator(), SearchConfig(budgets=BUDGET, population=4, generations=2), tmp_path)


# --- resume ---------------------------------------------------------------------------------


def _predictor_available():
    try:
        from predictors import get_predictor

        get_predictor("ridge")
        return True
    except Exception:
        return False


def _log(out_dir):
    """The search log without its timings (``seconds``), which no two runs share."""
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"}
            for line in (out_dir / "search_log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("mode", ["plain", "predictor"])
def test_resume_after_kill_equals_uninterrupted(mode, tmp_path):
    if mode == "predictor" and not _predictor_available():
        pytest.skip("predictors package not importable")
    kw = dict(evaluations=20, initial=8, batch=4, predictor="ridge") if mode == "predictor" else {}
    cfg = SearchConfig(budgets=BUDGET, population=6, generations=4, seed=3, **kw)
    full = ToyEvaluator()
    run_search(full, cfg, tmp_path / "full")

    with pytest.raises(Killed):
        run_search(ToyEvaluator(fail_after=13), cfg, tmp_path / "cut")
    assert (tmp_path / "cut" / "state.pkl").exists()
    assert not (tmp_path / "cut" / "pareto.json").exists()
    again = ToyEvaluator()
    run_search(again, cfg, tmp_path / "cut")

    assert _front(tmp_path / "cut") == _front(tmp_path / "full")
    measured_before = 13
    assert len(again.calls) == len(full.calls) - measured_before  # nothing measured twice
    assert _log(tmp_path / "cut") == _log(tmp_path / "full")
    # a finished search re-run is a no-op that rewrites the same outputs
    idle = ToyEvaluator()
    run_search(idle, cfg, tmp_path / "cut")
    assert idle.calls == [] and _front(tmp_path / "cut") == _front(tmp_path / "full")


@pytest.mark.parametrize("mode", ["plain", "predictor"])
def test_measuring_several_at_once_is_the_same_search(mode, tmp_path):
    """An evaluator that measures best ``together`` architectures per call (one per process of a
    multi-process search) gets at most that many at once, and the search is the one-at-a-time one:
    the same measurements in the same order, cache, log and front."""
    if mode == "predictor" and not _predictor_available():
        pytest.skip("predictors package not importable")

    class Together(ToyEvaluator):
        together = 3

        def __init__(self):
            super().__init__()
            self.sizes = []

        def evaluate(self, archs):
            self.sizes.append(len(archs))
            return super().evaluate(archs)

    kw = dict(evaluations=20, initial=8, batch=4, predictor="ridge") if mode == "predictor" else {}
    cfg = SearchConfig(budgets=BUDGET, population=6, generations=4, seed=3, **kw)
    one, three = ToyEvaluator(), Together()
    run_search(one, cfg, tmp_path / "one")
    run_search(three, cfg, tmp_path / "three")
    assert three.calls == one.calls
    assert max(three.sizes) == 3 and min(three.sizes) >= 1 and len(three.sizes) < len(one.calls)
    for name in ("cache.jsonl", "pareto.json"):
        assert (tmp_path / "three" / name).read_text() == (tmp_path / "one" / name).read_text(), name
    assert _log(tmp_path / "three") == _log(tmp_path / "one")


def test_cli_over_a_run_uses_the_run_evaluator(tmp_path, monkeypatch):
    import sys
    import types

    from typer.testing import CliRunner

    from nas_cli.main import app

    seen = {}

    def open_run_evaluator(run_dir, *, seed=0, latency_table=None, calibrate_in=None, latency_runtime="jax",
                           devices=None):
        # calibrate_in: where measured latencies' device speed is kept (the output directory)
        seen.update(run_dir=run_dir, seed=seed, latency_table=latency_table, calibrate_in=calibrate_in,
                    latency_runtime=latency_runtime, devices=devices)
        return ToyEvaluator()

    monkeypatch.setitem(sys.modules, "nas_cli.evaluation.supernet", types.SimpleNamespace(open_run_evaluator=open_run_evaluator))
    run = tmp_path / "run"
    r = CliRunner().invoke(app, ["search", str(run), "--latency-budget", "70%", "--population", "4",
                                 "--generations", "2", "--seed", "5"])
    assert r.exit_code == 0, r.output
    assert seen == {"run_dir": run, "seed": 5, "latency_table": None, "calibrate_in": run / "search",
                    "latency_runtime": "jax", "devices": None}
    front = _front(run / "search")
    assert front[0]["rank"] == 1 and SPACE.canonical(front[0]["arch"]) == front[0]["arch"]
    r = CliRunner().invoke(app, ["search", str(run), "--latency-budget", "0.2ms", "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "smallest latency achievable is 0.7" in r.stderr


# --- the search's own overhead (issue 29) -----------------------------------------------------


def test_every_iteration_logs_where_its_time_went(tmp_path):
    """The log says, per iteration, how long fitting, scoring, evaluating, tracking and writing
    took: what shows a search's own overhead against its evaluations."""
    if not _predictor_available():
        pytest.skip("predictors package not importable")
    cfg = SearchConfig(budgets=BUDGET, evaluations=16, initial=8, batch=4, predictor="ridge", seed=1)
    res = run_search(ToyEvaluator(), cfg, tmp_path)
    first, *rest = res.log
    assert set(first["seconds"]) == {"design", "evaluate", "track", "write"}
    assert rest and all(set(r["seconds"]) >= {"fit", "score", "evaluate", "track", "write"} for r in rest)
    assert "setup" in rest[0]["seconds"]  # the candidate pool and its features: once, before the first fit
    assert all(v >= 0 and np.isfinite(v) for r in res.log for v in r["seconds"].values())
    assert all(r["seconds"]["write"] > 0 for r in rest)  # the previous line and checkpoint were written


def test_selection_size_steps_geometrically_from_the_initial_design():
    from nas_cli.search.predictor_loop import selection_size

    assert [selection_size(n, 75, 2.0) for n in (10, 75, 83, 149, 150, 299, 300)] == [10, 75, 75, 75, 150, 150, 300]
    assert [selection_size(n, 8, 1.5) for n in (8, 11, 12, 17, 18, 27)] == [8, 8, 12, 12, 18, 27]
    # growth 1 (or less): a choice on everything measured, every iteration (what a benchmark compares against)
    assert [selection_size(n, 75, 1.0) for n in (10, 75, 83, 300)] == [10, 75, 83, 300]


def test_a_choosing_predictor_chooses_only_at_the_selection_sizes(tmp_path, monkeypatch):
    """``auto`` cross-validates its candidates only when the measured set reaches a selection size
    (the initial design, then each doubling); in between its choice is refitted. A search killed
    between two choices and resumed remakes the choice from the measured prefix and ends as the
    uninterrupted one does."""
    if not _predictor_available():
        pytest.skip("predictors package not importable")
    import predictors.auto as auto_module

    monkeypatch.setitem(auto_module.AutoPredictor.defaults, "candidates", ["ridge", "rbf", "ensemble"])
    chosen_on = []
    real = auto_module.out_of_fold_many

    def counting(names, X, y, k, seed):
        chosen_on.append(len(y))
        return real(names, X, y, k, seed)

    monkeypatch.setattr(auto_module, "out_of_fold_many", counting)
    cfg = SearchConfig(budgets=BUDGET, evaluations=24, initial=6, batch=3, predictor="auto", seed=4)
    run_search(ToyEvaluator(), cfg, tmp_path / "full")
    # two fitted metrics (accuracy, latency), each chosen on 6 and then on 12 measured
    assert chosen_on == [6, 6, 12, 12]

    with pytest.raises(Killed):
        run_search(ToyEvaluator(fail_after=16), cfg, tmp_path / "cut")
    chosen_on.clear()
    run_search(ToyEvaluator(), cfg, tmp_path / "cut")
    assert chosen_on == [12, 12]  # remade once on the resume, from the first 12 measured
    assert _front(tmp_path / "cut") == _front(tmp_path / "full")
    assert _log(tmp_path / "cut") == _log(tmp_path / "full")


def test_an_evaluator_is_one_declared_contract(tmp_path):
    """The search reads an evaluator's capabilities as declared attributes: something that only looks
    like an evaluator is refused, and a wrapping evaluator passes every capability through."""
    from nas_cli.evaluation import CAPABILITIES, Wrapping

    class LooksLikeOne:
        space = SPACE

        def metric_names(self):
            return ("accuracy", "latency")

    with pytest.raises(TypeError, match="LooksLikeOne is not a nas_cli.evaluation.Evaluator"):
        run_search(LooksLikeOne(), SearchConfig(budgets=BUDGET, population=4, generations=1), tmp_path / "s")
    inner = ToyEvaluator()
    inner.runtime, inner.latency_calibration, inner.together = "onnxruntime", {"level_ms": 1.0}, 3
    wrapped = Wrapping(inner)
    for name in CAPABILITIES:
        value = getattr(wrapped, name)
        assert value == getattr(inner, name), name
    assert wrapped.known_truth() is None and wrapped.remeasure([SPACE.largest()]) == [{}]
