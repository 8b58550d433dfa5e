"""The training input pipeline, on grain: seeded order per epoch, augmentation, shards, prefetch.

Every batch is a pure function of (seed, epoch, step): the epoch's order is a permutation drawn
from ``(seed, epoch)``, and the augmentation of the step's global batch from ``(seed, epoch, step)``.
So a resumed run reads exactly the batches an uninterrupted one reads, and neither the number of
worker processes nor the number of shards changes what the union of the shards sees.

In-memory splits (the built-in datasets, .npz) and small folders (:func:`decodes_in_process`) are
gathered by one prefetch thread, which overlaps the train step (JAX releases the GIL while it
computes, Pillow while it decodes). Larger folder splits are decoded in grain worker processes
(``mp_prefetch``), each holding a few finished batches; the dataset itself stays on disk. Workers
ignore Ctrl-C (the trainer stops them), and batches travel through the workers' pipes rather than
shared-memory blocks, so closing the stream (``contextlib.closing``), on a normal end, an error or
Ctrl-C alike, leaves no semaphore or shared-memory block behind.

grain's worker processes import this module to run :class:`StepBatches`; it imports numpy and
:mod:`nas_cli.data.imagefiles` (grain itself, imported when a stream starts, brings JAX along).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Iterator, Protocol, Sequence

import numpy as np

from nas_cli.data.imagefiles import FileSplit

#: augmentation names, with what each does (the --augment help text is built from these)
AUGMENTATIONS = {
    "none": "the images as they are",
    "standard": "random crop with zero padding of 1/8 of the side (4 px at 32) and horizontal flip, "
                "drawn anew for every image of every epoch",
}
#: a key that separates the data order's random stream from the subnet sampler's (both use seed, epoch)
_DATA_STREAM = 0x5EED


class ReadableSplit(Protocol):
    labels: np.ndarray

    def __len__(self) -> int: ...

    def read(self, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]: ...


@dataclasses.dataclass(frozen=True)
class StreamOptions:
    """How a training stream is cut and fed.

    Args:
      batch_size: the global batch of one step (every shard together).
      seed: the run's seed.
      augment: one of :data:`AUGMENTATIONS`.
      shard_index, shard_count: this process reads the ``shard_index``-th of ``shard_count`` equal
        slices of every global batch (``batch_size`` must divide by ``shard_count``).
      workers: grain worker processes decoding batches; None: :func:`default_workers`.
      prefetch: finished batches kept ahead (per worker with workers).
    """

    batch_size: int
    seed: int
    augment: str = "none"
    shard_index: int = 0
    shard_count: int = 1
    workers: int | None = None
    prefetch: int = 2

    def __post_init__(self) -> None:
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"augment {self.augment!r} must be one of {', '.join(AUGMENTATIONS)}")
        if not 0 <= self.shard_index < self.shard_count or self.batch_size % self.shard_count:
            raise ValueError(f"shard {self.shard_index} of {self.shard_count}: the batch size {self.batch_size} "
                             "must divide by the shard count, and 0 <= shard_index < shard_count")


#: a folder split whose files hold at most this many bytes is decoded by the prefetch thread of the
#: training process. A worker process costs seconds to start (it imports grain and JAX: 7.6-7.9 s
#: on the 2-core machine, more under load, and it competes with the first compilations), while the
#: thread decodes such a split's epoch of small images in well under a second (36 images of 10x12
#: px: 0.04 s); see bench/RESULTS.md, issue 31.
IN_PROCESS_BYTES = 64 << 20
#: ... and at most this many files (beyond, the sizes are not even summed: workers pay off)
IN_PROCESS_FILES = 10_000


def decodes_in_process(split) -> bool:
    """Whether ``split`` is decoded without worker processes: arrays in memory (a thread gathers a
    batch in microseconds), or a small folder (:data:`IN_PROCESS_BYTES`, :data:`IN_PROCESS_FILES`)."""
    if not isinstance(split, FileSplit):
        return True
    return len(split) <= IN_PROCESS_FILES and split.total_bytes(IN_PROCESS_BYTES) <= IN_PROCESS_BYTES


def default_workers(split) -> int:
    """Worker processes worth starting for ``split``: none where :func:`decodes_in_process`, else the
    cores but one, at most 4."""
    if decodes_in_process(split):
        return 0
    return max(1, min(4, (os.cpu_count() or 2) - 1))


def _worker_ignores_ctrl_c(index: int, count: int) -> None:
    """A worker process's start: Ctrl-C at a terminal reaches the whole process group, and a worker
    that died of it would leave its queued batches behind; the trainer stops the workers instead."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _WorkerStream:
    """A grain iterator over worker processes whose first read (when grain spawns the workers) runs
    in a helper thread while this process ignores SIGINT, until the workers exist: they inherit the
    ignored SIGINT (an ignored signal stays ignored across fork and exec, and Python then installs no
    KeyboardInterrupt handler), so a terminal's Ctrl-C, which reaches the whole process group, cannot
    kill one while it still imports grain and JAX, before ``worker_init_fn`` runs (measured: seconds).
    A Ctrl-C in that short window (the spawn itself) is lost; once the workers exist it interrupts the
    wait for the first batch as usual. ``close`` stops the workers."""

    def __init__(self, dataset, workers: int):
        self._it, self._workers, self._started = iter(dataset), workers, False

    def __iter__(self):
        return self

    def __next__(self):
        if self._started:
            return next(self._it)
        self._started = True
        import threading

        if threading.current_thread() is not threading.main_thread():  # signal handlers are the main thread's
            return next(self._it)
        return self._first()

    def _first(self):
        import multiprocessing
        import signal
        import threading

        result: dict = {}

        def fetch():
            try:
                result["batch"] = next(self._it)
            except BaseException as e:  # noqa: BLE001 - raised again in the main thread
                result["error"] = e

        before = set(multiprocessing.active_children())
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        helper = threading.Thread(target=fetch, name="nas-first-batch", daemon=True)
        try:
            helper.start()
            while helper.is_alive() and len(set(multiprocessing.active_children()) - before) < self._workers:
                helper.join(0.005)
        finally:
            signal.signal(signal.SIGINT, previous)
        helper.join()  # a Ctrl-C interrupts this wait (then the caller closes the stream)
        if "error" in result:
            raise result["error"]
        return result["batch"]

    def close(self) -> None:
        self._it.close()


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits the ``n`` training examples."""
    return np.random.default_rng([seed, epoch, _DATA_STREAM]).permutation(n)


def augment_batch(images: np.ndarray, rng: np.random.Generator, global_batch: int | None = None,
                  start: int = 0) -> np.ndarray:
    """The standard augmentation of a uint8 batch (B, H, W, C): a random crop of the image padded
    with zeros by ``max(1, H // 8)`` pixels on each side, then a horizontal flip with probability 1/2.

    ``rng`` draws for a global batch of ``global_batch`` images (default B), of which ``images`` are
    rows ``start .. start + B - 1`` (one shard's slice): every shard count augments alike.
    """
    b, h, w, _ = images.shape
    total = b if global_batch is None else global_batch
    pad = max(1, h // 8)
    offsets = rng.integers(0, 2 * pad + 1, (total, 2))[start:start + b]
    flips = (rng.random(total) < 0.5)[start:start + b]
    padded = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    out = np.empty_like(images)
    for i, (dy, dx) in enumerate(offsets):
        crop = padded[i, dy:dy + h, dx:dx + w]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


class StepBatches:
    """Step ``k`` of a run from ``start_epoch`` -> this shard's (images, labels, undecodable paths).

    A picklable callable (grain sends it to its worker processes); each process caches the
    permutation of the epoch it is in.
    """

    def __init__(self, split: ReadableSplit, options: StreamOptions, start_epoch: int):
        self.split, self.options, self.start_epoch = split, options, start_epoch
        self.steps_per_epoch = len(split) // options.batch_size
        self._order: tuple[int, np.ndarray] | None = None

    def __call__(self, k: int):
        o = self.options
        epoch, step = self.start_epoch + k // self.steps_per_epoch, k % self.steps_per_epoch
        if self._order is None or self._order[0] != epoch:
            self._order = (epoch, epoch_order(len(self.split), o.seed, epoch))
        per = o.batch_size // o.shard_count
        lo = step * o.batch_size + o.shard_index * per
        images, labels, failed = self.split.read(self._order[1][lo:lo + per])
        if o.augment == "standard":
            # drawn for the global batch, then sliced: the shards together see one run's batch
            rng = np.random.default_rng([o.seed, epoch, step, _DATA_STREAM])
            images = augment_batch(images, rng, o.batch_size, o.shard_index * per)
        return images, labels, failed


def train_stream(split: ReadableSplit, options: StreamOptions, start_epoch: int, end_epoch: int
                 ) -> Iterator[tuple[np.ndarray, np.ndarray, tuple[str, ...]]]:
    """Every training step's batch of epochs ``start_epoch .. end_epoch - 1``, in order, prefetched.

    One grain pipeline spans all the epochs, so worker processes start once and prefetching runs on
    across epoch ends (while the trainer validates). Close the iterator when done (``with
    contextlib.closing(...)``): it owns the worker processes.
    """
    import grain

    fn = StepBatches(split, options, start_epoch)
    steps = fn.steps_per_epoch * max(0, end_epoch - start_epoch)
    ds = grain.MapDataset.range(steps).map(fn)
    workers = default_workers(split) if options.workers is None else options.workers
    if workers > 0:
        from absl import flags  # grain reads its absl flags in mp_prefetch; a program that is no absl app
        if not flags.FLAGS.is_parsed():  # has not parsed them: take their defaults
            flags.FLAGS.mark_as_parsed()
        # no shared-memory blocks: a batch grain copies into one is unlinked by a background thread
        # of the reading process, which interpreter exit cuts short (issue 31: "2 leaked
        # shared_memory objects" at the end of every folder run); a pipe costs one copy per batch
        piped = grain.experimental.WithOptionsIterDataset(
            ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=1)),
            grain.experimental.DatasetOptions(min_shm_size=1 << 62))
        it = piped.mp_prefetch(grain.MultiprocessingOptions(num_workers=workers,
                                                            per_worker_buffer_size=options.prefetch),
                               worker_init_fn=_worker_ignores_ctrl_c)
        return _WorkerStream(it, workers)
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=options.prefetch)))
