"""`nas finetune`: a subnet trained alone from its inherited weights, exported with its before/after
accuracies; exact resume, the lock, bad input as one line, distillation on and off."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

from nas_cli import runs
from nas_cli.config import TrainConfig
from nas_cli.errors import UserError
from nas_cli.training.finetune import finetune
from nas_cli.main import app
from nas_cli.training.supernet import train_supernet

runner = CliRunner()
QUIET = dict(log=lambda m: None)
#: a few steps: 96 training images in batches of 32, stablehlo only (the ONNX export has its own tests
#: and one test here)
TINY = dict(batch_size=32, format="stablehlo")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "digits"
    cfg = TrainConfig(epochs=1, batch_size=32, limit_train=96, calib_images=64, seed=0)
    train_supernet(cfg, out, **QUIET)
    return out


@pytest.fixture(scope="module")
def smallest(run_dir) -> str:
    return json.loads((run_dir / runs.FINAL).read_text())["smallest"]


@pytest.fixture(scope="module")
def tuned(run_dir, smallest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft") / "small"
    finetune(run_dir, out, arch=smallest, epochs=2, **TINY, **QUIET)
    return out


def _params(folder: Path):
    target = json.loads((folder / runs.CONFIG).read_text())
    cfg = TrainConfig.from_json(target)
    space = runs.make_space(cfg, runs.load_run_dataset(cfg))
    shapes = jax.eval_shape(space.init_supernet, jax.random.key(0))
    zeros = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    return runs.restore_checkpoint(folder, {"params": zeros})[0]["params"]


def test_finetune_trains_exports_and_records_before_and_after(tuned, run_dir, smallest):
    info = json.loads((tuned / "subnet.json").read_text())
    assert info["arch"] == smallest and info["formats"] == ["stablehlo"]
    assert info["parity_max_abs_diff"] <= 1e-4  # the export's own check, on the fine-tuned weights
    ft = info["finetune"]
    for when in ("before", "after"):
        assert set(ft[when]) == {"accuracy", "test_accuracy"}
        assert all(0.0 <= v <= 1.0 for v in ft[when].values())
    assert ft["after"]["accuracy"] == info["accuracy"] and ft["epochs"] == 2
    assert ft["run"] == str(run_dir.resolve()) and ft["distill_weight"] == 1.0
    assert ft["teacher"] == json.loads((run_dir / runs.FINAL).read_text())["largest"]
    # a 1-epoch supernet on 96 digits is barely trained: fine-tuning the subnet alone must move it up
    assert ft["after"]["accuracy"] > ft["before"]["accuracy"], ft
    records = [json.loads(line) for line in (tuned / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["images_per_s"] > 0 for r in records)
    assert list((tuned / "tb").iterdir()), "no TensorBoard events"
    assert (tuned / "model.stablehlo").is_file() and (tuned / "model").is_dir()
    # the source run is untouched: its weights are the ones the fine-tuning started from
    assert json.loads((tuned / "finetune.json").read_text())["source_weights"] == runs.open_run(run_dir).weights
    from nas_cli.export import load_subnet

    subnet = load_subnet(tuned)
    images = runs.load_run_dataset(runs.read_config(run_dir)).val.images[:16]
    assert subnet.predict(images).shape == (16, 10)


def test_resume_after_an_interruption_gives_the_same_weights(tuned, run_dir, smallest, tmp_path):
    class Stop(Exception):
        pass

    def stop_in_second_epoch(done, total):
        if done > total // 2:
            raise Stop

    cut = tmp_path / "cut"
    with pytest.raises(Stop):
        finetune(run_dir, cut, arch=smallest, epochs=2, progress=stop_in_second_epoch, **TINY, **QUIET)
    assert not (cut / "subnet.json").exists()
    with pytest.raises(UserError, match="--resume"):  # never silently starts over
        finetune(run_dir, cut, arch=smallest, epochs=2, **TINY, **QUIET)
    with pytest.raises(UserError, match="epochs: 2 in the run, 3 now"):
        finetune(run_dir, cut, arch=smallest, epochs=3, resume=True, **TINY, **QUIET)
    with open(cut / "metrics.jsonl", "a") as f:  # a line cut by a crash mid-write
        f.write('{"epoch": 2, "lo')
    info = finetune(run_dir, cut, arch=smallest, epochs=2, resume=True, **TINY, **QUIET)
    whole = _params(tuned)
    resumed = _params(cut)
    assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)))
    reference = json.loads((tuned / "subnet.json").read_text())
    assert info["finetune"]["after"] == reference["finetune"]["after"]
    assert info["finetune"]["before"] == reference["finetune"]["before"]
    assert [json.loads(line)["epoch"] for line in (cut / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    with pytest.raises(UserError, match="already finished"):
        finetune(run_dir, cut, arch=smallest, epochs=2, resume=True, **TINY, **QUIET)


def test_a_second_writer_is_refused(run_dir, smallest, tmp_path):
    from nas_cli.runs import locks

    out = tmp_path / "busy"
    out.mkdir()
    with locks.locked(out, what="fine-tuning run"):
        with pytest.raises(UserError, match="in use by process"):
            finetune(run_dir, out, arch=smallest, epochs=1, **TINY, **QUIET)
    assert not (out / "config.json").exists()


def test_without_distillation_the_labels_alone_train_it(tuned, run_dir, smallest, tmp_path):
    out = tmp_path / "plain"
    info = finetune(run_dir, out, arch=smallest, epochs=2, distill_weight=0.0, **TINY, **QUIET)
    assert info["finetune"]["distill_weight"] == 0.0 and info["finetune"]["teacher"] is None
    assert info["finetune"]["before"] == json.loads((tuned / "subnet.json").read_text())["finetune"]["before"]
    plain = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    taught = [json.loads(line)["loss"] for line in (tuned / "metrics.jsonl").read_text().splitlines()]
    # with distillation the loss adds the cross-entropy with the teacher (> 0): the runs differ
    assert all(np.isfinite(plain)) and plain != taught
    assert info["finetune"]["after"]["accuracy"] > info["finetune"]["before"]["accuracy"]


def test_a_non_finite_loss_stops_it_before_any_checkpoint(run_dir, smallest, tmp_path):
    out = tmp_path / "diverged"
    with pytest.raises(UserError, match=r"training diverged: the loss is (nan|inf).*--lr"):
        finetune(run_dir, out, arch=smallest, epochs=1, lr=1e30, **TINY, **QUIET)
    assert not (out / "checkpoint").exists() and not (out / "subnet.json").exists()


@pytest.mark.slow  # about a minute: the ONNX conversion and its onnxruntime parity check
def test_rank_takes_the_searchs_front_and_exports_every_format(run_dir, smallest, tmp_path):
    pytest.importorskip("jax2onnx")
    search = tmp_path / "search"
    search.mkdir()
    weights = runs.open_run(run_dir).weights
    (search / "pareto.json").write_text(json.dumps({"front": [{"arch": smallest}], "weights": weights}))
    out = tmp_path / "ranked"
    result = runner.invoke(app, ["finetune", str(run_dir), "--rank", "1", "--search-dir", str(search),
                                 "--epochs", "1", "--batch-size", "32", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "fine-tuned " + smallest in result.output and "->" in result.output
    info = json.loads((out / "subnet.json").read_text())
    assert info["formats"] == ["onnx", "stablehlo"] and info["onnx_parity_max_abs_diff"] <= 1e-4
    assert info["finetune"]["rank"] == 1


@pytest.mark.parametrize("args, needle", [
    (["--rank", "7"], "--rank 7 is out of range"),
    (["--rank", "0"], "--rank 0 must be at least 1"),
    (["--arch", "nonsense"], "nonsense"),
    (["--arch", "A", "--rank", "1"], "exactly one of --arch ARCH or --rank K"),
    (["--arch", "A", "--epochs", "0"], "--epochs 0"),
    (["--arch", "A", "--distill-weight", "nan"], "--distill-weight nan"),
    (["--arch", "A", "--distill-weight", "-1"], "--distill-weight -1"),
    (["--arch", "A", "--lr", "0"], "--lr 0"),
    (["--arch", "A", "--format", "tflite"], "--format 'tflite'"),
])
def test_bad_input_is_one_line_and_exit_2(run_dir, tmp_path, args, needle):
    search = tmp_path / "search"
    search.mkdir()
    weights = runs.open_run(run_dir).weights
    (search / "pareto.json").write_text(json.dumps({"front": [{"arch": "x"}], "weights": weights}))
    out = tmp_path / "out"
    argv = ["finetune", str(run_dir), "--out", str(out), "--search-dir", str(search)]
    if "--epochs" not in args:
        argv += ["--epochs", "1"]
    result = runner.invoke(app, argv + args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and needle in lines[-1], result.output
    assert sum(line.startswith("error") for line in lines) == 1
    assert not out.exists()  # a refused fine-tuning leaves nothing


def test_a_missing_run_is_one_line(tmp_path):
    result = runner.invoke(app, ["finetune", str(tmp_path / "nothing"), "--arch", "A", "--epochs", "1",
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "is not a training run" in result.output, result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # a second process with two (fake) CPU devices compiles everything again
def test_two_devices_fine_tune_like_one(tuned, run_dir, smallest, tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / "two"
    proc = subprocess.run([sys.executable, "-m", "nas_cli", "finetune", str(run_dir), "--arch", smallest,
                           "--epochs", "2", "--batch-size", "32", "--format", "stablehlo", "--devices", "2",
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=900, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 device(s)" in proc.stderr
    two = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    one = [json.loads(line) for line in (tuned / "metrics.jsonl").read_text().splitlines()]
    # the same global batches: the same training up to float32 summation order
    np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=1e-3)
    assert abs(two[-1]["val_acc"] - one[-1]["val_acc"]) <= 0.02
