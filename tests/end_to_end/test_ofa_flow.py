"""An imported Once-for-All supernet through the whole flow: import -> search -> finetune -> export,
on the stored width-0.1 fixture (tests/fixtures/ofa/) and a small seeded RGB .npz data set."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nas_cli.main import app

FIXTURE = Path(__file__).parents[1] / "fixtures" / "ofa" / "ofa_mbv3_d234_e346_k357_w0.1.pth"
NET = "ofa_mbv3_d234_e346_k357_w0.1"
runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def _npz(path: Path, n: int = 120, side: int = 32, classes: int = 10) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(n) % classes
    # class-dependent colour, so there is something to learn
    images = rng.integers(0, 96, (n, side, side, 3)) + (labels[:, None, None, None] * 16)
    np.savez(path, images=images.astype(np.uint8), labels=labels.astype(np.int64))
    return path


def test_imported_run_without_data_refuses_search_in_one_line(tmp_path):
    run = tmp_path / "run"
    assert invoke("import", "ofa", FIXTURE, "--net", NET, "--out", run, "--resolutions", "32").exit_code == 0
    result = invoke("search", run, "--latency-budget", "150%")
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and "imported supernet without data" in lines[-1]


@pytest.mark.slow  # a few minutes: the supernet's programs, the search's latencies, one fine-tuning epoch
def test_import_search_finetune_export(tmp_path):
    data = _npz(tmp_path / "data.npz")
    run = tmp_path / "run"
    result = invoke("import", "ofa", FIXTURE, "--net", NET, "--out", run, "--dataset", "npz", "--data-dir", data,
                    "--resolutions", "32", "--batch-size", "16", "--calib-images", "32")
    assert result.exit_code == 0, result.output
    assert json.loads((run / "data.json").read_text())["mean"] == pytest.approx([0.485, 0.456, 0.406])

    result = invoke("search", run, "--latency-budget", "150%", "--population", "4", "--generations", "1",
                    "--seed", "0")
    assert result.exit_code == 0, result.output
    front = json.loads((run / "search" / "pareto.json").read_text())["front"]
    assert front and all(row["arch"].startswith("r32-") for row in front)

    ft = tmp_path / "ft"
    result = invoke("finetune", run, "--rank", "1", "--epochs", "1", "--format", "stablehlo", "--out", ft)
    assert result.exit_code == 0, result.output
    info = json.loads((ft / "subnet.json").read_text())
    assert info["input"]["mean"] == pytest.approx([0.485, 0.456, 0.406]) and info["parity_inputs"] == "validation"

    # without data: export only, OFA's BatchNorm statistics, parity on synthetic images
    bare = tmp_path / "bare"
    assert invoke("import", "ofa", FIXTURE, "--net", NET, "--out", bare, "--resolutions", "32").exit_code == 0
    out = tmp_path / "export"
    result = invoke("export", "subnet", bare, "--arch", front[0]["arch"], "--format", "stablehlo", "--out", out)
    assert result.exit_code == 0, result.output
    assert "synthetic" in result.output and "accuracy not measured" in result.output
    info = json.loads((out / "subnet.json").read_text())
    assert info["parity_inputs"] == "synthetic" and info["accuracy"] is None
    assert info["parity_max_abs_diff"] <= 1e-4
