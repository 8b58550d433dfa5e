"""``nas latency probes | fit --timings | predict``: latency of a device timed elsewhere.

The devices here are synthetic (per-operation costs, a little noise), so the tests are hermetic and
can say what the right answer is: a target whose costs are a mix of the priors' must be ranked
well from 10 probe timings.
"""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy.optimize import nnls
from scipy.stats import spearmanr
from typer.testing import CliRunner

from nas_cli.main import app
from predictors.latency import choose_probes, load_latency_model, load_prior
from predictors.latency.errors import LatencyError
from predictors.latency.fewshot import (
    ENSEMBLE_TOLERANCE,
    FEWSHOT_FORMAT,
    OP_WEIGHT_POWERS,
    Inputs,
    nnls_weighted,
    robust_fit,
    fit_fewshot_model,
    flops_of,
    op_bases,
)
from search_spaces import get_space

runner = CliRunner()
NB201 = "nas-bench-201"


def _device(space, archs, costs: dict, seed: int, noise: float = 0.02) -> np.ndarray:
    """An additive synthetic device: a fixed cost plus each edge operation's cost, with noise."""
    rng = np.random.default_rng(seed)
    y = np.asarray([1.0 + sum(costs[op] for op in a.ops) for a in archs])
    return y * np.exp(rng.normal(0, noise, len(y)))


COSTS = {
    "cpu": {"none": 0.05, "skip_connect": 0.1, "nor_conv_1x1": 0.8, "nor_conv_3x3": 3.0, "avg_pool_3x3": 0.6},
    "gpu": {"none": 0.2, "skip_connect": 0.2, "nor_conv_1x1": 0.5, "nor_conv_3x3": 0.9, "avg_pool_3x3": 0.5},
    "npu": {"none": 0.01, "skip_connect": 0.3, "nor_conv_1x1": 0.3, "nor_conv_3x3": 0.7, "avg_pool_3x3": 1.5},
}
#: the target: a mix of the priors' costs, not any one of them
TARGET = {op: 0.5 * COSTS["cpu"][op] + 0.3 * COSTS["gpu"][op] + 0.4 * COSTS["npu"][op] for op in COSTS["cpu"]}


@pytest.fixture(scope="module")
def nb201(tmp_path_factory):
    """(space, all archs, table path with columns cpu/gpu/npu, the target's latencies)."""
    space = get_space(NB201)
    archs = space.all_archs()
    path = tmp_path_factory.mktemp("nb201") / "table.csv"
    cols = {name: _device(space, archs, c, i) for i, (name, c) in enumerate(COSTS.items())}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch_str", *cols])
        for i, a in enumerate(archs):
            w.writerow([space.encode(a), *(f"{cols[c][i]:.6g}" for c in cols)])
    return space, archs, path, _device(space, archs, TARGET, 9)


def _write_timings(path, rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "latency_ms"])
        w.writerows(rows)


def _priors(table) -> list[str]:
    return [arg for c in COSTS for arg in ("--prior", f"{table}:{c}")]


def test_probes_fit_predict_round_trip_on_nas_bench_201(nb201, tmp_path):
    space, archs, table, target = nb201
    made = runner.invoke(app, ["latency", "probes", "--space", NB201, "--n", "10", "--seed", "1", "--out",
                               str(tmp_path / "p"), *_priors(table)])
    assert made.exit_code == 0, made.output
    probes = list(csv.DictReader(open(tmp_path / "p" / "probes.csv")))
    assert len(probes) == 10 and len({p["arch"] for p in probes}) == 10
    index = {space.encode(a): i for i, a in enumerate(archs)}
    _write_timings(tmp_path / "t.csv", [(p["arch"], f"{target[index[p['arch']]]:.6g}") for p in probes])
    fit = runner.invoke(app, ["latency", "fit", "--space", NB201, "--timings", str(tmp_path / "t.csv"), "--out",
                              str(tmp_path / "dev.json"), *_priors(table), "--device-name", "phone"])
    assert fit.exit_code == 0, fit.output
    data = json.loads((tmp_path / "dev.json").read_text())
    assert data["format"] == FEWSHOT_FORMAT and data["runtime"]["name"] == "external"
    assert data["device"]["kind"] == "phone" and len(data["priors"]) == 3
    # the file is self-contained: it predicts every cell without the table
    (tmp_path / "gone.csv").write_text("")
    model = load_latency_model(tmp_path / "dev.json", space)
    pred = model.predict_many(archs)
    assert spearmanr(pred, target)[0] > 0.9
    assert np.median(np.abs(pred / target - 1)) < 0.1
    with open(tmp_path / "a.csv", "w") as f:
        f.write("arch\n" + "\n".join(space.encode(a) for a in archs[:50]) + "\n")
    out = runner.invoke(app, ["latency", "predict", str(tmp_path / "dev.json"), "--archs", str(tmp_path / "a.csv"),
                              "--out", str(tmp_path / "pred.csv")])
    assert out.exit_code == 0, out.output
    rows = list(csv.DictReader(open(tmp_path / "pred.csv")))
    assert [r["arch"] for r in rows] == [space.encode(a) for a in archs[:50]]
    np.testing.assert_allclose([float(r["latency_ms"]) for r in rows], pred[:50], rtol=1e-5)


