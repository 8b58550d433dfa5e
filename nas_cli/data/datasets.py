"""Datasets: bundled 8x8 digits, MNIST / Fashion-MNIST (IDX .gz), CIFAR-10 (binary version), the
user's own image folders (``DIR/train/<class>/*.jpg|png``) and .npz arrays.

A split is either in memory (:class:`Split`, uint8 images (N, H, W, C) and int32 labels) or on disk
(:class:`nas_cli.data.imagefiles.FileSplit`, decoded batch by batch); both have ``labels``, ``read`` and
``subset``. ``load_dataset`` splits the training data into train and validation (the validation
split feeds everything the search sees; a dataset without a test split also holds out a test split)
and keeps the test split for final reporting only.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import struct
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

from nas_cli.errors import UserError
from nas_cli.data.imagefiles import FileSplit, scan_split
from search_spaces.registry import Registry

_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
_CIFAR_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST = "test_batch.bin"
_CIFAR_RECORD = 1 + 32 * 32 * 3
DIGIT_NAMES = tuple(str(i) for i in range(10))
FASHION_NAMES = ("t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                 "ankle boot")
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: the side folder images are resized to when neither --image-size nor --resolutions says
DEFAULT_IMAGE_SIZE = 32
#: written in a run directory: the classes, split sizes and normalisation of the run's dataset
DATA_INFO = "data.json"
#: training images a folder dataset's per-channel mean/std are estimated from (a seeded sample)
STATS_SAMPLE = 2000


@dataclasses.dataclass(frozen=True)
class Split:
    """Images in memory."""

    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int32

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])

    def subset(self, indices: np.ndarray) -> "Split":
        return Split(self.images[indices], self.labels[indices])

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """(images, labels, ()) of ``indices`` (the interface of FileSplit.read: nothing fails here)."""
        idx = np.asarray(indices, np.int64)
        return self.images[idx], self.labels[idx], ()

    def note_failures(self, failed: Sequence[str], warn: Callable[[str], None] | None = None) -> None:
        """FileSplit's interface: nothing in memory fails to decode."""


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train: Split | FileSplit
    val: Split | FileSplit
    test: Split | FileSplit
    class_names: tuple[str, ...]
    mean: np.ndarray  # (C,) float32 per-channel statistics of the training split, for normalisation
    std: np.ndarray

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.image_shape)


class Parts(NamedTuple):
    """What a loader read: a split it lacks (None) is held out from ``train`` by ``load_dataset``."""

    train: Split | FileSplit
    test: Split | FileSplit | None
    class_names: tuple[str, ...]
    val: Split | FileSplit | None = None


class DatasetSource(NamedTuple):
    """A registered dataset: how to read its splits, what ``data_dir`` must hold, whether it holds
    natural images (then ``--augment`` defaults to standard).

    ``load(data_dir, seed, image_size, warn)`` gets ``data_dir=None`` when ``layout`` is None (a
    bundled dataset); ``image_size`` is only given to loaders that resize (``resizes``).
    """

    load: Callable[[Path | None, int, int | None, Callable[[str], None]], Parts]
    layout: str | None = None
    natural: bool = False
    resizes: bool = False


_IDX_LAYOUT = "the four original IDX files " + ", ".join(_IDX_FILES.values())
_CIFAR_LAYOUT = "the CIFAR-10 binary version: " + ", ".join(_CIFAR_TRAIN) + f", {_CIFAR_TEST}"
_FOLDER_LAYOUT = "train/<class>/*.jpg|png (optional val/ and test/ alike)"
_NPZ_LAYOUT = ("train.npz (optional val.npz, test.npz), or one .npz file, each with images uint8 (N, H, W, C) "
               "and labels 0..K-1 (optional class_names)")


def _need(path: Path, name: str) -> Path:
    if not path.is_file():
        raise UserError(f"missing dataset file {path} for {name!r}; --data-dir must hold {DATASETS.get(name).layout}")
    return path


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"cannot read {path}: {e} (expected a gzip-compressed IDX file)") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    if ndim == 0 or len(data) < 4 + 4 * ndim:
        raise UserError(f"{path} has a damaged IDX header ({ndim} dimensions, {len(data)} bytes)")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated: header says {dims}, found {body.size} bytes of data")
    return body.reshape(dims)


