"""One latency per subnet (issue 34): every reported latency records its protocol, an export
measures under the protocol of the search that chose its subnet, and a lookup table says when
per-piece timing is dominated by overhead (never a negative fixed term). Timing is faked where a
figure is asserted; nothing here depends on the machine's speed."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from predictors.latency import measure_as, protocol_record
from predictors.latency.table import LatencyTable, calibrate, table_quality
from search_spaces import get_space

SPACE = "mobilenetv3-tiny"


def _speed_fake(levels):
    """A fake ``time_interleaved``: each subnet takes (number of its arrays) x 0.01 ms times the
    device's level, the last three programs (the references) take the level itself; ``levels`` is
    the level of each successive call (the last repeats)."""
    calls = []

    def fake(programs, **kw):
        level = levels[min(len(calls), len(levels) - 1)]
        calls.append(len(programs))
        body = [{"latency_ms": 0.01 * len(jax.tree.leaves(s)) * level, "iqr_ms": 0.0} for _, s, _ in programs[:-3]]
        return body + [{"latency_ms": level, "iqr_ms": 0.0} for _ in programs[-3:]]

    return fake, calls


def _evaluator(**capabilities):
    """An evaluator with these capabilities (nas_cli.evaluation.Evaluator's attributes) set."""
    from nas_cli.evaluation import Evaluator

    ev = Evaluator()
    for name, value in capabilities.items():
        setattr(ev, name, value)
    return ev


def test_the_fixed_term_is_never_negative():
    # whole subnets faster than their pieces' sum by more than one call per piece (issue 34's -0.1446 ms)
    calib = [{"measured_ms": 0.5, "summed_ms": 1.9, "pieces": 10}, {"measured_ms": 0.9, "summed_ms": 3.4, "pieces": 16},
             {"measured_ms": 0.6, "summed_ms": 2.3, "pieces": 12}]
    per_piece, overhead = calibrate(calib, dispatch=0.02, smallest_piece=0.15)
    assert overhead >= 0.0 and 0.02 <= per_piece <= 0.15
    # an ordinary table keeps its least-squares fit
    calib = [{"measured_ms": 1.0 + 0.1 * n, "summed_ms": 0.15 * n, "pieces": n} for n in (4, 8, 12)]
    per_piece, overhead = calibrate(calib, dispatch=0.02, smallest_piece=0.1)
    assert per_piece == pytest.approx(0.05) and overhead == pytest.approx(1.0)


def test_a_table_whose_pieces_barely_differ_says_it_is_overhead_dominated():
    # issue 34's tiny-space table: predictions 2.26-2.29 ms for subnets measured 0.43-0.85 ms
    flat = [{"measured_ms": m, "predicted_ms": p} for m, p in ((0.43, 2.26), (0.85, 2.29), (0.6, 2.27))]
    quality = table_quality(flat, overhead=2.1)
    assert quality["overhead_dominated"] and quality["spread_predicted"] < 0.5 * quality["spread_measured"]
    assert 0 < quality["pieces_share"] < 0.1
    good = [{"measured_ms": m, "predicted_ms": m * 1.05} for m in (0.43, 0.85, 0.6)]
    assert not table_quality(good, overhead=0.1)["overhead_dominated"]


def test_profile_warns_of_an_overhead_dominated_table(tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    import predictors.latency as latency
    from nas_cli.main import app

    def fake_profile(space, out, **kw):
        data = {"entries": {"a": {"ms": 0.01}}, "device": {"kind": "cpu"}, "runtime": {"name": "jax"},
                "per_piece_ms": 0.1, "overhead_ms": 2.1,
                "quality": {"overhead_dominated": True, "spread_measured": 0.98, "spread_predicted": 0.013,
                            "pieces_share": 0.07}}
        return LatencyTable(data, None)

    monkeypatch.setattr(latency, "profile_latency", fake_profile)
    res = CliRunner().invoke(app, ["latency", "profile", "--space", SPACE, "--out", str(tmp_path / "t.json")])
    assert res.exit_code == 0, res.output
    assert "fixed term 2.1000 ms" in res.output and "below zero" not in res.output
    assert "overhead-dominated" in res.output and "98% apart end to end but predict only 1% apart" in res.output


def test_search_latency_records_say_which_protocol(tmp_path: Path):
    from nas_cli.evaluation import latency_record
    from nas_cli.search.outputs import latency_axis

    refs = ["r8-k3e3-k3e3-k3e3"]
    measured = _evaluator(runtime="jax", latency_calibration={"mode": "measured", "level_ms": 2.0, "references": refs})
    rec = latency_record(measured)
    assert rec["source"] == "measured" and rec["runtime"]["name"] == "jax" and rec["batch"] == 1
    assert (rec["rounds"], rec["repeats"], rec["level_ms"], rec["references"]) == (10, 5, 2.0, refs)
    uncalibrated = _evaluator(runtime="jax")
    assert latency_record(uncalibrated)["level_ms"] is None and "as timed" in latency_axis(uncalibrated)

    table = tmp_path / "lut.json"
    table.write_text(json.dumps({"format": "nas-latency-table", "batch": 1, "rounds": 20, "repeats": 10,
                                 "runtime": {"name": "onnxruntime", "session_options": {"intra_op_num_threads": 4}},
                                 "device": {"kind": "cpu"}, "reference": {"archs": refs, "level_ms": 3.0},
                                 "quality": {"overhead_dominated": True}}))
    scaled = _evaluator(runtime="onnxruntime", latency_file=str(table), latency_calibration={
        "file": str(table), "scale": 0.5, "level_recorded_ms": 3.0, "level_now_ms": 1.5})
    rec = latency_record(scaled)
    assert rec["source"] == "table" and rec["level_ms"] == 1.5 and rec["scaled"] and rec["overhead_dominated"]
    assert rec["runtime"]["session_options"]["intra_op_num_threads"] == 4
    label = latency_axis(scaled)
    assert label.startswith("estimate of lut.json (batch 1, onnxruntime, 4 threads, scaled x0.50")
    assert "overhead-dominated" in label
    # --no-latency-calibrate with a table: still the table's estimate, at the file's own level
    as_recorded = _evaluator(runtime="onnxruntime", latency_file=str(table))
    rec = latency_record(as_recorded)
    assert rec["source"] == "table" and rec["level_ms"] == 3.0 and not rec["scaled"]
    assert latency_axis(as_recorded).startswith("estimate of lut.json")


def test_measure_as_puts_a_subnet_at_the_protocols_level(monkeypatch):
    space = get_space(SPACE)
    fake, _ = _speed_fake([4.0])  # the device twice as slow as when the protocol's level was taken
    monkeypatch.setattr("predictors.latency.timing.time_interleaved", fake)
    from predictors.latency import reference_archs

    refs = [space.encode(a) for a in reference_archs(space)]
    protocol = protocol_record("jax", rounds=2, repeats=1, references=refs, level_ms=2.0)
    arch = space.smallest()
    m = measure_as(space, [arch], protocol)[0]
    assert m["latency_ms"] == pytest.approx(m["measured_ms"] / 2) and m["level_now_ms"] == 4.0
    assert m["protocol"]["level_ms"] == 2.0 and m["protocol"]["references"] == refs
    # measured on another kind of device: the level means nothing here, the figure is as timed
    elsewhere = {**protocol, "device": {"platform": "cpu", "kind": "raspberry-pi"}}
    m = measure_as(space, [arch], elsewhere)[0]
    assert m["latency_ms"] == m["measured_ms"] and m["protocol"]["level_ms"] is None


def test_the_export_protocol_is_the_searchs(tmp_path: Path):
    from nas_cli.export import older_measurement, latency_protocol

    search = protocol_record("jax", rounds=10, repeats=5, references=["r8-k3e3-k3e3-k3e3"], level_ms=0.6)
    assert latency_protocol(search) is search
    default = latency_protocol(None)
    assert default["runtime"]["name"] == "jax" and default["level_ms"] is None and default["rounds"] == 10
    assert latency_protocol({**search, "runtime": {"name": "external"}})["level_ms"] is None  # timed elsewhere
    assert latency_protocol({"source": "benchmark", "file": "nb201.csv"})["source"] == "measured"
    # a search written before pareto.json recorded its protocol: read from its latency_calibration.json
    assert older_measurement(tmp_path) is None
    (tmp_path / "latency_calibration.json").write_text(json.dumps(
        {"mode": "measured", "level_ms": 0.6, "runtime": "jax", "references": ["r8-k3e3-k3e3-k3e3"]}))
    older = older_measurement(tmp_path)
    assert older["level_ms"] == 0.6 and older["references"] == ["r8-k3e3-k3e3-k3e3"] and older["rounds"] == 10


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    from nas_cli.config import TrainConfig
    from nas_cli.training.supernet import train_supernet

    out = tmp_path_factory.mktemp("protocol") / "run"
    cfg = TrainConfig(space=SPACE, dataset="digits", epochs=1, batch_size=32, limit_train=256)
    train_supernet(cfg, out, log=lambda m: None)
    return out


def test_an_export_measures_its_subnet_as_the_search_did(run_dir: Path, tmp_path: Path, monkeypatch):
    from typer.testing import CliRunner

    from nas_cli.main import app

    # the search runs at level 2, the export later at level 5: the same subnet, put at the
    # search's level, must read the search's figure exactly
    fake, calls = _speed_fake([2.0])
    monkeypatch.setattr("predictors.latency.timing.time_interleaved", fake)
    runner = CliRunner()
    res = runner.invoke(app, ["search", str(run_dir), "--latency-budget", "100%", "--population", "4",
                              "--generations", "1", "--seed", "0", "--out", str(tmp_path / "s")])
    assert res.exit_code == 0, res.output
    pareto = json.loads((tmp_path / "s" / "pareto.json").read_text())
    rec = pareto["latency_measurement"]
    assert rec["source"] == "measured" and rec["level_ms"] == 2.0 and len(rec["references"]) == 3
    fake, calls = _speed_fake([5.0])
    monkeypatch.setattr("predictors.latency.timing.time_interleaved", fake)
    res = runner.invoke(app, ["export", "subnet", str(run_dir), "--rank", "1", "--search-dir", str(tmp_path / "s"),
                              "--out", str(tmp_path / "e"), "--format", "stablehlo"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "e" / "subnet.json").read_text())
    assert calls, "the export timed its subnet"
    assert info["latency_ms"] == pytest.approx(pareto["front"][0]["latency_ms"])
    assert info["latency_protocol"]["measured_ms"] == pytest.approx(2.5 * info["latency_ms"])
    assert info["search_latency"]["same_protocol"] and info["search_latency"]["protocol"] == rec
    assert "measured the same way" in res.output
    # an --arch export (no search) is measured as timed, and says so
    arch = pareto["front"][-1]["arch"]
    res = runner.invoke(app, ["export", "subnet", str(run_dir), "--arch", arch, "--out", str(tmp_path / "e2"),
                              "--format", "stablehlo"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "e2" / "subnet.json").read_text())
    assert "search_latency" not in info and info["latency_protocol"]["level_ms"] is None
    assert np.isclose(info["latency_ms"], info["latency_protocol"]["measured_ms"])