def test_probes_spread_over_the_cost_range_and_are_deterministic(nb201):
    space, archs, table, _ = nb201
    priors = [load_prior(f"{table}:{c}", space) for c in COSTS]
    a, by = choose_probes(space, 10, 3, priors)
    b, _ = choose_probes(space, 10, 3, priors)
    assert by == "priors" and [space.encode(x) for x in a] == [space.encode(x) for x in b]
    cost = np.log(priors[0].predict_many(archs))
    probe_cost = np.log(priors[0].predict_many(a))
    # one probe in each tenth of the cost order: the cheapest is below the 20th percentile, the
    # dearest above the 80th (ten random cells miss one end 21% of the time)
    assert probe_cost.min() < np.percentile(cost, 20) and probe_cost.max() > np.percentile(cost, 80)
    flops_probes, by = choose_probes(space, 10, 3)
    assert by == "flops"
    f = flops_of(space, flops_probes)
    assert f.min() < np.percentile(flops_of(space, archs), 20) < np.percentile(flops_of(space, archs), 80) < f.max()


def test_probes_fit_predict_round_trip_on_a_tiny_space_with_onnx_models(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort

    name = "mobilenetv3-tiny"
    made = runner.invoke(app, ["latency", "probes", "--space", name, "--n", "4", "--out", str(tmp_path / "p"),
                               "--quantize", "int8"])
    assert made.exit_code == 0, made.output
    probes = list(csv.DictReader(open(tmp_path / "p" / "probes.csv")))
    space = get_space(name)
    for p in probes:
        arch = space.decode(p["arch"])
        for col in ("model", "model_int8"):
            sess = ort.InferenceSession(str(tmp_path / "p" / p[col]), providers=["CPUExecutionProvider"])
            x = np.zeros((1, arch.resolution, arch.resolution, space.in_channels), np.float32)
            assert sess.run(None, {"images": x})[0].shape == (1, space.config.num_classes)
        assert p["model"] == f"{p['probe']}.onnx" and p["model_int8"] == f"{p['probe']}.int8.onnx"
    # timings from a made-up device proportional to FLOPs: no priors, the model uses FLOPs and genes
    archs = [space.decode(p["arch"]) for p in probes]
    flops = flops_of(space, archs)
    _write_timings(tmp_path / "t.csv", [(p["arch"], f"{1.0 + f / 1e5:.6g}") for p, f in zip(probes, flops)])
    fit = runner.invoke(app, ["latency", "fit", "--space", name, "--timings", str(tmp_path / "t.csv"), "--out",
                              str(tmp_path / "dev.json")])
    assert fit.exit_code == 0, fit.output
    # usable where a latency file is: the search loads it whatever runtime it measures with
    for runtime in ("jax", "onnxruntime"):
        model = load_latency_model(tmp_path / "dev.json", space, runtime=runtime)
    sample = [space.sample(np.random.default_rng(i)) for i in range(20)]
    pred = model.predict_many(sample)
    assert spearmanr(pred, flops_of(space, sample))[0] > 0.9
    # and by `nas latency validate` (its figures as recorded: no reference level)
    val = runner.invoke(app, ["latency", "validate", str(tmp_path / "dev.json"), "--space", name, "--samples", "2",
                              "--repeats", "1", "--rounds", "2", "--json"])
    assert val.exit_code == 0, val.output
    assert json.loads(val.output.strip().splitlines()[-1])["device_speed"] is None
    # and as the prior of another device
    fit2 = runner.invoke(app, ["latency", "fit", "--space", name, "--timings", str(tmp_path / "t.csv"), "--out",
                               str(tmp_path / "dev2.json"), "--prior", str(tmp_path / "dev.json")])
    assert fit2.exit_code == 0, fit2.output


@pytest.mark.parametrize("rows, named", [
    ([("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "3"), ("|bogus~0|", "2")], "line 3"),
    ([("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "3"),
      ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "2")], "need at least 3"),
    ([("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "-1")], "line 2"),
    ([("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "nan")], "positive finite"),
    ([("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "inf")], "positive finite"),
    ([("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|", "fast")], "not a number"),
])
def test_bad_timings_are_one_line_and_exit_2(tmp_path, rows, named):
    _write_timings(tmp_path / "t.csv", rows)
    res = runner.invoke(app, ["latency", "fit", "--space", NB201, "--timings", str(tmp_path / "t.csv"), "--out",
                              str(tmp_path / "dev.json")])
    assert res.exit_code == 2, res.output
    assert named in res.output and len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "dev.json").exists()


def test_duplicate_timings_are_averaged_with_a_warning(nb201, tmp_path):
    space, archs, table, target = nb201
    rows = [(space.encode(a), f"{1.0 + i:.3g}") for i, a in enumerate(archs[100:105])]
    rows.append((rows[0][0], "3.0"))
    _write_timings(tmp_path / "t.csv", rows)
    res = runner.invoke(app, ["latency", "fit", "--space", NB201, "--timings", str(tmp_path / "t.csv"), "--out",
                              str(tmp_path / "dev.json"), "--json"])
    assert res.exit_code == 0, res.output
    assert "timed 2 times with different latencies (1, 3 ms); using their mean" in res.output
    data = json.loads((tmp_path / "dev.json").read_text())
    timed = dict(zip(data["timings"]["archs"], data["timings"]["latency_ms"]))
    timed.update({o["arch"]: o["latency_ms"] for o in data["left_out"]})
    assert timed[rows[0][0]] == pytest.approx(2.0) and len(timed) == 5


def test_a_far_off_timing_is_left_out_with_a_warning(nb201, tmp_path):
    space, archs, table, target = nb201
    priors = [load_prior(f"{table}:{c}", space) for c in COSTS]
    probes, _ = choose_probes(space, 10, 0, priors)
    index = {space.encode(a): i for i, a in enumerate(archs)}
    ms = [target[index[space.encode(a)]] for a in probes]
    ms[4] /= 1000.0  # timed in seconds by mistake
    _write_timings(tmp_path / "t.csv", [(space.encode(a), f"{m:.6g}") for a, m in zip(probes, ms)])
    res = runner.invoke(app, ["latency", "fit", "--space", NB201, "--timings", str(tmp_path / "t.csv"), "--out",
                              str(tmp_path / "dev.json"), *_priors(table)])
    assert res.exit_code == 0, res.output
    assert f"arch {space.encode(probes[4])} timed" in res.output and "left out of the fit" in res.output
    data = json.loads((tmp_path / "dev.json").read_text())
    assert [o["arch"] for o in data["left_out"]] == [space.encode(probes[4])]
    pred = load_latency_model(tmp_path / "dev.json", space).predict_many(archs)
    assert spearmanr(pred, target)[0] > 0.9


def test_a_prior_of_another_space_is_refused(nb201, tmp_path):
    space, archs, table, target = nb201
    rows = [(space.encode(a), f"{t:.6g}") for a, t in zip(archs[:6], target[:6])]
    _write_timings(tmp_path / "t.csv", rows)
    ok = runner.invoke(app, ["latency", "fit", "--space", NB201, "--timings", str(tmp_path / "t.csv"), "--out",
                             str(tmp_path / "nb.json")])
    assert ok.exit_code == 0, ok.output
    tiny = get_space("mobilenetv3-tiny")
    _write_timings(tmp_path / "t2.csv", [(tiny.encode(tiny.sample(np.random.default_rng(i))), "1.5") for i in range(4)])
    res = runner.invoke(app, ["latency", "fit", "--space", "mobilenetv3-tiny", "--timings", str(tmp_path / "t2.csv"),
                              "--out", str(tmp_path / "x.json"), "--prior", str(tmp_path / "nb.json")])
    assert res.exit_code == 2 and "'nas-bench-201', not 'mobilenetv3-tiny'" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


@pytest.mark.parametrize("prior, named", [
    ("{table}:nope", "no column 'nope'"),
    ("{table}", "name its latency column"),
    ("{missing}.json", "does not exist"),
])
def test_bad_priors_are_one_line_and_exit_2(nb201, tmp_path, prior, named):
    space, archs, table, target = nb201
    _write_timings(tmp_path / "t.csv", [(space.encode(a), "2") for a in archs[:4]])
    res = runner.invoke(app, ["latency", "fit", "--space", NB201, "--timings", str(tmp_path / "t.csv"), "--out",
                              str(tmp_path / "dev.json"), "--prior", prior.format(table=table,
                                                                                   missing=tmp_path / "none")])
    assert res.exit_code == 2 and named in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1


def test_timings_and_local_timing_options_do_not_mix(tmp_path):
    _write_timings(tmp_path / "t.csv", [])
    res = runner.invoke(app, ["latency", "fit", "--space", NB201, "--timings", str(tmp_path / "t.csv"), "--samples",
                              "5", "--out", str(tmp_path / "dev.json")])
    assert res.exit_code == 2 and "--samples" in res.output
    res = runner.invoke(app, ["latency", "fit", "--space", "mobilenetv3-tiny", "--out", str(tmp_path / "dev.json")])
    assert res.exit_code == 2 and "--timings" in res.output


def test_the_int8_runtime_times_a_quantized_subnet():
    pytest.importorskip("onnxruntime")
    from predictors.latency import get_runtime
    from predictors.latency.timing import compile_subnet

    space = get_space("resnet-tiny")
    rt = get_runtime("onnxruntime-int8", threads=1)
    assert rt.describe()["name"] == "onnxruntime-int8" and rt.describe()["quantization"]["quant_format"] == "QDQ"
    program = compile_subnet(space, space.smallest(), 1, rt)
    timed = rt.time([program], repeats=2, warmup=1, rounds=2)[0]
    assert timed["latency_ms"] > 0 and len(timed["halves_ms"]) == 2


def _pruning_device(space, archs, costs: dict, seed: int, noise: float = 0.02) -> np.ndarray:
    """An additive device whose runtime drops dead work: only the pruned cell's operations cost, and
    a cell that connects nothing runs almost nothing."""
    rng = np.random.default_rng(seed)
    y = np.asarray([1.0 + sum(costs[op] for op in space.pruned(a).ops) if space.connected(a) else 0.05
                    for a in archs])
    return y * np.exp(rng.normal(0, noise, len(y)))


def test_op_bases_count_the_genome_and_the_live_cell():
    space = get_space(NB201)
    dead = space.decode("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|")  # 3x3 on 1<-0 reaches nothing
    live = space.decode("|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|none~0|none~1|nor_conv_3x3~2|")
    bases = op_bases(space, [dead, live])
    assert set(bases) == {"counts", "live", "counts+live"}
    counts, alive = bases["counts"], bases["live"]
    assert np.all(counts[:, 0] == 1) and np.all(counts[:, 1:].sum(1) == 6)
    assert alive[0, 1] == 0 and np.all(alive[0, 3:] == 0) and alive[0, 2] == 6  # disconnected: all `none`
    assert alive[1, 1] == 1 and np.array_equal(alive[1, 2:], counts[1, 1:])
    # a supernet space: the counts of each shared choice
    tiny = get_space("mobilenetv3-tiny")
    b = op_bases(tiny, [tiny.smallest(), tiny.largest()])
    assert list(b) == ["counts"] and b["counts"].shape[1] > 1 and not np.array_equal(*b["counts"])


def test_probes_pin_down_every_per_operation_cost(nb201):
    """D-optimal within the cost strata: 10 probes span the whole counts+live basis (rank 10), so a
    10-cost fit is determined. The earlier choice (farthest in gene features) reached rank 8-9 on
    all 25 of the development table's probe sets, 10 random cells 7-9 (20 draws)."""
    space, archs, table, _ = nb201
    priors = [load_prior(f"{table}:{c}", space) for c in COSTS]
    full = np.linalg.matrix_rank(op_bases(space, archs)["counts+live"])
    for seed in range(3):
        probes, _ = choose_probes(space, 10, seed, priors)
        assert np.linalg.matrix_rank(op_bases(space, probes)["counts+live"]) == full


def test_a_device_that_drops_dead_work_is_recovered_from_devices_that_do_not(nb201):
    """The priors run every operation of the genome; the target runs only the live ones (its cost
    is the pruned cell's): 10 timings choose the live basis and rank every cell."""
    space, archs, table, _ = nb201
    priors = [load_prior(f"{table}:{c}", space) for c in COSTS]
    target = _pruning_device(space, archs, TARGET, 11)
    probes, _ = choose_probes(space, 10, 0, priors)
    index = {space.encode(a): i for i, a in enumerate(archs)}
    y = target[[index[space.encode(a)] for a in probes]]
    model = fit_fewshot_model(space, probes, y, priors, seed=0)
    assert any("live" in m.get("basis", "") for m in model.params["members"]), model.params["model"]
    assert spearmanr(model.predict_many(archs), target)[0] > 0.95


def test_one_timing_no_additive_model_holds_pulls_the_costs_little(nb201):
    """A timing 1.6x off (below the left-out threshold: it stays in the fit) moves the robust
    per-operation costs less than a least-squares fit would."""
    space, archs, table, target = nb201
    priors = [load_prior(f"{table}:{c}", space) for c in COSTS]
    probes, _ = choose_probes(space, 10, 2, priors)
    index = {space.encode(a): i for i, a in enumerate(archs)}
    y = target[[index[space.encode(a)] for a in probes]].copy()
    y[5] *= 1.6
    model = fit_fewshot_model(space, probes, y, priors, seed=0, candidates=("op-costs",))
    assert not model.data["left_out"]
    assert spearmanr(model.predict_many(archs), target)[0] > 0.97


def test_unknown_model_families_are_refused(nb201):
    space, archs, table, target = nb201
    with pytest.raises(LatencyError, match="unknown model families \\['nope'\\]"):
        fit_fewshot_model(space, archs[:5], target[:5], candidates=("op-costs", "nope"))


def test_the_op_fits_weighting_moves_from_relative_to_absolute_error():
    """power 0 fits relative error, power 1 absolute error (the weights of squared relative errors
    are (y / mean y)^2): without Huber's re-weighting they are the two plain non-negative fits."""
    rng = np.random.default_rng(0)
    X = np.concatenate([np.ones((12, 1)), rng.integers(0, 4, (12, 3))], 1).astype(float)
    y = X @ np.array([1.0, 0.5, 2.0, 0.2]) * np.exp(rng.normal(0, 0.2, 12))
    relative = robust_fit(nnls_weighted, X, y, 0.0, iterations=1)
    absolute = robust_fit(nnls_weighted, X, y, 1.0, iterations=1)
    np.testing.assert_allclose(relative, nnls(X / y[:, None], np.ones(12))[0], rtol=1e-8)
    np.testing.assert_allclose(absolute, nnls(X, y)[0], rtol=1e-8)
    assert not np.allclose(relative, absolute, rtol=1e-3)


def test_the_model_averages_every_configuration_within_the_tolerance(nb201, tmp_path):
    """Members are exactly the configurations whose leave-one-out error is within
    ENSEMBLE_TOLERANCE of the best, weighted by (best / error)^2, and the saved file predicts the
    weighted geometric mean of its members."""
    space, archs, table, target = nb201
    priors = [load_prior(f"{table}:{c}", space) for c in COSTS]
    probes, _ = choose_probes(space, 10, 3, priors)
    index = {space.encode(a): i for i, a in enumerate(archs)}
    y = target[[index[space.encode(a)] for a in probes]]
    model = fit_fewshot_model(space, probes, y, priors, seed=0, candidates=("op-costs", "op-transfer"))
    errors = [sc["loo_log_mae"] for sc in model.data["cross_validation"]]
    best = min(errors)
    members = model.params["members"]
    assert len(members) == sum(e <= ENSEMBLE_TOLERANCE * best for e in errors) < len(errors)
    assert {m["power"] for m in model.data["cross_validation"]} == set(OP_WEIGHT_POWERS)
    for m in members:
        assert m["weight"] == pytest.approx((best / m["loo_log_mae"]) ** 2)
    sample = archs[::500]
    inputs = Inputs(space, sample, priors)
    logs = [np.log(np.maximum(inputs.bases[m["basis"]] @ np.asarray(m["coef"]), model.params["floor_ms"]))
            for m in members]
    expected = np.exp(np.average(logs, axis=0, weights=[m["weight"] for m in members]))
    model.save(tmp_path / "dev.json")
    np.testing.assert_allclose(load_latency_model(tmp_path / "dev.json", space).predict_many(sample), expected,
                               rtol=1e-9)
