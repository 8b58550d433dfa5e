"""Nothing silently wrong, third pass (issue 31): unfinished checkpoints, records a check relies on,
calibration levels, damaged search state, bad images, the data's identity, boundary validation and
export integrity. Uses test_faults' tiny run and helpers (the same settings share the XLA cache)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import test_faults as tf
from test_faults import SEARCH, TINY, fails, nas, ok
from search_spaces.errors import NasError

# test_faults' fixtures: one tiny trained run per module, a private copy per test, fake latency
trained, run, fake_latency = tf.trained, tf.run, tf.fake_latency

# --- 1. killed during the first checkpoint's save ---------------------------------------------


@pytest.mark.slow  # two tiny trainings (minutes on a loaded machine)
def test_a_run_killed_during_its_first_save_resumes_with_the_printed_command(trained: Path, tmp_path: Path,
                                                                              monkeypatch):
    from nas_cli import runs

    out = tmp_path / "run"
    real_save = runs.save_checkpoint

    def killed_while_saving(run_dir, items, step):
        # what orbax leaves when the process dies mid-save: the step's temporary folder, half written
        partial = run_dir / "checkpoint" / f"{step}.orbax-checkpoint-tmp-1733580000"
        (partial / "params").mkdir(parents=True)
        (partial / "params" / "half").write_bytes(b"\0" * 10)
        raise KeyboardInterrupt

    monkeypatch.setattr(runs, "save_checkpoint", killed_while_saving)
    line = fails(nas("train-supernet", *TINY, "--out", out), 130, "interrupted; resume with")
    monkeypatch.setattr(runs, "save_checkpoint", real_save)
    assert list((out / "checkpoint").iterdir())  # the unfinished step is there
    fails(nas("train-supernet", *TINY, "--out", out), 2, "--resume")
    command = line.split("resume with: ", 1)[1].split()
    assert command[:2] == ["nas", "train-supernet"]
    ok(nas(*command[1:]))
    assert sorted(p.name for p in (out / "checkpoint").iterdir()) == ["1"]
    ours, theirs = (json.loads((d / "final.json").read_text()) for d in (out, trained))
    assert ours == theirs  # it ended where an uninterrupted run does


def test_a_step_saved_but_never_recorded_is_an_unfinished_save(run: Path):
    from nas_cli import runs

    (run / "checksums.json").write_text("{}")  # killed between orbax's rename and the record
    assert runs.discard_unfinished(run) is False  # nothing finished: the run starts again
    assert not (run / "checkpoint" / "1").exists()


# --- 2. a record a check relies on, missing or damaged ----------------------------------------


def _flip_a_weight_byte(run: Path) -> None:
    from test_faults import params_file

    f = params_file(run, 1)
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x40
    f.write_bytes(bytes(data))


@pytest.mark.parametrize("record", ["missing", "damaged"])
def test_a_missing_or_damaged_checksum_record_is_an_error_never_a_skipped_check(run: Path, tmp_path: Path,
                                                                               record: str):
    _flip_a_weight_byte(run)
    sums = run / "checksums.json"
    sums.unlink() if record == "missing" else sums.write_text('{"1": {"params/')
    fails(nas("search", run, *SEARCH), 2, str(sums), record, "NAS_UNCHECKED_WEIGHTS")
    assert not (run / "search" / "pareto.json").exists()
    fails(nas("export", "subnet", run, "--arch", _smallest(run), "--out", tmp_path / "exp"), 2, str(sums))
    assert not (tmp_path / "exp" / "subnet.json").exists()
    (run / "final.json").unlink()
    fails(nas("train-supernet", "--out", run, "--resume"), 2, str(sums))


def test_the_opt_out_of_the_checksum_check_is_explicit_and_loud(run: Path, monkeypatch):
    (run / "checksums.json").unlink()
    monkeypatch.setenv("NAS_UNCHECKED_WEIGHTS", "1")
    result = ok(nas("search", run, *SEARCH))
    assert "UNCHECKED" in result.stderr


def _smallest(run: Path) -> str:
    return json.loads((run / "final.json").read_text())["smallest"]


# --- 3. a damaged latency calibration never mixes two speed levels ----------------------------


@pytest.mark.parametrize("damage", ["cut", "missing"])
def test_a_damaged_latency_calibration_is_an_error_not_a_new_level(run: Path, damage: str):
    ok(nas("search", run, *SEARCH))
    record = run / "search" / "latency_calibration.json"
    assert json.loads(record.read_text())["mode"] == "measured"
    (run / "search" / "pareto.json").unlink()  # an interrupted search
    record.write_text(record.read_text()[:9]) if damage == "cut" else record.unlink()
    fails(nas("search", run, *SEARCH), 2, str(record), "two device speeds", "--out")


# --- 4. a damaged line of cache.jsonl ---------------------------------------------------------


def test_a_damaged_cache_line_is_measured_again_and_the_search_goes_on(run: Path):
    ok(nas("search", run, *SEARCH))  # one finished iteration
    whole = front(run / "search")
    cache = run / "search" / "cache.jsonl"
    lines = cache.read_text().splitlines()
    victim = json.loads(lines[-1])["arch"]
    lines[-1] = lines[-1][:20] + "#" + lines[-1][21:]  # damaged in the middle, not a cut last line
    cache.write_text("\n".join(lines) + "\n")
    (run / "search" / "pareto.json").unlink()
    result = ok(nas("search", run, *SEARCH))
    assert "no longer holds" in result.stderr and victim in result.stderr
    assert front(run / "search") == whole


def front(search_dir: Path) -> list:
    return json.loads((search_dir / "pareto.json").read_text())["front"]


# --- 6. results outlive the data: the data's identity beside the weights' ---------------------


def _as_npz_run(run: Path, tmp_path: Path) -> Path:
    """The digits run, its data moved into .npz files (the same images and splits)."""
    import numpy as np

    from nas_cli.data import DATASETS

    parts = DATASETS.get("digits").load(None, 0, None, None)
    data = tmp_path / "npz"
    data.mkdir()
    np.savez(data / "train.npz", images=parts.train.images, labels=parts.train.labels)
    np.savez(data / "test.npz", images=parts.test.images, labels=parts.test.labels)
    cfg = json.loads((run / "config.json").read_text())
    cfg.update(dataset="npz", data_dir=str(data))
    (run / "config.json").write_text(json.dumps(cfg))
    return data


def test_accuracies_are_tied_to_the_data_that_measured_them(run: Path, tmp_path: Path):
    import numpy as np

    data = _as_npz_run(run, tmp_path)
    ok(nas("search", run, *SEARCH))
    before = [json.loads(line) for line in (run / "subnet_accuracy.jsonl").read_text().splitlines()]
    assert {len(r["weights"]["data"]) for r in before} == {16}
    with np.load(data / "train.npz") as f:
        images, labels = f["images"], f["labels"].copy()
    labels[::3] = (labels[::3] + 1) % 10  # the folder changed: a third of the labels
    np.savez(data / "train.npz", images=images, labels=labels)
    fails(nas("search", run, *SEARCH), 2, "data", "--out")  # the old search folder is not these data's
    fails(nas("export", "subnet", run, "--rank", "1", "--out", tmp_path / "exp"), 2, "search again")
    ok(nas("search", run, *SEARCH, "--out", tmp_path / "again"))
    after = [json.loads(line) for line in (run / "subnet_accuracy.jsonl").read_text().splitlines()][len(before):]
    assert after and all(r["weights"]["data"] != before[0]["weights"]["data"] for r in after)
    assert {r["arch"] for r in after} >= {r["arch"] for r in before[:2]}  # measured again, not served


# --- 5. bad images ----------------------------------------------------------------------------


def _folder(root: Path, n_per_class: int, *, bits: int = 8, truncate: int | None = None) -> Path:
    """Two classes of 8x8 grayscale PNGs (values 0..~0.6 of full scale); image ``truncate`` cut short."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    k = 0
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(n_per_class):
            level = rng.integers(0, 160, (8, 8))
            pixels = (level * 257).astype(np.uint16) if bits == 16 else level.astype(np.uint8)
            path = root / "train" / cls / f"{i:03d}.png"
            Image.fromarray(pixels).save(path)
            if k == truncate:
                path.write_bytes(path.read_bytes()[:-30])  # the header reads; the pixels do not
            k += 1
    return root


