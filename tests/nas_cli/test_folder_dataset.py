"""The user's own data end to end: train, search and export on an image folder; resume with augmentation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from nas_cli.config import TrainConfig
from nas_cli.errors import UserError
from nas_cli.main import app
from nas_cli.runs.tensorboard import read_scalars
from nas_cli.training.supernet import train_supernet

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


def _folder(root: Path, classes=("cat", "dog", "owl"), n: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / "train" / name).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 80, (10, 12, 3), dtype=np.uint8)
            img[..., c] += 160  # each class its own colour: learnable
            Image.fromarray(img).save(root / "train" / name / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def test_folder_train_search_export_end_to_end(tmp_path):
    from nas_cli import runs
    from nas_cli.export import load_subnet

    root, run = _folder(tmp_path / "data"), tmp_path / "run"
    trained = invoke("train-supernet", "--dataset", "folder", "--data-dir", root, "--image-size", "8", "--epochs", "1",
                     "--batch-size", "8", "--calib-images", "16", "--seed", "0", "--out", run)
    assert trained.exit_code == 0, trained.output
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["augment"] == "standard" and cfg["image_size"] == 8  # the folder default, made explicit
    info = json.loads((run / "data.json").read_text())
    assert info["class_names"] == ["cat", "dog", "owl"] and info["image_shape"] == [8, 8, 3]
    assert info["splits"] == {"train": 28, "val": 4, "test": 4} and len(info["mean"]) == 3
    assert json.loads((run / "final.json").read_text())["class_names"] == ["cat", "dog", "owl"]
    scalars = read_scalars(run / "tb")
    for tag in ("train/loss", "train/lr", "val/acc_largest", "val/acc_smallest", "train/step_time_ms",
                "train/images_per_s"):
        assert tag in scalars, sorted(scalars)
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3]  # 28 images // 8 per step
    metrics = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    assert scalars["val/acc_largest"] == [(3, metrics["val_acc_largest"])]

    searched = invoke("search", run, "--latency-budget", "90%", "--population", "4", "--generations", "1",
                      "--seed", "0")
    assert searched.exit_code == 0, searched.output
    hv = read_scalars(run / "search" / "tb")
    log = [json.loads(line) for line in (run / "search" / "search_log.jsonl").read_text().splitlines()]
    assert [v for _, v in hv["search/hypervolume"]] == pytest.approx([r["hypervolume"] for r in log])
    assert [v for _, v in hv["search/front_size"]] == [r["front_size"] for r in log]

    exported = invoke("export", "subnet", run, "--rank", "1", "--out", tmp_path / "export")
    assert exported.exit_code == 0, exported.output
    sub = json.loads((tmp_path / "export" / "subnet.json").read_text())
    assert sub["class_names"] == ["cat", "dog", "owl"]
    assert sub["input"]["mean"] == pytest.approx(info["mean"]) and len(sub["input"]["std"]) == 3
    model = load_subnet(tmp_path / "export")
    test = runs.open_run(run).dataset.test
    logits = model.predict(test.images)
    assert float((logits.argmax(-1) == test.labels).mean()) == pytest.approx(sub["test_accuracy"], abs=1e-9)
    names = model.predict(test.images, names=True)
    assert names == [sub["class_names"][i] for i in logits.argmax(-1)]

    # the same seed trains the same supernet from the folder (batches decoded and augmented in worker processes)
    again = invoke("train-supernet", "--dataset", "folder", "--data-dir", root, "--image-size", "8", "--epochs", "1",
                   "--batch-size", "8", "--calib-images", "16", "--seed", "0", "--out", tmp_path / "again")
    assert again.exit_code == 0, again.output
    for name in ("final.json", "data.json"):
        assert json.loads((tmp_path / "again" / name).read_text()) == json.loads((run / name).read_text())
    _same(*[[json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
            for d in (run, tmp_path / "again")])


def _npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    images = rng.integers(0, 90, (60, 8, 8, 3), dtype=np.uint8)
    images[np.arange(60), :, :, labels] += 150
    np.savez(path, images=images, labels=labels, class_names=np.asarray(["r", "g", "b"]))
    return path


class _Interrupt(Exception):
    pass


def _same(a: list[dict], b: list[dict]) -> None:
    for x, y in zip(a, b, strict=True):
        for key in ("loss", "val_acc_largest", "val_acc_smallest"):
            assert x[key] == y[key]


def test_resume_with_augmentation_ends_where_an_uninterrupted_run_does(tmp_path):
    cfg = TrainConfig(space="mobilenetv3-tiny", dataset="npz", data_dir=str(_npz(tmp_path / "d.npz")), epochs=2,
                      batch_size=8, calib_images=16, seed=4)
    assert cfg.augment == "standard"
    whole = train_supernet(cfg, tmp_path / "whole", log=lambda m: None)

    def stop_in_second_epoch(done, total):
        if done > total // 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_supernet(cfg, tmp_path / "cut", progress=stop_in_second_epoch, log=lambda m: None)
    with pytest.raises(UserError, match="augment: 'standard' in the run, 'none' now"):
        train_supernet(TrainConfig(**{**cfg.to_json(), "augment": "none"}), tmp_path / "cut", resume=True,
                       log=lambda m: None)
    resumed = train_supernet(cfg, tmp_path / "cut", log=lambda m: None, resume=True)
    assert resumed == whole
    read = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()]
            for d in ("whole", "cut")]
    _same(*read)
    # TensorBoard: the resumed run's curves are the uninterrupted run's, without a fork at the cut
    tb_whole, tb_cut = read_scalars(tmp_path / "whole" / "tb"), read_scalars(tmp_path / "cut" / "tb")
    assert tb_cut["train/loss"] == tb_whole["train/loss"] and len(tb_whole["train/loss"]) == 2 * 6
