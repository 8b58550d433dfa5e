"""Input pipeline throughput against what the train step consumes, side by side in one run (JSON).

    python bench/input_pipeline.py [--cifar-dir ../shared/data/cifar-10-batches-bin] [--folder-images 50000]

Measures, in one process:
  * ``cifar10``: images/s the pipeline delivers from CIFAR-10 (in memory, 32 px, standard augmentation,
    one prefetch thread), when ``--cifar-dir`` holds the binary version (else skipped);
  * ``folder``: images/s from a folder of JPEGs the bench writes itself (``--folder-images`` of them,
    ``--folder-side`` px, 10 classes), decoded and augmented by ``--workers`` grain worker processes at
    ``--image-size``, and the peak RSS of this process plus its workers while streaming;
  * ``step``: images/s the supernet train step of ``--space`` consumes at the same batch size and
    resolution (the sandwich rule: largest + smallest + 2 random subnets, in-place distillation), after
    ``--warmup`` steps;
and reports each pipeline's ratio to the step (target: >= 3) and the peak RSS (target: < 1.5 GB).

With ``--small-folder N`` (issue 31: a small folder trained far slower than the same images as an
.npz) it also writes N small JPEGs in 3 classes and the same images, decoded at ``--image-size``, as
an .npz, and puts side by side, each in a fresh ``nas train-supernet`` process of one epoch of
``--small-space`` sharing one warm persistent compilation cache (a first, untimed run fills it):
the folder as the pipeline now reads it (in-process for a small folder), the folder with one worker
process (``--data-workers 1``: the default before), and the .npz. ``stream_s`` times one epoch of
batches alone (start-up included) in this process for the same three.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_cli.data.input_pipeline import StreamOptions, train_stream  # noqa: E402

_HERE = Path(__file__).resolve().parent
CIFAR_DIR = _HERE.parent.parent / "shared" / "data" / "cifar-10-batches-bin"


class PeakRSS:
    """Samples the resident memory of this process and all its descendants (from /proc) every 50 ms."""

    def __init__(self):
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss(pid: int) -> int:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        return 0

    @staticmethod
    def _children(pid: int) -> list[int]:
        out = []
        try:
            for task in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{task}/children") as f:
                    out += [int(c) for c in f.read().split()]
        except OSError:
            pass
        return out

    def total(self) -> int:
        todo, seen, total = [os.getpid()], set(), 0
        while todo:
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
            total += self._rss(pid)
            todo += self._children(pid)
        return total

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.total())
            self._stop.wait(0.05)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.total())


def delivered(split, options: StreamOptions, batches: int) -> dict:
    """Images/s over ``batches`` batches, after the first (worker start-up) batch."""
    epochs = -(-(batches + 1) // max(1, len(split) // options.batch_size))
    it = train_stream(split, options, 0, epochs)
    try:
        t_start = time.perf_counter()
        next(it)
        first = time.perf_counter() - t_start
        t0 = time.perf_counter()
        for _ in range(batches):
            images, _, _ = next(it)
        seconds = time.perf_counter() - t0
    finally:
        getattr(it, "close", lambda: None)()
    return {"images_per_s": round(batches * options.batch_size / seconds, 1), "batches": batches,
            "first_batch_s": round(first, 3), "batch_shape": list(images.shape)}


def write_folder(root: Path, n: int, side: int, classes: int = 10) -> None:
    """``n`` JPEGs of ``side`` x ``side * 5 // 4`` px (not square, so decoding crops and resizes)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (64, side, side * 5 // 4, 3), dtype=np.uint8)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True)
    for i in range(n):
        img = base[i % 64].copy()
        img[..., i % 3] //= 1 + i % 7  # every file different
        Image.fromarray(img).save(root / f"c{i % classes}" / f"{i:06d}.jpg", quality=90)