def test_16_bit_pngs_are_read_at_their_true_scale(tmp_path: Path):
    import numpy as np

    from nas_cli.data import load_dataset
    from nas_cli.data.imagefiles import decode_image

    eight = load_dataset("folder", _folder(tmp_path / "8", 20), image_size=8)
    sixteen = load_dataset("folder", _folder(tmp_path / "16", 20, bits=16), image_size=8)
    assert np.allclose(eight.mean, sixteen.mean, atol=1e-3) and eight.mean[0] < 0.4
    first = sorted((tmp_path / "16" / "train" / "a").iterdir())[0]
    assert decode_image(str(first), 8, 1).max() < 160  # not clipped to 255


def test_every_corrupt_image_counts_against_the_limit_even_one_found_late(tmp_path: Path):
    from nas_cli.data import load_dataset
    from nas_cli.errors import UserError
    from nas_cli.data import calibration_images

    with pytest.raises(UserError, match=r"cannot be decoded \(1 of \d+ images.*at most 1%"):
        ds = load_dataset("folder", _folder(tmp_path / "few", 30, truncate=7), image_size=8)  # 1 of 60
        calibration_images(ds, 64, 0)
        ds.val.images, ds.test.images  # noqa: B018 - decoding is the point


def test_a_corrupt_image_within_the_limit_is_warned_about_once(tmp_path: Path, capsys):
    from nas_cli.data import load_dataset
    from nas_cli.data import calibration_images

    ds = load_dataset("folder", _folder(tmp_path / "many", 130, truncate=3), image_size=8, seed=1)
    calibration_images(ds, 300, 0)
    ds.val.images, ds.test.images  # noqa: B018
    err = capsys.readouterr().err
    assert err.count("cannot be decoded") == 1 and "003.png" in err, err


