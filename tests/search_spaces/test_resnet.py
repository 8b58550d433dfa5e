"""The resnet spaces end to end through the CLI (train, search, export), and what the conformance
suite (tests/search_spaces/test_spaces.py) does not cover: the -tiny factory's options and the progressive phases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from nas_cli.main import app
from search_spaces import ArchError, get_space

runner = CliRunner()

# largest and smallest subnets only (--num-random 0): fewer block variants to compile
TINY_TRAIN = ["--space", "resnet-tiny", "--dataset", "digits", "--epochs", "1", "--batch-size", "32",
              "--limit-train", "128", "--calib-images", "64", "--num-random", "0", "--seed", "0"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resnet") / "digits"
    result = invoke("train-supernet", *TINY_TRAIN, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_train_search_export(run_dir: Path, tmp_path: Path):
    from nas_cli.data import load_dataset
    from nas_cli.export import load_subnet

    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert np.isfinite(record["loss"]) and record["compiled_variants"] > 0
    assert json.loads((run_dir / "final.json").read_text())["largest"].startswith("r8-w100-")

    result = invoke("search", run_dir, "--latency-budget", "90%", "--population", "4", "--generations", "2",
                    "--seed", "0")
    assert result.exit_code == 0, result.output
    pareto = json.loads((run_dir / "search" / "pareto.json").read_text())
    assert pareto["front"]
    for row in pareto["front"]:
        assert row["latency_ms"] <= pareto["budgets"]["latency"]["value"] + 1e-9

    out = tmp_path / "export"
    result = invoke("export", "subnet", run_dir, "--rank", "1", "--out", out)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "subnet.json").read_text())
    assert info["arch"] == pareto["front"][0]["arch"]
    assert info["parity_max_abs_diff"] <= 1e-4
    test = load_dataset("digits").test
    acc = float((load_subnet(out).predict(test.images).argmax(-1) == test.labels).mean())
    assert acc == pytest.approx(info["test_accuracy"], abs=1e-9)


def test_invalid_arch_string_names_the_field(run_dir: Path, tmp_path: Path):
    result = runner.invoke(app, ["export", "subnet", str(run_dir), "--arch", "r8-w50-w50.e30-w50.e25-w50.e25",
                                 "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "stage 1 block 1: expand 30 not in {25, 50}" in result.output


def test_tiny_rejects_width_mult_and_full_scales():
    with pytest.raises(ArchError, match="resnet-tiny has fixed widths"):
        get_space("resnet-tiny", width_mult=0.5)
    half, full = get_space("resnet", width_mult=0.5), get_space("resnet")
    assert half.config.stage_channels == tuple(c // 2 for c in full.config.stage_channels)
    assert half.options == {"width_mult": 0.5}


@pytest.mark.parametrize("name", ["resnet", "resnet-tiny"])
def test_progressive_phases_free_existing_genes(name):
    """Each progressive-shrinking tag frees some gene, and the last phase frees them all."""
    space = get_space(name)
    for _, tags in space.progressive_phases:
        assert all(any(tag in g.name for g in space.genes) for tag in tags), tags
    last = space.progressive_phases[-1][1]
    assert all(any(tag in g.name for tag in last) for g in space.genes)
    assert space.progressive_phases[-1][0] == "width"  # entering it sorts channels (nas_cli/training/supernet.py)
