"""``nas latency profile/validate/fit`` on the tiny spaces at batch 1 with few repeats.

No assertion is about absolute timings (the machine is shared and noisy): only about the file,
the arithmetic of ``predict``, errors, and the learned model's fit on its own training data.
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from nas_cli.main import app
from predictors.latency import (
    LatencyError,
    LatencyTable,
    LearnedLatencyModel,
    at_level,
    calibrated_predictions,
    fit_latency_model,
    has_latency_pieces,
    load_latency_model,
    FIT_STREAM,
    VALIDATE_STREAM,
    make_latency_space,
    reference_archs,
    sample_archs,
    space_spec,
    time_archs,
)
from predictors.metrics import rmse
from search_spaces import get_space, supernet_space_names

runner = CliRunner()
SPACE = "mobilenetv3-tiny"
FAST = ["--repeats", "2", "--seed", "0"]


@pytest.fixture(scope="module")
def lut(tmp_path_factory):
    path = tmp_path_factory.mktemp("latency") / "lut.json"
    res = runner.invoke(app, ["latency", "profile", "--space", SPACE, "--warmup", "1", "--calib-samples", "1",
                              "--out", str(path), *FAST])
    assert res.exit_code == 0, res.output
    return path


@pytest.fixture(scope="module")
def space():
    return make_latency_space(SPACE)[0]


def test_profile_writes_a_table_that_round_trips(lut, space, tmp_path):
    data = json.loads(lut.read_text())
    assert data["format"] == "nas-latency-table" and data["space"]["name"] == SPACE and data["batch"] == 1
    assert set(data["entries"]) == {p.key for p in space.latency_pieces()}
    assert all(np.isfinite(e["median_ms"]) and e["iqr_ms"] >= 0 for e in data["entries"].values())
    table = LatencyTable.load(lut, space)
    assert isinstance(table, LatencyTable)
    table.save(tmp_path / "again.json")
    assert json.loads((tmp_path / "again.json").read_text()) == data


def test_predict_is_overhead_plus_the_sum_of_entries(lut, space):
    data = json.loads(lut.read_text())
    table = LatencyTable.load(lut, space)
    for arch in sample_archs(space, 5, seed=3):
        keys = space.latency_keys(arch)
        assert len(keys) == 2 + sum(arch.depths)
        expected = data["overhead_ms"] + sum(data["entries"][k]["ms"] for k in keys)
        assert table.predict(arch) == pytest.approx(expected, rel=1e-12)


def test_missing_entry_is_a_clear_error(lut, space):
    data = json.loads(lut.read_text())
    arch = space.smallest()
    key = space.latency_keys(arch)[1]
    del data["entries"][key]
    with pytest.raises(LatencyError, match=key):
        LatencyTable(data, space).predict(arch)


@pytest.mark.parametrize("flags, named", [
    (["--space", "mobilenetv3"], "mobilenetv3-tiny"),
    (["--space", SPACE, "--num-classes", "7"], "num_classes"),
    (["--space", SPACE, "--resolution", "12"], "resolutions"),
])
def test_a_mismatched_space_exits_2_naming_what_differs(lut, flags, named):
    res = runner.invoke(app, ["latency", "validate", str(lut), *flags, "--samples", "2"])
    assert res.exit_code == 2, res.output
    assert "error:" in res.output and named in res.output and "Traceback" not in res.output


def test_not_a_latency_file_exits_2(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "something"}')
    res = runner.invoke(app, ["latency", "validate", str(bad), "--space", SPACE])
    assert res.exit_code == 2 and "nas-latency-table" in res.output


def test_validate_json_prints_the_metrics_and_the_measurement_against_itself(lut):
    res = runner.invoke(app, ["latency", "validate", str(lut), "--space", SPACE, "--samples", "3", "--json",
                              "--rounds", "2", *FAST])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)  # the progress bar goes to stderr: stdout is the JSON alone
    assert {"mape", "kendall_tau", "spearman", "n"} <= set(out) and out["n"] == 3
    assert out["rounds"] == 2 and out["repeatability"]["n"] == 3 and out["repeatability"]["mape"] >= 0
    # scored against predictions scaled to the device's speed now, and unscaled
    assert out["device_speed"] > 0 and out["uncalibrated"]["n"] == 3


def test_profile_records_its_reference_subnets_and_their_level(lut, space):
    ref = json.loads(lut.read_text())["reference"]
    assert [space.decode(a) for a in ref["archs"]] == reference_archs(space)
    assert ref["level_ms"] > 0
    assert reference_archs(space)[0] == space.smallest() and reference_archs(space)[-1] == space.largest()


def test_every_program_of_a_chunk_carries_the_chunks_level(space):
    archs = sample_archs(space, 3, seed=1)
    timed = time_archs(space, archs, repeats=2, warmup=1, rounds=2, references=reference_archs(space)[:2])
    assert len({t["level_ms"] for t in timed}) == 1 and timed[0]["level_ms"] > 0
    assert "level_ms" not in time_archs(space, archs[:1], repeats=1, warmup=0, rounds=1)[0]


def test_at_level_puts_every_chunk_at_one_device_speed():
    timed = [{"latency_ms": 2.0, "level_ms": 1.0}, {"latency_ms": 3.0, "level_ms": 1.5}]
    np.testing.assert_allclose(at_level(timed, 2.0), [4.0, 4.0])


def test_predictions_are_scaled_by_the_device_speed_now(lut, space):
    table = LatencyTable.load(lut, space)
    archs = sample_archs(space, 4, seed=2)
    level = table.reference["level_ms"]
    np.testing.assert_allclose(calibrated_predictions(table, archs, [level, 2 * level, level / 2, level]),
                               table.predict_many(archs) * [1, 2, 0.5, 1])
    # fitted on given numbers, a model records no level: its predictions stay as they are
    learned = fit_latency_model(space, archs, [1.0, 2.0, 3.0, 4.0], table=None, model="ridge", seed=0)
    np.testing.assert_allclose(calibrated_predictions(learned, archs, [9.0] * 4), learned.predict_many(archs))


def test_a_learned_model_reads_the_table_at_its_own_level(lut, space):
    table = LatencyTable.load(lut, space)
    ref = table.reference
    archs = sample_archs(space, 8, seed=4)
    meta = {"reference": {"archs": ref["archs"], "level_ms": 2 * ref["level_ms"]}}  # a device half as fast
    learned = fit_latency_model(space, archs, 2 * table.predict_many(archs) + 0.1, table=table, model="ridge",
                                seed=0, meta=meta)
    assert learned.table_scale() == pytest.approx(2.0)
    np.testing.assert_allclose(learned.features(archs)[1], 2 * table.predict_many(archs))


def test_a_file_of_another_version_says_to_remake_it(lut, space, tmp_path):
    data = json.loads(lut.read_text())
    data["version"] = 1
    (tmp_path / "v1.json").write_text(json.dumps(data))
    with pytest.raises(LatencyError, match="re-make it with `nas latency profile`"):
        load_latency_model(tmp_path / "v1.json", space)


def test_bad_timing_options_exit_2(lut):
    res = runner.invoke(app, ["latency", "validate", str(lut), "--space", SPACE, "--rounds", "0"])
    assert res.exit_code == 2 and "--rounds 0" in res.output


def test_interleaved_timing_keeps_two_independent_halves():
    import jax.numpy as jnp

    from predictors.latency import time_interleaved

    x = jnp.ones((4,), jnp.float32)
    programs = [(jax.jit(lambda s, x, k=k: x * s + k).lower(jnp.float32(2), x).compile(), jnp.float32(2), x)
                for k in range(3)]
    timed = time_interleaved(programs, repeats=3, warmup=1, rounds=4)
    assert len(timed) == 3
    for t in timed:
        assert t["repeats"] == 12 and len(t["halves_ms"]) == 2 and t["latency_ms"] > 0
    assert "halves_ms" not in time_interleaved(programs[:1], repeats=2, warmup=0, rounds=1)[0]


def test_fit_and_validate_draw_disjoint_subnets_with_the_same_seed(space):
    fit = {space.encode(a) for a in sample_archs(space, 50, 0, FIT_STREAM)}
    val = {space.encode(a) for a in sample_archs(space, 50, 0, VALIDATE_STREAM)}
    assert len(fit & val) <= 2  # only chance collisions in a space of 10^5+ subnets


def test_learned_model_recovers_per_piece_costs_from_end_to_end_times(space):
    """Latency that is a sum of per-piece costs (any costs, not the table's) is what the piece-count
    features express: ridge fitted on 60 subnets predicts 40 others almost exactly."""
    rng = np.random.default_rng(0)
    cost = {p.key: float(rng.uniform(0.05, 0.5)) for p in space.latency_pieces()}
    train, test = sample_archs(space, 60, 1), sample_archs(space, 40, 2)

    def truth(archs):
        return np.asarray([0.3 + sum(cost[k] for k in space.latency_keys(a)) for a in archs])

    learned = fit_latency_model(space, train, truth(train), table=None, model="ridge", seed=0)
    err = np.abs(learned.predict_many(test) - truth(test)) / truth(test)
    assert float(np.mean(err)) < 0.03


def test_a_learned_model_on_other_features_is_refused(lut, space, tmp_path):
    archs = sample_archs(space, 6, seed=5)
    learned = fit_latency_model(space, archs, np.linspace(1, 2, 6), table=None, model="ridge", seed=0)
    data = learned.to_json()
    data.pop("features")
    (tmp_path / "old.json").write_text(json.dumps(data))
    with pytest.raises(LatencyError, match="re-fit"):
        load_latency_model(tmp_path / "old.json", space)


def test_fit_with_the_table_beats_or_matches_it_on_its_training_data(lut, space, tmp_path):
    model_path = tmp_path / "model.json"
    res = runner.invoke(app, ["latency", "fit", "--space", SPACE, "--samples", "6", "--lut", str(lut),
                              "--out", str(model_path), "--json", *FAST])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    # Ridge on the table's residual minimises squared error with an intercept, so on its own
    # training data it can only match or beat predicting a zero residual (the table).
    assert report["train"]["rmse"] <= report["table_train"]["rmse"] + 1e-9
    assert report["repeatability"]["n"] == 6  # the error floor is reported beside the fit
    # Either file loads where a table is expected (nas search --latency-table).
    for loader in (load_latency_model, LatencyTable.load):
        learned = loader(model_path, space)
        assert isinstance(learned, LearnedLatencyModel)
        assert np.isfinite(learned.predict(space.largest()))


def test_learned_model_round_trips_and_corrects_a_biased_table(lut, space, tmp_path):
    table = LatencyTable.load(lut, space)
    archs = sample_archs(space, 30, seed=5)
    base = table.predict_many(archs)
    depth = np.asarray([sum(a.depths) for a in archs], np.float64)
    measured = 1.5 * base + 0.05 * depth + 0.2  # a table off by a scale and a per-block cost
    learned = fit_latency_model(space, archs, measured, table=table, model="ridge", seed=0)
    assert rmse(measured, learned.predict_many(archs)) <= rmse(measured, base)
    learned.save(tmp_path / "m.json")
    again = load_latency_model(tmp_path / "m.json", space)
    np.testing.assert_allclose(again.predict_many(archs), learned.predict_many(archs), rtol=1e-6)


def test_a_search_scales_a_model_only_where_it_knows_the_device_and_its_level(lut, space, tmp_path):
    from nas_cli.evaluation.supernet import model_calibration

    table = LatencyTable.load(lut, space)
    elsewhere = LatencyTable({**table.data, "device": {"platform": "gpu", "kind": "NVIDIA H100"}}, space)
    cal = model_calibration(elsewhere, space, lut, tmp_path / "a.json")
    assert cal["scale"] == 1.0 and "NVIDIA H100" in cal["why"]
    bare = LatencyTable({k: v for k, v in table.data.items() if k != "reference"}, space)
    assert "no reference" in model_calibration(bare, space, lut, tmp_path / "b.json")["why"]
    measured = model_calibration(table, space, lut, tmp_path / "c.json")
    assert measured["scale"] == pytest.approx(measured["level_now_ms"] / table.reference["level_ms"])


def test_references_keep_their_resolution_when_the_space_uses_fewer(lut, space):
    from predictors.latency import references_of

    table = LatencyTable.load(lut, space)
    assert references_of(table, space)[0] is space
    wider = make_latency_space(SPACE, resolutions=[8, 12])[0]
    refs = reference_archs(wider)
    assert {a.resolution for a in refs} == {12}
    table.data = {**table.data, "options": {"resolutions": [8, 12]},
                  "reference": {"archs": [wider.encode(a) for a in refs], "level_ms": 1.0}}
    ref_space, got = references_of(table, space)  # space: 8 px only
    assert got == refs and 12 in ref_space.config.resolutions
    timed = time_archs(space, [space.smallest()], repeats=1, warmup=0, rounds=1, references=got,
                       reference_space=ref_space)
    assert timed[0]["level_ms"] > 0


# ----------------------------------------------------------------------------------------------
# Every supernet space: the latency commands know no space
# ----------------------------------------------------------------------------------------------
TINY_SPACES = [n for n in supernet_space_names() if n.endswith("-tiny")]
QUICK = ["--repeats", "1", "--rounds", "2", "--warmup", "0", "--seed", "0"]


def test_the_tiny_spaces_are_the_three_families():
    assert TINY_SPACES == ["mobilenetv3-tiny", "resnet-tiny", "vit-tiny"]


@pytest.mark.parametrize("name", TINY_SPACES)
def test_profile_and_validate_run_end_to_end_on_every_tiny_space(name, tmp_path):
    path = tmp_path / f"{name}.json"
    made = runner.invoke(app, ["latency", "profile", "--space", name, "--calib-samples", "0", "--out", str(path),
                               *QUICK])
    assert made.exit_code == 0, made.output
    space = make_latency_space(name)[0]
    data = json.loads(path.read_text())
    assert data["space"]["name"] == name
    assert set(data["entries"]) == {p.key for p in space.latency_pieces()}
    table = load_latency_model(path, space)
    assert all(np.isfinite(table.predict(a)) for a in reference_archs(space))
    res = runner.invoke(app, ["latency", "validate", str(path), "--space", name, "--samples", "2", "--json",
                              "--repeats", "1", "--rounds", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["n"] == 2 and out["repeatability"]["n"] == 2 and out["device_speed"] > 0


@pytest.mark.parametrize("name", supernet_space_names())
def test_a_spaces_default_options_are_its_own(name):
    space, options = make_latency_space(name)
    own = get_space(name)
    assert options["resolutions"] == list(own.resolutions) and options["in_channels"] == own.in_channels
    assert space_spec(space) == space_spec(own) and has_latency_pieces(space)


@pytest.mark.parametrize("other", [n for n in supernet_space_names() if n != SPACE])
def test_a_file_made_for_one_space_is_refused_for_another(lut, other):
    with pytest.raises(LatencyError, match=f"made for space '{SPACE}', not '{other}'"):
        load_latency_model(lut, get_space(other))
    res = runner.invoke(app, ["latency", "validate", str(lut), "--space", other, "--samples", "2"])
    assert res.exit_code == 2, res.output
    assert res.output.startswith("error: ") and res.output.count("\n") == 1 and SPACE in res.output


def test_a_space_without_static_subnets_is_refused_naming_the_latency_spaces():
    with pytest.raises(LatencyError, match="nas-bench-201.*" + ", ".join(supernet_space_names())):
        make_latency_space("nas-bench-201")


def test_a_width_multiplier_for_a_tiny_space_exits_2(tmp_path):
    res = runner.invoke(app, ["latency", "profile", "--space", SPACE, "--width-mult", "0.5",
                              "--out", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "fixed widths" in res.output and "Traceback" not in res.output


def test_a_learned_model_is_refused_where_the_space_uses_other_resolutions(space, tmp_path):
    wider = make_latency_space(SPACE, resolutions=[8, 12])[0]
    archs = sample_archs(wider, 6, seed=5)
    fit_latency_model(wider, archs, np.linspace(1, 2, 6), table=None, model="ridge", seed=0).save(tmp_path / "m.json")
    with pytest.raises(LatencyError, match=r"fitted on resolutions \[8, 12\]"):
        load_latency_model(tmp_path / "m.json", space)
