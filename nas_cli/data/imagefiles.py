"""Image folders on disk: scanning ``DIR/<split>/<class>/*``, and decoding files one batch at a time.

This module imports only numpy and Pillow: the input pipeline's worker processes unpickle
:class:`FileSplit` and decode with it.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from nas_cli.errors import UserError

#: file names a class folder may hold (hidden files, such as .DS_Store, are ignored)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
#: Pillow modes that are read as grayscale; every other mode (RGB, RGBA, P, CMYK, ...) is read as RGB
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
#: corrupt images a split may hold before loading fails: 1% of its files (skipped with a warning)
MAX_CORRUPT_FRACTION = 0.01


#: images decoded at a time when a whole evaluation split is decoded (:attr:`FileSplit.images`)
DECODE_CHUNK = 256
#: the environment variable naming the folder for decoded evaluation splits (default: the system's temp folder)
SPLIT_DIR_ENV = "NAS_SPLIT_DIR"


def decoded_split_dir() -> str:
    """Where decoded evaluation splits are memory-mapped: ``$NAS_SPLIT_DIR``, else the system's
    temp folder (``$TMPDIR``); point it at a disk, not a RAM-backed tmpfs, for large splits."""
    path = os.environ.get(SPLIT_DIR_ENV) or tempfile.gettempdir()
    if not os.path.isdir(path):
        raise UserError(f"{SPLIT_DIR_ENV}={path} is not a folder; set it to a writable folder on a disk")
    return path


def allowed_corrupt(n: int) -> int:
    """How many of ``n`` images may be corrupt and skipped; more is an error."""
    return int(n * MAX_CORRUPT_FRACTION)


class ImageDecodeError(Exception):
    """A file that Pillow cannot decode (corrupt, truncated, not an image)."""


def _eight_bit(im):
    """``im`` with 16-bit grayscale put at 8 bits by its true scale (Pillow's own conversion clips
    every value above 255 to white). Mode ``I`` (32-bit integers, what some decoders give 16-bit
    files) is read as 16-bit when any value exceeds 255, else as 8-bit."""
    from PIL import Image

    if not (im.mode.startswith("I;16") or im.mode == "I"):
        return im
    values = np.asarray(im).astype(np.float64)
    if im.mode.startswith("I;16") or values.max(initial=0) > 255:
        values = values / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.round(values), 0, 255).astype(np.uint8), "L")


def decode_image(path: str, side: int, channels: int) -> np.ndarray:
    """``path`` as uint8 (side, side, channels): the centred square of its shorter side, resized
    bilinearly (JPEGs are first decoded at the smallest power-of-two scale that still covers it).

    Raises:
      ImageDecodeError: anything Pillow raises while decoding.
    """
    from PIL import Image

    mode = "RGB" if channels == 3 else "L"
    try:
        with Image.open(path) as im:
            im.draft(mode, (side, side))
            im = _eight_bit(im).convert(mode)
            w, h = im.size
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            if w != h:  # cropped first: resize(box=...) would still blend in pixels beside the box
                im = im.crop((left, top, left + s, top + s))
            if s != side:
                im = im.resize((side, side), Image.BILINEAR)
            arr = np.asarray(im, np.uint8)
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, ... for bad files
        raise ImageDecodeError(f"{type(e).__name__}: {e}") from None
    return arr.reshape(side, side, channels)


@dataclasses.dataclass(frozen=True, eq=False)
class FileSplit:
    """Images kept on disk: decoded (and resized to ``side``) only when read.

    ``labels`` are in memory; :meth:`read` decodes a batch; ``images`` decodes the whole split once
    and keeps it (the evaluation splits: validation and test, which every subnet's accuracy reads).
    A file that fails to decode is replaced by the next readable file of the split (deterministic,
    so a resumed run reads what an uninterrupted one read) and reported in ``read``'s third result.
    """

    paths: tuple[str, ...]
    labels: np.ndarray  # (N,) int32
    side: int
    channels: int

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (self.side, self.side, self.channels)

    def total_bytes(self, limit: int | None = None) -> int:
        """The files' sizes summed (stops once past ``limit``, returning a sum above it); a file
        gone counts 0 (reading it fails later, naming it)."""
        total = 0
        for path in self.paths:
            try:
                total += os.stat(path).st_size
            except OSError:
                pass
            if limit is not None and total > limit:
                break
        return total

    def subset(self, indices: np.ndarray) -> "FileSplit":
        return FileSplit(tuple(self.paths[i] for i in indices), self.labels[indices], self.side, self.channels)

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
        """(images (B, side, side, C) uint8, labels (B,), paths that failed to decode)."""
        n = len(self.paths)
        out = np.empty((len(indices), self.side, self.side, self.channels), np.uint8)
        labels = np.empty(len(indices), np.int32)
        failed = []
        for j, i in enumerate(indices):
            i = int(i)
            for _ in range(min(n, 64)):
                try:
                    out[j] = decode_image(self.paths[i], self.side, self.channels)
                    labels[j] = self.labels[i]
                    break
                except ImageDecodeError:
                    failed.append(self.paths[i])
                    i = (i + 1) % n
            else:
                raise UserError(f"64 consecutive images from {self.paths[int(indices[j])]} on cannot be decoded")
        return out, labels, tuple(dict.fromkeys(failed))

    @functools.cached_property
    def images(self) -> np.ndarray:
        """The whole split decoded, (N, side, side, C) uint8, computed once, :data:`DECODE_CHUNK`
        images at a time, into a memory-mapped file (:func:`decoded_split_dir`) rather than the process's
        memory: the evaluation splits, which every subnet's accuracy reads batch by batch, are held by
        the OS page cache (a 50,000-image validation split at 224 px is 7.5 GB). The file has no
        name on disk once opened and goes with the process."""
        n = len(self)
        shape = (n, self.side, self.side, self.channels)
        if n == 0:
            return np.empty(shape, np.uint8)
        with tempfile.TemporaryFile(dir=decoded_split_dir(), prefix="nas-split-") as handle:
            images = np.memmap(handle, np.uint8, "w+", shape=shape)  # keeps the file open after the with
        labels = np.empty(n, np.int32)
        failed: list[str] = []
        for start in range(0, n, DECODE_CHUNK):
            chunk, labels[start:start + DECODE_CHUNK], bad = self.read(np.arange(start, min(n, start + DECODE_CHUNK)))
            images[start:start + len(chunk)] = chunk
            failed += bad
        check_decode_failures(list(dict.fromkeys(failed)), n,
                              Path(self.paths[0]).parent.parent, lambda m: print(m, file=sys.stderr))
        object.__setattr__(self, "labels", labels)  # a skipped file's place holds its substitute's label
        return images

    def note_failures(self, failed: Sequence[str], warn: Callable[[str], None] | None = None) -> None:
        """Counts ``failed`` (files :meth:`read` could not decode) against this split's limit: every
        corrupt image counts, whichever read found it (the normalisation statistics, the BatchNorm
        calibration images, a training batch), each warned about once.

        Raises:
          UserError: more than :data:`MAX_CORRUPT_FRACTION` of the split's files have failed.
        """
        seen = self.__dict__.setdefault("_failed", {})
        new = [f for f in failed if f not in seen]
        if not new:
            return
        seen.update(dict.fromkeys(new))
        check_decode_failures(list(seen), len(self), Path(self.paths[0]).parent.parent)
        for f in new:
            (warn or (lambda m: print(m, file=sys.stderr)))(
                f"warning: {f} cannot be decoded; replaced by the next readable image "
                f"({len(seen)} skipped so far of {len(self)})")

    def __getstate__(self) -> dict:
        """What grain sends to a worker process: the file list, never decoded images."""
        return {k: v for k, v in self.__dict__.items() if k not in ("images", "_failed")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)


def check_decode_failures(failed: Sequence[str], n: int, where: Path, warn: Callable[[str], None] | None = None,
                          ) -> None:
    """Raises UserError when more than :data:`MAX_CORRUPT_FRACTION` of ``n`` images fail to decode;
    otherwise ``warn``s about the ones that did."""
    if not failed:
        return
    if len(failed) > allowed_corrupt(n):
        raise UserError(f"{failed[0]} cannot be decoded ({len(failed)} of {n} images in {where} are corrupt or "
                        f"truncated; at most {MAX_CORRUPT_FRACTION:.0%} are skipped); replace or remove them")
    if warn is not None:
        warn(f"warning: skipped {len(failed)} corrupt image(s) of {n} in {where}: {', '.join(failed[:5])}"
             + (" ..." if len(failed) > 5 else "") + " (each replaced by the next readable image)")


@dataclasses.dataclass(frozen=True)
class FolderScan:
    """The readable image files of one split folder, with their class labels and colour kind."""

    paths: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    channels: int


def _class_folders(split_dir: Path) -> list[Path]:
    entries = sorted(p for p in split_dir.iterdir() if not p.name.startswith("."))
    stray = [p for p in entries if not p.is_dir()]
    if stray:
        raise UserError(f"{stray[0]} is not in a class folder; images go in {split_dir}/<class name>/")
    return entries


def scan_split(split_dir: Path, class_names: Sequence[str] | None = None, *,
               warn: Callable[[str], None] | None = None) -> FolderScan:
    """Lists ``split_dir/<class>/*`` and reads every file's header (not its pixels).

    Args:
      split_dir: a split folder (``DIR/train``, ``DIR/val`` or ``DIR/test``).
      class_names: the training split's classes; a val/test split may hold any subset of them.
      warn: called with a one-line warning for corrupt files skipped (at most 1% of the files).

    Raises:
      UserError: no class folders, an empty class folder, a file that is no image, a single class,
        a class unknown to the training split, grayscale mixed with colour, too many corrupt files.
    """
    from PIL import Image

    folders = _class_folders(split_dir)
    if class_names is None:
        if len(folders) < 2:
            found = f"only {folders[0].name!r}" if folders else "none"
            raise UserError(f"{split_dir} needs at least two class folders (<class>/*.jpg|png), found {found}")
        class_names = tuple(p.name for p in folders)
    index = {name: i for i, name in enumerate(class_names)}
    paths, labels, kinds, corrupt = [], [], [], []
    for folder in folders:
        if folder.name not in index:
            raise UserError(f"{folder}: class {folder.name!r} is not among the training classes "
                            f"({', '.join(class_names)})")
        files = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
        if not files:
            raise UserError(f"class folder {folder} is empty; every class needs at least one image")
        for f in files:
            if f.is_dir() or f.suffix.lower() not in IMAGE_SUFFIXES:
                raise UserError(f"{f} is not an image file; a class folder holds only {' '.join(IMAGE_SUFFIXES)} files")
            try:
                with Image.open(f) as im:
                    mode = im.mode
            except Exception:  # not decodable: counted, and an error if there are many
                corrupt.append(str(f))
                continue
            paths.append(str(f))
            labels.append(index[folder.name])
            kinds.append(mode in GRAY_MODES)
    check_decode_failures(corrupt, len(paths) + len(corrupt), split_dir, warn)
    gray = np.asarray(kinds, bool)
    if gray.any() and not gray.all():
        minority = np.flatnonzero(gray if gray.sum() <= (~gray).sum() else ~gray)[0]
        first = 0 if gray[0] != gray[minority] else int(np.flatnonzero(gray != gray[minority])[0])
        what = "grayscale" if gray[minority] else "colour"
        raise UserError(f"{paths[minority]} is {what} but {paths[first]} is not: mixed image modes "
                        f"({int(gray.sum())} grayscale, {int((~gray).sum())} colour); convert all images to RGB "
                        "or all to grayscale")
    return FolderScan(tuple(paths), np.asarray(labels, np.int32), tuple(class_names), 1 if gray.all() else 3)