def write_small_folder(root: Path, n: int, side: int, image_size: int) -> Path:
    """``n`` JPEGs of ``side`` x ``side * 5 // 4`` px in 3 classes under ``root/folder/train``, and
    ``root/small.npz`` holding the same images decoded as the folder's reader decodes them."""
    from PIL import Image

    from nas_cli.data.imagefiles import decode_image

    rng = np.random.default_rng(1)
    images, labels = [], []
    for i in range(n):
        c = i % 3
        img = rng.integers(0, 90, (side, side * 5 // 4, 3), dtype=np.uint8)
        img[..., c] += 150
        path = root / "folder" / "train" / f"c{c}" / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(path, quality=90)
        images.append(decode_image(str(path), image_size, 3))
        labels.append(c)
    np.savez(root / "small.npz", images=np.stack(images), labels=np.asarray(labels),
             class_names=np.asarray(["c0", "c1", "c2"]))
    return root


def small_folder_side_by_side(n: int, side: int, image_size: int, space: str, batch: int, repeats: int = 1) -> dict:
    """Wall seconds of one training epoch: folder (default reading), folder with one worker, npz;
    ``repeats`` rounds, each in another order (the machine's load drifts), and their medians."""
    import contextlib
    import subprocess

    from nas_cli.data import load_dataset

    out: dict = {"images": n, "jpeg_size": [side, side * 5 // 4], "image_size": image_size, "space": space,
                 "batch_size": batch}
    with tempfile.TemporaryDirectory() as tmp:
        root = write_small_folder(Path(tmp), n, side, image_size)
        env = dict(os.environ, NAS_CACHE_DIR=os.environ.get("NAS_CACHE_DIR") or str(Path(tmp) / "xla-cache"),
                   PYTHONPATH=str(_HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        folder = ["--dataset", "folder", "--data-dir", str(root / "folder"), "--image-size", str(image_size)]
        npz = ["--dataset", "npz", "--data-dir", str(root / "small.npz")]
        runs = {"folder": folder, "folder_1_worker": folder + ["--data-workers", "1"], "npz": npz}
        order = [("warm_up_npz", npz)] + [item for r in range(repeats)
                                          for item in list(runs.items())[r % 3:] + list(runs.items())[:r % 3]]
        train: dict = {name: {"wall_s": [], "leak_warnings": 0} for name in runs}
        for i, (name, data) in enumerate(order):
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-m", "nas_cli", "train-supernet", *data, "--space", space,
                                   "--epochs", "1", "--batch-size", str(batch), "--augment", "standard",
                                   "--seed", "0", "--out", str(Path(tmp) / f"{i}-{name}")],
                                  env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{name}: {proc.stderr[-2000:]}")
            if name in train:
                train[name]["wall_s"].append(round(time.perf_counter() - t0, 1))
                train[name]["leak_warnings"] += proc.stderr.count("leaked")
        for t in train.values():
            t["median_s"] = float(np.median(t["wall_s"]))
        out["train_epoch"] = train
        out["train_ratio_to_npz"] = {k: round(train[k]["median_s"] / train["npz"]["median_s"], 2)
                                     for k in ("folder", "folder_1_worker")}
        streams = {}
        for name, ds_args, workers in (("folder", ("folder", root / "folder"), None),
                                       ("folder_1_worker", ("folder", root / "folder"), 1),
                                       ("npz", ("npz", root / "small.npz"), None)):
            ds = load_dataset(*ds_args, image_size=image_size if ds_args[0] == "folder" else None)
            t0 = time.perf_counter()
            opts = StreamOptions(batch_size=batch, seed=0, augment="standard", workers=workers)
            with contextlib.closing(train_stream(ds.train, opts, 0, 1)) as it:
                count = sum(1 for _ in it)
            streams[name] = {"stream_s": round(time.perf_counter() - t0, 3), "batches": count}
        out["stream_epoch"] = streams
    return out


def step_rate(space_name: str, batch: int, resolution: int, steps: int, warmup: int) -> dict:
    """Images/s the training step consumes (the sandwich rule of ``nas train-supernet``)."""
    import jax

    from nas_cli.config import TrainConfig
    from nas_cli.training.supernet import TrainState, init_sampler, make_optimizer, step_archs, train_step
    from search_spaces import get_space

    kw = {} if space_name.endswith("-tiny") else {"resolutions": (resolution,)}
    space = get_space(space_name, in_channels=3, num_classes=10, **kw)
    res = space.largest().resolution
    cfg = TrainConfig(space=space_name, dataset="cifar10", batch_size=batch)
    trainer = space.make_trainer(np.full(3, 0.5, np.float32), np.full(3, 0.25, np.float32), cfg.label_smoothing,
                                 "xla")
    state = TrainState.create(space.init_supernet(jax.random.key(0)), make_optimizer(cfg, 100))
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (batch, res, res, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, batch).astype(np.int32)
    sampler = init_sampler(space, "uniform", cfg.max_flops_jump)
    largest, smallest = space.largest(), space.smallest()
    t_compile = time.perf_counter()
    times = []
    for i in range(warmup + steps):
        archs, sampler = step_archs(cfg, "all", largest, smallest, space, sampler, rng)
        t0 = time.perf_counter()
        state, metrics = train_step(state, trainer, archs, (images, labels))
        float(metrics["loss"])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
        elif i == warmup - 1:
            t_compile = time.perf_counter() - t_compile
    median = float(np.median(times))
    return {"space": space.name, "resolution": res, "batch_size": batch, "subnets_per_step": len(archs),
            "step_s_median": round(median, 4), "images_per_s": round(batch / median, 1), "steps": steps,
            "warmup_s": round(t_compile, 1) if warmup else None}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cifar-dir", type=Path, default=CIFAR_DIR)
    ap.add_argument("--folder-images", type=int, default=50_000)
    ap.add_argument("--folder-side", type=int, default=40, help="generated JPEGs' height (width is 5/4 of it)")
    ap.add_argument("--image-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=200, help="batches timed per pipeline")
    ap.add_argument("--workers", type=int, default=None, help="folder decoding processes (default: the pipeline's)")
    ap.add_argument("--space", default="mobilenetv3")
    ap.add_argument("--steps", type=int, default=10, help="train steps timed")
    ap.add_argument("--warmup", type=int, default=5, help="train steps before timing (compilation)")
    ap.add_argument("--small-folder", type=int, default=0,
                    help="images of the small folder trained side by side with the same .npz (0: skip)")
    ap.add_argument("--small-side", type=int, default=40, help="the small folder's JPEG height (width 5/4 of it)")
    ap.add_argument("--small-space", default="mobilenetv3-tiny")
    ap.add_argument("--small-only", action="store_true", help="run the small-folder comparison alone")
    ap.add_argument("--small-repeats", type=int, default=1, help="rounds of the three small-folder trainings")
    args = ap.parse_args(argv)
    if args.small_only:
        out = {"machine": {"cpus": os.cpu_count(), "load_1min": round(os.getloadavg()[0], 2)},
               "small_folder": small_folder_side_by_side(args.small_folder or 60, args.small_side, args.image_size,
                                                         args.small_space, args.batch_size, args.small_repeats)}
        print(json.dumps(out, indent=1))
        return out

    from nas_cli.data import load_dataset
    from nas_cli.data.input_pipeline import default_workers

    out: dict = {"machine": {"cpus": os.cpu_count()}}
    opts = dict(batch_size=args.batch_size, seed=0, augment="standard")
    if (args.cifar_dir / "data_batch_1.bin").is_file():
        cifar = load_dataset("cifar10", args.cifar_dir)
        out["cifar10"] = {"train_images": len(cifar.train),
                          **delivered(cifar.train, StreamOptions(**opts, workers=0), args.batches)}
        del cifar  # not held while the folder's memory is measured
    else:
        out["cifar10"] = {"skipped": f"no CIFAR-10 binary version in {args.cifar_dir}"}

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "jpegs"
        t0 = time.perf_counter()
        write_folder(root / "train", args.folder_images, args.folder_side)
        written = time.perf_counter() - t0
        t0 = time.perf_counter()
        with PeakRSS() as rss:
            folder = load_dataset("folder", root, image_size=args.image_size)
            scanned = time.perf_counter() - t0
            workers = default_workers(folder.train) if args.workers is None else args.workers
            batches = min(args.batches, 10 * (len(folder.train) // args.batch_size))
            result = delivered(folder.train, StreamOptions(**opts, workers=workers), batches)
        out["folder"] = {"images": args.folder_images, "jpeg_size": [args.folder_side, args.folder_side * 5 // 4],
                         "image_size": args.image_size, "workers": workers, "write_s": round(written, 1),
                         "load_s": round(scanned, 2), **result, "peak_rss_mb": round(rss.peak / 2**20, 1)}

    if args.small_folder:
        out["small_folder"] = small_folder_side_by_side(args.small_folder, args.small_side, args.image_size,
                                                        args.small_space, args.batch_size, args.small_repeats)
    out["step"] = step_rate(args.space, args.batch_size, args.image_size, args.steps, args.warmup)
    consumed = out["step"]["images_per_s"]
    out["ratio_to_step"] = {k: round(out[k]["images_per_s"] / consumed, 2)
                            for k in ("cifar10", "folder") if "images_per_s" in out[k]}
    out["targets"] = {"ratio_at_least": 3.0, "peak_rss_mb_below": 1536,
                      "met": all(r >= 3 for r in out["ratio_to_step"].values())
                      and out["folder"]["peak_rss_mb"] < 1536}
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