def check_labels(labels: np.ndarray, num_classes: int, source: str | Path) -> None:
    """Raises UserError naming ``source`` and the first label outside 0..num_classes-1."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise UserError(f"{source}: label {int(labels[bad[0]])} at index {int(bad[0])} is outside the "
                        f"{num_classes} classes 0..{num_classes - 1} ({len(bad)} such labels)")


def _load_idx_dataset(name: str, data_dir: Path, names: tuple[str, ...]) -> Parts:
    arrays = {key: _read_idx(_need(data_dir / fname, name)) for key, fname in _IDX_FILES.items()}
    splits = []
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        image_file, label_file = data_dir / _IDX_FILES[f"{part}_images"], data_dir / _IDX_FILES[f"{part}_labels"]
        if images.ndim != 3 or images.shape[1] != images.shape[2]:
            raise UserError(f"{image_file}: expected square images (N, side, side), found shape {images.shape}")
        if labels.ndim != 1:
            raise UserError(f"{label_file}: expected one label per image (N,), found shape {labels.shape}")
        if len(images) != len(labels):
            raise UserError(f"{name} {part}: {len(images)} images but {len(labels)} labels in {data_dir}")
        check_labels(labels, len(names), label_file)
        splits.append(Split(images[..., None].copy(), labels.astype(np.int32)))
    return Parts(splits[0], splits[1], names)


def _read_cifar(path: Path) -> Split:
    raw = np.fromfile(path, np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise UserError(f"{path} is not a CIFAR-10 binary batch: size {raw.size} is not a multiple of {_CIFAR_RECORD}")
    records = raw.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int32)
    check_labels(labels, 10, path)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, H, W, C)
    return Split(np.ascontiguousarray(images), labels)


def _load_cifar10(data_dir: Path, seed: int, image_size, warn) -> Parts:
    parts = [_read_cifar(_need(data_dir / f, "cifar10")) for f in _CIFAR_TRAIN]
    train = Split(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
    return Parts(train, _read_cifar(_need(data_dir / _CIFAR_TEST, "cifar10")), CIFAR10_NAMES)


def _load_digits(data_dir: None, seed: int, image_size, warn) -> Parts:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (1797, 8, 8, 1)
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = len(labels) // 5
    test, train = order[:n_test], order[n_test:]
    return Parts(Split(images[train], labels[train]), Split(images[test], labels[test]), DIGIT_NAMES)


def _load_folder(data_dir: Path, seed: int, image_size: int | None, warn) -> Parts:
    train_dir = data_dir / "train"
    if not train_dir.is_dir():
        raise UserError(f"--data-dir {data_dir} has no train/ folder; a folder dataset holds {_FOLDER_LAYOUT}")
    side = image_size or DEFAULT_IMAGE_SIZE
    train = scan_split(train_dir, warn=warn)
    out = {}
    for part in ("val", "test"):
        if (data_dir / part).is_dir():
            scan = scan_split(data_dir / part, train.class_names, warn=warn)
            if scan.channels != train.channels:
                raise UserError(f"{data_dir / part} holds {'grayscale' if scan.channels == 1 else 'colour'} images "
                                f"but {train_dir} does not: mixed image modes")
            out[part] = FileSplit(scan.paths, scan.labels, side, scan.channels)
    return Parts(FileSplit(train.paths, train.labels, side, train.channels), out.get("test"), train.class_names,
                 out.get("val"))


def _read_npz(path: Path, num_classes: int | None) -> tuple[Split, tuple[str, ...] | None]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise UserError(f"cannot read {path}: {e} (expected an .npz file written by numpy.savez)") from None
    missing = [k for k in ("images", "labels") if k not in arrays]
    if missing:
        raise UserError(f"{path} has no {' or '.join(missing)} array (found: {', '.join(arrays) or 'none'}); "
                        "expected images uint8 (N, H, W, C) and labels 0..K-1")
    images, labels = arrays["images"], arrays["labels"]
    if images.dtype != np.uint8:
        raise UserError(f"{path}: images are {images.dtype}; expected uint8 pixels 0..255")
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W) grayscale
    if images.ndim != 4 or images.shape[3] not in (1, 3):
        raise UserError(f"{path}: images have shape {images.shape}; expected (N, H, W, C) with C 1 or 3")
    if images.shape[1] != images.shape[2]:
        raise UserError(f"{path}: images are {images.shape[1]}x{images.shape[2]}; expected square images "
                        "(crop or pad them to H == W)")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"{path}: labels have shape {labels.shape} and dtype {labels.dtype}; expected (N,) integers")
    if len(labels) != len(images):
        raise UserError(f"{path}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise UserError(f"{path} holds no images")
    names = None
    if "class_names" in arrays:
        names = tuple(str(c) for c in np.asarray(arrays["class_names"]).reshape(-1))
    k = len(names) if names is not None else num_classes
    if k is None:  # the training file without names: every class 0..K-1 must occur
        negative = np.flatnonzero(labels < 0)
        if len(negative):
            raise UserError(f"{path}: label {int(labels[negative[0]])} at index {int(negative[0])} is negative "
                            f"({len(negative)} negative labels); labels must be 0..K-1")
        k = int(labels.max()) + 1
        present = np.unique(labels)  # sorted; never a range over K (a stray 10**9 label would not fit)
        if len(present) < k:
            gaps = np.flatnonzero(present != np.arange(len(present)))
            first = int(gaps[0]) if len(gaps) else len(present)
            raise UserError(f"{path}: labels must be 0..K-1 with every class present; {k - len(present)} of "
                            f"0..{k - 1} never occur (first {first}); or give class_names")
    check_labels(labels, k, path)
    return Split(np.ascontiguousarray(images), labels.astype(np.int32)), names


def _load_npz(data_dir: Path, seed: int, image_size, warn) -> Parts:
    files = {"train": data_dir} if data_dir.suffix == ".npz" else {
        part: data_dir / f"{part}.npz" for part in ("train", "val", "test") if (data_dir / f"{part}.npz").is_file()}
    if "train" not in files:
        raise UserError(f"--data-dir {data_dir} has no train.npz; it must hold {_NPZ_LAYOUT}")
    train, names = _read_npz(files["train"], None)
    names = names or tuple(str(i) for i in range(int(train.labels.max()) + 1))
    if len(names) < 2:
        raise UserError(f"{files['train']} holds a single class; classification needs at least two")
    out = {}
    for part in ("val", "test"):
        if part in files:
            split, other = _read_npz(files[part], len(names))
            if other is not None and other != names:
                raise UserError(f"{files[part]}: class_names {list(other)} differ from the training file's {list(names)}")
            if split.image_shape != train.image_shape:
                raise UserError(f"{files[part]}: images are {split.image_shape}, the training images "
                                f"{train.image_shape}")
            out[part] = split
    return Parts(train, out.get("test"), names, out.get("val"))


def _need_dir(data_dir: Path, layout: str) -> None:
    if not data_dir.exists():
        raise UserError(f"--data-dir {data_dir} does not exist; it must hold {layout}")


#: every dataset ``load_dataset`` reads, by name; a new one is a loader plus one line here
DATASETS: Registry[DatasetSource] = Registry("dataset")
DATASETS.register("digits", DatasetSource(_load_digits))
DATASETS.register("mnist", DatasetSource(lambda d, seed, s, w: _load_idx_dataset("mnist", d, DIGIT_NAMES),
                                         _IDX_LAYOUT))
DATASETS.register("fashion-mnist", DatasetSource(
    lambda d, seed, s, w: _load_idx_dataset("fashion-mnist", d, FASHION_NAMES), _IDX_LAYOUT))
DATASETS.register("cifar10", DatasetSource(_load_cifar10, _CIFAR_LAYOUT, natural=True))
DATASETS.register("folder", DatasetSource(_load_folder, _FOLDER_LAYOUT, natural=True, resizes=True))
DATASETS.register("npz", DatasetSource(_load_npz, _NPZ_LAYOUT, natural=True))


def dataset_names() -> list[str]:
    """The datasets ``load_dataset`` knows, in registration order."""
    return DATASETS.names()


def channel_stats(split: Split | FileSplit, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of ``split``'s pixels scaled to [0, 1]: over every image of an
    in-memory split (in chunks, float64), over a seeded sample of :data:`STATS_SAMPLE` of a folder."""
    if isinstance(split, FileSplit) and len(split) > STATS_SAMPLE:
        idx = np.sort(np.random.default_rng([seed, 11]).permutation(len(split))[:STATS_SAMPLE])
    else:
        idx = np.arange(len(split))
    c = split.image_shape[2]
    total, total_sq, count = np.zeros(c), np.zeros(c), 0
    for start in range(0, len(idx), 1024):
        chunk, _, failed = split.read(idx[start:start + 1024])
        split.note_failures(failed)  # every corrupt image counts against the split's limit
        chunk = chunk.reshape(-1, c).astype(np.float64) / 255.0
        total += chunk.sum(0)
        total_sq += np.square(chunk).sum(0)
        count += len(chunk)
    mean = total / count
    std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
    return mean.astype(np.float32), np.where(std > 1e-6, std, 1.0).astype(np.float32)


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit_train: int | None = None,
    image_size: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> Dataset:
    """Loads ``name`` and holds out ``val_fraction`` of the training data for validation (and as
    much again for testing, when the dataset has no test split).

    Args:
      name: one of :func:`dataset_names`.
      data_dir: folder with the dataset's original files (not used for digits, which is bundled);
        for npz also a single .npz file.
      val_fraction: fraction of the training split held out as validation (stratification is not
        needed at these sizes; the split is a seeded permutation).
      seed: fixes the validation split (and the digits test split).
      limit_train: keep only the first N training examples after the split (quick experiments).
      image_size: the side folder images are resized to (default :data:`DEFAULT_IMAGE_SIZE`).
      warn: called with one-line warnings (corrupt images skipped); default: printed to stderr.

    Raises:
      UserError: unknown name, missing data dir or file, malformed file or folder.
    """
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction {val_fraction} must be between 0 and 1")
    warn = warn or (lambda m: print(m, file=sys.stderr))
    source = DATASETS.get(name)
    if source.layout is None:  # bundled
        parts = source.load(None, seed, None, warn)
    else:
        if data_dir is None:
            raise UserError(f"dataset {name!r} needs --data-dir pointing at {source.layout}")
        data_dir = Path(data_dir)
        _need_dir(data_dir, source.layout)
        if name != "npz" and not data_dir.is_dir():
            raise UserError(f"--data-dir {data_dir} is not a folder; it must hold {source.layout}")
        parts = source.load(data_dir, seed, image_size if source.resizes else None, warn)

    train = parts.train
    order = np.random.default_rng(seed + 1).permutation(len(train))
    n_hold = max(1, int(round(len(train) * val_fraction)))
    held = [part is None for part in (parts.val, parts.test)]
    if len(train) - n_hold * sum(held) < 2:
        raise UserError(f"{name}: {len(train)} training images are too few to hold out validation/test splits")
    pos = 0
    splits = []
    for part in (parts.val, parts.test):
        if part is None:
            part = train.subset(order[pos:pos + n_hold])
            pos += n_hold
        splits.append(part)
    train_idx = order[pos:]
    if limit_train is not None:
        train_idx = train_idx[:limit_train]
    tr = train.subset(train_idx)
    mean, std = channel_stats(tr, seed)
    return Dataset(name=name, train=tr, val=splits[0], test=splits[1], class_names=tuple(parts.class_names),
                   mean=mean, std=std)