# --- 8. an export is checked when it is loaded ------------------------------------------------


def test_exported_files_are_checked_when_loaded_naming_the_damaged_one(run: Path, tmp_path: Path):
    pytest.importorskip("onnxruntime")
    from nas_cli.errors import UserError
    from nas_cli.export import load_subnet
    from nas_cli.export.onnx_model import load_onnx

    exp = tmp_path / "exp"
    ok(nas("export", "subnet", run, "--arch", _smallest(run), "--out", exp, "--format", "all"))
    info = json.loads((exp / "subnet.json").read_text())
    assert {"model.onnx", "model.stablehlo"} <= set(info["files"]) and any(k.startswith("model/") for k in info["files"])
    load_subnet(exp), load_onnx(exp)
    keep = tmp_path / "keep"
    shutil.copytree(exp, keep)

    onnx = exp / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"model\.onnx is damaged"):
        load_onnx(exp)
    load_subnet(exp)  # the JAX model's files are intact

    (exp / "subnet.json").write_text((keep / "subnet.json").read_text()[:50])  # cut
    for load in (load_subnet, load_onnx):
        with pytest.raises(NasError, match=r"subnet\.json is damaged"):  # the errors' one root
            load(exp)

    shutil.rmtree(exp)
    shutil.copytree(keep, exp)
    shutil.rmtree(exp / "model")
    with pytest.raises(UserError, match=r"model/\S+ is missing"):
        load_subnet(exp)

    lone = tmp_path / "lone.onnx"  # a model.onnx alone is checked to parse
    lone.write_bytes((keep / "model.onnx").read_bytes()[:1000])
    with pytest.raises(UserError, match="not a readable ONNX model"):
        load_onnx(lone)


# --- 9. a full disk during a checkpoint save --------------------------------------------------


def test_a_full_disk_during_a_checkpoint_save_is_one_line_exit_1(tmp_path: Path, monkeypatch):
    import numpy as np
    import orbax.checkpoint as ocp

    from nas_cli import runs
    from nas_cli.errors import one_line

    def full(self, *args, **kwargs):  # what TensorStore raises: a ValueError of hundreds of lines
        raise ValueError("RESOURCE_EXHAUSTED: Error writing local file: No space left on device [OS error: 28]\n"
                         + "\n".join(f"  frame {i}" for i in range(300)))

    monkeypatch.setattr(ocp.CheckpointManager, "save", full)
    with pytest.raises(OSError) as err:
        runs.save_checkpoint(tmp_path, {"params": {"w": np.zeros(3, np.float32)}}, 1)
    line, code = one_line(err.value)
    assert code == 1 and "no space left" in line and "\n" not in line and "checkpoint/1" in line


def test_the_data_dir_is_recorded_absolute(tmp_path: Path, monkeypatch):
    from nas_cli.config import TrainConfig, resume_config

    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(dataset="npz", data_dir="data/train.npz")
    assert cfg.data_dir == str(tmp_path / "data" / "train.npz")
    assert TrainConfig.from_json(cfg.to_json()) == cfg
    assert resume_config(cfg, None, {"data_dir": "data/train.npz"}) == cfg  # given again relative: the same


@pytest.mark.parametrize("labels,needle", [([0, 1, -2, -3], "label -2 at index 2 is negative (2 negative"),
                                           ([0, 1, 3, 3], "1 of 0..3 never occur (first 2)"),
                                           ([0, 2, 10**9, 1], "999999997 of 0..1000000000 never occur (first 3)")])
def test_npz_labels_are_counted_right(tmp_path: Path, labels, needle):
    import numpy as np

    from nas_cli.data import load_dataset
    from nas_cli.errors import UserError

    np.savez(tmp_path / "d.npz", images=np.zeros((4, 8, 8, 1), np.uint8), labels=np.array(labels))
    with pytest.raises(UserError) as err:
        load_dataset("npz", tmp_path / "d.npz")
    assert needle in str(err.value)
