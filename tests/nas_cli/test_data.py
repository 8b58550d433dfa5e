"""The user's own data (image folders, .npz), the built-in files' damage, and the input pipeline."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from nas_cli.data import load_dataset
from nas_cli.errors import UserError
from nas_cli.data.imagefiles import FileSplit, decode_image
from nas_cli.data.input_pipeline import StepBatches, StreamOptions, augment_batch, epoch_order, train_stream


def write_images(folder: Path, n: int, *, mode: str = "RGB", size=(10, 10), seed: int = 0, suffix: str = ".png"):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i:03d}{suffix}")


def image_folder(root: Path, classes=("cat", "dog", "owl"), n: int = 8, **kw) -> Path:
    for c, name in enumerate(classes):
        write_images(root / "train" / name, n, seed=c, **kw)
    return root


def load(root: Path, **kw):
    return load_dataset("folder", root, seed=0, **kw)


# --- folders ----------------------------------------------------------------------------------


def test_folder_classes_sizes_and_seeded_splits(tmp_path):
    root = image_folder(tmp_path / "d", n=10, size=(14, 9))  # not square: the centred square is used
    ds = load(root, image_size=8)
    assert ds.class_names == ("cat", "dog", "owl") and ds.num_classes == 3
    assert ds.image_shape == (8, 8, 3)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (24, 3, 3)  # 10% each held out of 30
    assert ds.mean.shape == ds.std.shape == (3,)
    assert ds.val.images.shape == (3, 8, 8, 3) and ds.val.images.dtype == np.uint8
    again = load(root, image_size=8)
    assert again.train.paths == ds.train.paths and np.array_equal(again.mean, ds.mean)
    assert not set(ds.train.paths) & set(ds.val.paths)


def test_folder_val_and_test_folders_and_grayscale(tmp_path):
    root = image_folder(tmp_path / "d", n=6, mode="L")
    write_images(root / "val" / "dog", 2, mode="L")
    write_images(root / "test" / "cat", 3, mode="L", suffix=".jpg")
    ds = load(root, image_size=8)
    assert ds.image_shape == (8, 8, 1)
    assert len(ds.train) == 18 and len(ds.val) == 2 and len(ds.test) == 3
    assert set(ds.val.labels) == {1} and set(ds.test.labels) == {0}


def test_decode_resizes_the_centred_square(tmp_path):
    img = np.zeros((10, 30, 3), np.uint8)
    img[:, 10:20] = 255  # the centred 10x10 square is white, the sides black
    Image.fromarray(img).save(tmp_path / "wide.png")
    out = decode_image(str(tmp_path / "wide.png"), 5, 3)
    assert out.shape == (5, 5, 3) and out.min() == 255


@pytest.mark.parametrize("case, match", [
    ("empty_class", r"class folder .*owl is empty"),
    ("non_image", r"notes\.txt is not an image file"),
    ("one_class", r"needs at least two class folders .*, found only 'cat'"),
    ("stray_file", r"stray\.png is not in a class folder"),
    ("corrupt", r"cat/003\.png cannot be decoded \(1 of 24 images"),
    ("mixed_modes", r"cat/000\.png is colour but .*cat/001\.png is not: mixed image modes \(23 grayscale, 1 colour\)"),
    ("unknown_val_class", r"class 'emu' is not among the training classes"),
    ("no_train", r"has no train/ folder"),
])
def test_bad_folders_are_one_line_errors_naming_the_file(tmp_path, case, match):
    root = tmp_path / "d"
    if case == "one_class":
        write_images(root / "train" / "cat", 4)
    elif case == "no_train":
        write_images(root / "val" / "cat", 4)
    else:
        image_folder(root)
    if case == "empty_class":
        for f in (root / "train" / "owl").iterdir():
            f.unlink()
    elif case == "non_image":
        (root / "train" / "dog" / "notes.txt").write_text("hello")
    elif case == "stray_file":
        write_images(root / "train", 1)
        (root / "train" / "000.png").rename(root / "train" / "stray.png")
    elif case == "corrupt":
        (root / "train" / "cat" / "003.png").write_bytes(b"not really a png")
    elif case == "mixed_modes":
        for f in (root / "train" / "dog").iterdir():
            Image.open(f).convert("L").save(f)
        for f in (root / "train" / "owl").iterdir():
            Image.open(f).convert("L").save(f)
        for f in list((root / "train" / "cat").iterdir())[1:]:
            Image.open(f).convert("L").save(f)
    elif case == "unknown_val_class":
        write_images(root / "val" / "emu", 2)
    with pytest.raises(UserError, match=match) as err:
        load(root, image_size=8)
    assert "\n" not in str(err.value)


def test_a_few_corrupt_images_among_many_are_skipped_with_a_warning(tmp_path):
    root = image_folder(tmp_path / "d", classes=("a", "b"), n=60, size=(4, 4))
    (root / "train" / "a" / "007.png").write_bytes(b"\x89PNG broken")
    warnings = []
    ds = load(root, image_size=4, warn=warnings.append)
    assert len(ds.train) + len(ds.val) + len(ds.test) == 119
    assert len(warnings) == 1 and "skipped 1 corrupt image(s) of 120" in warnings[0] and "a/007.png" in warnings[0]


def test_a_truncated_image_is_replaced_and_reported_when_read(tmp_path):
    write_images(tmp_path / "c", 3, size=(16, 16))
    data = (tmp_path / "c" / "001.png").read_bytes()
    (tmp_path / "c" / "001.png").write_bytes(data[: len(data) // 2])  # the header reads, the pixels do not
    paths = tuple(str(p) for p in sorted((tmp_path / "c").iterdir()))
    split = FileSplit(paths, np.asarray([0, 1, 2], np.int32), 8, 3)
    images, labels, failed = split.read([0, 1])
    assert failed == (paths[1],) and list(labels) == [0, 2]  # the next readable image took its place
    assert np.array_equal(images[1], decode_image(paths[2], 8, 3))


def test_evaluation_split_is_decoded_in_chunks_into_a_memory_map(tmp_path, monkeypatch):
    import nas_cli.data.imagefiles as imagefiles

    write_images(tmp_path / "c", 7, size=(12, 12))
    data = (tmp_path / "c" / "004.png").read_bytes()
    (tmp_path / "c" / "004.png").write_bytes(data[: len(data) // 2])
    paths = tuple(str(p) for p in sorted((tmp_path / "c").iterdir()))
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv(imagefiles.SPLIT_DIR_ENV, str(cache))
    monkeypatch.setattr(imagefiles, "DECODE_CHUNK", 3)  # 7 images: three chunks, the corrupt one in the second
    monkeypatch.setattr(imagefiles, "MAX_CORRUPT_FRACTION", 0.2)  # 1 of 7 may be skipped
    split = FileSplit(paths, np.arange(7, dtype=np.int32), 8, 3)
    expected, labels, _ = split.read(range(7))
    images = split.images
    assert isinstance(images, np.memmap) and np.array_equal(images, expected)
    assert list(split.labels) == list(labels) == [0, 1, 2, 3, 5, 5, 6]  # the substitute's label in its place
    assert split.images is images and not list(cache.iterdir())  # decoded once; the file has no name
    monkeypatch.setenv(imagefiles.SPLIT_DIR_ENV, str(tmp_path / "absent"))
    with pytest.raises(UserError, match="NAS_SPLIT_DIR=.*absent is not a folder"):
        FileSplit(paths, np.arange(7, dtype=np.int32), 8, 3).images


def test_cli_prints_a_bad_folder_as_one_line(tmp_path):
    from nas_cli.main import app

    root = image_folder(tmp_path / "d")
    (root / "train" / "dog" / "x.csv").write_text("1,2")
    result = CliRunner().invoke(app, ["train-supernet", "--dataset", "folder", "--data-dir", str(root),
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    # one line, besides the CLI's "preparing ..." sign of life (progress, not part of the failure)
    lines = [ln for ln in result.output.strip().splitlines() if not ln.startswith("preparing ")]
    assert len(lines) == 1 and "x.csv is not an image file" in lines[0], result.output


# --- .npz -------------------------------------------------------------------------------------


def write_npz(path: Path, n: int = 40, k: int = 4, side: int = 8, c: int = 3, **extra) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"images": rng.integers(0, 256, (n, side, side, c), dtype=np.uint8),
              "labels": np.arange(n) % k}
    arrays.update(extra)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def test_npz_single_file_and_folder_with_class_names(tmp_path):
    ds = load_dataset("npz", write_npz(tmp_path / "one.npz"), seed=0)
    assert ds.num_classes == 4 and ds.class_names == ("0", "1", "2", "3") and ds.image_shape == (8, 8, 3)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (32, 4, 4)
    names = np.asarray(["a", "b", "c", "d", "e"])  # a class without examples is fine when named
    write_npz(tmp_path / "dir" / "train.npz", class_names=names)
    write_npz(tmp_path / "dir" / "test.npz", n=8)
    ds = load_dataset("npz", tmp_path / "dir", seed=0)
    assert ds.class_names == tuple(names) and len(ds.test) == 8 and len(ds.val) == 4
    gray = load_dataset("npz", write_npz(tmp_path / "g.npz", c=1), seed=0)
    assert gray.image_shape == (8, 8, 1)


@pytest.mark.parametrize("extra, match", [
    ({"labels": np.asarray([0, 1, 200, 1] * 10)}, r"bad\.npz: labels must be 0\.\.K-1 with every class present"),
    ({"labels": np.asarray([0, 1, 7, 1] * 10), "class_names": np.asarray(["x", "y"])},
     r"bad\.npz: label 7 at index 2 is outside the 2 classes 0\.\.1"),
    ({"labels": np.asarray([0, -1] * 20)}, r"label -1 at index 1"),
    ({"labels": np.zeros(40, np.int64)}, r"holds a single class"),
    ({"images": np.zeros((40, 8, 8, 3), np.float32)}, r"images are float32; expected uint8"),
    ({"images": np.zeros((40, 8, 6, 3), np.uint8)}, r"images are 8x6; expected square images"),
    ({"images": np.zeros((40, 8, 8, 2), np.uint8)}, r"expected \(N, H, W, C\) with C 1 or 3"),
    ({"labels": np.arange(39) % 4}, r"40 images but 39 labels"),
    ({"labels": np.linspace(0, 3, 40)}, r"expected \(N,\) integers"),
])
def test_bad_npz_is_a_one_line_error_naming_the_file(tmp_path, extra, match):
    path = write_npz(tmp_path / "bad.npz", **extra)
    with pytest.raises(UserError, match=match) as err:
        load_dataset("npz", path)
    assert "\n" not in str(err.value)


def test_unreadable_npz_and_missing_arrays(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(UserError, match=r"cannot read .*junk\.npz"):
        load_dataset("npz", tmp_path / "junk.npz")
    np.savez(tmp_path / "nolabels.npz", images=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(UserError, match="has no labels array"):
        load_dataset("npz", tmp_path / "nolabels.npz")
    with pytest.raises(UserError, match="has no train.npz"):
        load_dataset("npz", tmp_path)


# --- the built-in files' damage (issue 17, item 4) --------------------------------------------


def _idx(images: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 8, images.ndim) + struct.pack(f">{images.ndim}I", *images.shape) + images.tobytes()


def _mnist(root: Path, train_labels: bytes | None = None, train_images: bytes | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    imgs, labels = np.zeros((20, 6, 6), np.uint8), (np.arange(20) % 10).astype(np.uint8)
    files = {"train-images-idx3-ubyte.gz": train_images or _idx(imgs), "train-labels-idx1-ubyte.gz": train_labels
             or _idx(labels), "t10k-images-idx3-ubyte.gz": _idx(imgs), "t10k-labels-idx1-ubyte.gz": _idx(labels)}
    for name, data in files.items():
        (root / name).write_bytes(gzip.compress(data))
    return root


def test_idx_labels_outside_the_classes_and_damaged_headers(tmp_path):
    assert load_dataset("mnist", _mnist(tmp_path / "ok")).num_classes == 10
    labels = (np.arange(20) % 10).astype(np.uint8)
    labels[5] = 200
    with pytest.raises(UserError, match=r"train-labels-idx1-ubyte\.gz: label 200 at index 5 is outside the 10 classes"):
        load_dataset("mnist", _mnist(tmp_path / "l200", train_labels=_idx(labels)))
    damaged = {"short": b"\x00\x00", "dims": b"\x00\x00\x08\x03\x00\x00",
               "nonsquare": _idx(np.zeros((20, 6, 5), np.uint8))}
    for name, data in damaged.items():
        with pytest.raises(UserError, match=r"train-images-idx3-ubyte\.gz") as err:
            load_dataset("mnist", _mnist(tmp_path / name, train_images=data))
        assert "\n" not in str(err.value)
    root = _mnist(tmp_path / "zlib")
    good = (root / "train-images-idx3-ubyte.gz").read_bytes()
    (root / "train-images-idx3-ubyte.gz").write_bytes(good[:12] + b"\xff" * 40 + good[52:])  # a corrupt deflate stream
    with pytest.raises(UserError, match=r"cannot read .*train-images-idx3-ubyte\.gz"):
        load_dataset("mnist", root)


# --- the input pipeline -----------------------------------------------------------------------


def _array_split(n=20, side=8):
    from nas_cli.data import Split

    rng = np.random.default_rng(1)
    return Split(rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8), np.arange(n, dtype=np.int32))


def test_stream_is_a_function_of_seed_and_epoch_and_shards_split_each_batch():
    split = _array_split()
    opts = StreamOptions(batch_size=8, seed=3, augment="standard", workers=0)
    whole = list(train_stream(split, opts, 0, 3))
    assert len(whole) == 2 * 3
    resumed = list(train_stream(split, opts, 1, 3))  # from epoch 1: what epochs 1-2 of the whole stream were
    for (a, la, _), (b, lb, _) in zip(whole[2:], resumed):
        assert np.array_equal(a, b) and np.array_equal(la, lb)
    assert not np.array_equal(whole[0][1], whole[2][1])  # a new order every epoch
    assert sorted(whole[0][1].tolist() + whole[1][1].tolist()) == sorted(epoch_order(20, 3, 0)[:16].tolist())
    shards = [StepBatches(split, StreamOptions(8, 3, "standard", shard_index=i, shard_count=2), 0)(1)
              for i in range(2)]
    one = StepBatches(split, opts, 0)(1)
    assert np.array_equal(np.concatenate([s[0] for s in shards]), one[0])
    assert np.array_equal(np.concatenate([s[1] for s in shards]), one[1])
    with pytest.raises(ValueError, match="divide by the shard count"):
        StreamOptions(8, 0, shard_count=3)


def test_augmentation_crops_from_the_padded_image_and_flips():
    images = np.arange(2 * 8 * 8 * 1, dtype=np.uint8).reshape(2, 8, 8, 1) + 1
    out = augment_batch(images, np.random.default_rng(0))
    assert out.shape == images.shape and out.dtype == np.uint8
    for i in range(2):
        padded = np.pad(images[i], ((1, 1), (1, 1), (0, 0)))
        found = [(dy, dx, f) for dy in range(3) for dx in range(3) for f in (False, True)
                 if np.array_equal(out[i], (padded[dy:dy + 8, dx:dx + 8][:, ::-1] if f else padded[dy:dy + 8, dx:dx + 8]))]
        assert found
    assert not np.array_equal(augment_batch(images, np.random.default_rng(1)), augment_batch(images, np.random.default_rng(2)))


def test_worker_processes_deliver_what_the_main_process_reads(tmp_path):
    root = image_folder(tmp_path / "d", classes=("a", "b"), n=8, size=(12, 12))
    ds = load(root, image_size=8)
    opts = dict(batch_size=4, seed=0, augment="standard")
    inline = list(train_stream(ds.train, StreamOptions(**opts, workers=0), 0, 2))
    it = train_stream(ds.train, StreamOptions(**opts, workers=1), 0, 2)
    try:
        workers = list(it)
    finally:
        it.close()
    assert len(workers) == len(inline) == 2 * (len(ds.train) // 4)
    for (a, la, _), (b, lb, _) in zip(inline, workers):
        assert np.array_equal(a, b) and np.array_equal(la, lb)