#: files of a folder split whose bytes the data's identity hashes (a seeded sample; every file's
#: name, size and label is hashed)
IDENTITY_SAMPLE = 64


def _split_digest(h, split: Split | FileSplit, seed: int, whole: bool) -> None:
    h.update(np.ascontiguousarray(split.labels, np.int64).tobytes())
    if isinstance(split, FileSplit):
        for path in split.paths:  # class folder and name (not where the folder lies: a moved copy is the same)
            p = Path(path)
            h.update(f"{p.parent.name}/{p.name}\0{p.stat().st_size}\n".encode())
        sample = np.random.default_rng([seed, 31]).permutation(len(split))[:IDENTITY_SAMPLE]
        for i in np.sort(sample):
            h.update(Path(split.paths[i]).read_bytes())
        return
    idx = np.arange(len(split)) if whole else np.sort(
        np.random.default_rng([seed, 31]).permutation(len(split))[:IDENTITY_SAMPLE * 16])
    h.update(np.ascontiguousarray(split.images[idx]).tobytes())


def data_identity(dataset: Dataset, seed: int = 0) -> str:
    """A hash of what a measured accuracy depends on besides the weights (16 hex digits): the
    classes, the normalisation, every label; of an in-memory dataset the whole validation split and a
    seeded sample of the training images (the BatchNorm calibration images come from there); of an
    image folder every file's class, name and size and the bytes of a seeded sample of
    :data:`IDENTITY_SAMPLE` files per split. A changed file outside the sample, of the same size, is
    not seen.

    Raises:
      OSError: a file of a folder split is gone (the data changed under the run).
    """
    import hashlib

    h = hashlib.sha256()
    h.update(json.dumps([dataset.name, list(dataset.class_names), list(dataset.image_shape)]).encode())
    h.update(np.asarray(dataset.mean, np.float32).tobytes() + np.asarray(dataset.std, np.float32).tobytes())
    _split_digest(h, dataset.train, seed, whole=False)
    _split_digest(h, dataset.val, seed, whole=True)
    return h.hexdigest()[:16]


def dataset_info(dataset: Dataset) -> dict:
    """What a run records about its dataset (``data.json``): classes, image shape, split sizes and
    the per-channel normalisation the supernet and every exported subnet apply."""
    return {"dataset": dataset.name, "class_names": list(dataset.class_names), "num_classes": dataset.num_classes,
            "image_shape": list(dataset.image_shape),
            "splits": {"train": len(dataset.train), "val": len(dataset.val), "test": len(dataset.test)},
            "mean": [float(m) for m in dataset.mean], "std": [float(s) for s in dataset.std]}


def calibration_images(dataset: Dataset, n: int, seed: int) -> np.ndarray:
    """A fixed, seeded subset of the training images for BatchNorm recalibration (never augmented)."""
    order = np.random.default_rng(seed + 7).permutation(len(dataset.train))
    images, _, failed = dataset.train.read(order[: min(n, len(order))])
    dataset.train.note_failures(failed)  # counted against the split's 1% like every other read's
    return images
