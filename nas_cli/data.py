"""Dataset loaders: bundled 8x8 digits, MNIST / Fashion-MNIST (IDX .gz), CIFAR-10 (binary version).

Every loader returns uint8 images (N, H, W, C) and int32 labels. ``load_dataset`` splits the training
data into train and validation (the validation split feeds everything the search sees) and keeps the
test split for final reporting only.
"""

from __future__ import annotations

import dataclasses
import gzip
import struct
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

from nas_cli.errors import UserError
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


@dataclasses.dataclass(frozen=True)
class Split:
    images: np.ndarray  # (N, H, W, C) uint8
    labels: np.ndarray  # (N,) int32

    def __len__(self) -> int:
        return len(self.labels)


@dataclasses.dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: float  # per-pixel statistics of the training split, for normalisation
    std: float

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.images.shape[1:])


class DatasetSource(NamedTuple):
    """A registered dataset: how to read its (train, test) splits, and what ``data_dir`` must hold.

    ``load(data_dir, seed)`` gets ``data_dir=None`` when ``layout`` is None (a bundled dataset).
    """

    load: Callable[[Path | None, int], tuple[Split, Split]]
    layout: str | None = None


_IDX_LAYOUT = "the four original IDX files " + ", ".join(_IDX_FILES.values())
_CIFAR_LAYOUT = "the CIFAR-10 binary version: " + ", ".join(_CIFAR_TRAIN) + f", {_CIFAR_TEST}"


def _need(path: Path, name: str) -> Path:
    if not path.is_file():
        raise UserError(f"missing dataset file {path} for {name!r}; --data-dir must hold {DATASETS.get(name).layout}")
    return path


def _read_idx(path: Path) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:
        raise UserError(f"cannot read {path}: {e} (expected a gzip-compressed IDX file)") from None
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise UserError(f"{path} is not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated: header says {dims}, found {body.size} bytes of data")
    return body.reshape(dims)


def _load_idx_dataset(name: str, data_dir: Path) -> tuple[Split, Split]:
    arrays = {key: _read_idx(_need(data_dir / fname, name)) for key, fname in _IDX_FILES.items()}
    splits = []
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if len(images) != len(labels):
            raise UserError(f"{name} {part}: {len(images)} images but {len(labels)} labels in {data_dir}")
        splits.append(Split(images[..., None].copy(), labels.astype(np.int32)))
    return splits[0], splits[1]


def _read_cifar(path: Path) -> Split:
    raw = np.fromfile(path, np.uint8)
    if raw.size == 0 or raw.size % _CIFAR_RECORD:
        raise UserError(f"{path} is not a CIFAR-10 binary batch: size {raw.size} is not a multiple of {_CIFAR_RECORD}")
    records = raw.reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0].astype(np.int32)
    if labels.max() > 9:
        raise UserError(f"{path} has label {labels.max()}; CIFAR-10 labels are 0-9")
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, H, W, C)
    return Split(np.ascontiguousarray(images), labels)


def _load_cifar10(data_dir: Path, seed: int) -> tuple[Split, Split]:
    parts = [_read_cifar(_need(data_dir / f, "cifar10")) for f in _CIFAR_TRAIN]
    train = Split(np.concatenate([p.images for p in parts]), np.concatenate([p.labels for p in parts]))
    return train, _read_cifar(_need(data_dir / _CIFAR_TEST, "cifar10"))


def _load_digits(data_dir: None, seed: int) -> tuple[Split, Split]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # (1797, 8, 8, 1)
    labels = bunch.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = len(labels) // 5
    test, train = order[:n_test], order[n_test:]
    return Split(images[train], labels[train]), Split(images[test], labels[test])


#: every dataset ``load_dataset`` reads, by name; a new one is a loader plus one line here
DATASETS: Registry[DatasetSource] = Registry("dataset")
DATASETS.register("digits", DatasetSource(_load_digits))
DATASETS.register("mnist", DatasetSource(lambda d, seed: _load_idx_dataset("mnist", d), _IDX_LAYOUT))
DATASETS.register("fashion-mnist", DatasetSource(lambda d, seed: _load_idx_dataset("fashion-mnist", d), _IDX_LAYOUT))
DATASETS.register("cifar10", DatasetSource(_load_cifar10, _CIFAR_LAYOUT))


def dataset_names() -> list[str]:
    """The datasets ``load_dataset`` knows, in registration order."""
    return DATASETS.names()


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    limit_train: int | None = None,
) -> Dataset:
    """Loads ``name`` and holds out ``val_fraction`` of the training data for validation.

    Args:
      name: one of :func:`dataset_names`.
      data_dir: folder with the dataset's original files (not used for digits, which is bundled).
      val_fraction: fraction of the training split held out as validation (stratification is not
        needed at these sizes; the split is a seeded permutation).
      seed: fixes the validation split (and the digits test split).
      limit_train: keep only the first N training examples after the split (quick experiments).

    Raises:
      UserError: unknown name, missing data dir or file, malformed file.
    """
    if name not in DATASETS:
        raise UserError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    if not 0.0 < val_fraction < 1.0:
        raise UserError(f"val_fraction {val_fraction} must be between 0 and 1")
    source = DATASETS.get(name)
    if source.layout is None:  # bundled
        train, test = source.load(None, seed)
    else:
        if data_dir is None:
            raise UserError(f"dataset {name!r} needs --data-dir pointing at {source.layout}")
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise UserError(f"--data-dir {data_dir} does not exist; it must hold {source.layout}")
        train, test = source.load(data_dir, seed)

    order = np.random.default_rng(seed + 1).permutation(len(train))
    n_val = max(1, int(round(len(train) * val_fraction)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    if limit_train is not None:
        train_idx = train_idx[:limit_train]
    tr = Split(train.images[train_idx], train.labels[train_idx])
    va = Split(train.images[val_idx], train.labels[val_idx])
    pixels = tr.images.astype(np.float64) / 255.0
    return Dataset(
        name=name,
        train=tr,
        val=va,
        test=test,
        num_classes=int(max(train.labels.max(), test.labels.max())) + 1,
        mean=float(pixels.mean()),
        std=float(pixels.std()) or 1.0,
    )


def batches(split: Split, batch_size: int, *, rng: np.random.Generator | None = None, drop_remainder: bool = True):
    """Yields (images uint8, labels) batches; shuffled when ``rng`` is given.

    With ``drop_remainder`` every batch has the same shape (one compiled step); otherwise the last
    batch is padded by repeating examples and a mask marks the real ones: yields (images, labels, mask).
    """
    n = len(split)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    if drop_remainder:
        for start in range(0, n - batch_size + 1, batch_size):
            idx = order[start : start + batch_size]
            yield split.images[idx], split.labels[idx]
        return
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        mask = np.ones(batch_size, bool)
        if len(idx) < batch_size:
            mask[len(idx) :] = False
            idx = np.concatenate([idx, np.resize(idx, batch_size - len(idx))])
        yield split.images[idx], split.labels[idx], mask
