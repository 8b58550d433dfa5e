"""Image folders: small ones decode in the training process; worker processes, where they run, leave
no semaphore or shared-memory block behind on a normal end, an error or Ctrl-C (issue 31).

Python's resource tracker reports what a process left behind when the process ends
("resource_tracker: There appear to be N leaked semaphore objects"), so each case runs in a
subprocess and reads its stderr.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nas_cli.data import input_pipeline as pipeline
from nas_cli.data import load_dataset
from nas_cli.data.input_pipeline import StreamOptions, train_stream

ROOT = Path(__file__).resolve().parents[2]


def _folder(root: Path, n: int = 12, side: int = 12) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog", "owl")):
        (root / "train" / name).mkdir(parents=True)
        for i in range(n):
            img = rng.integers(0, 80, (side, side + 2, 3), dtype=np.uint8)
            img[..., c] += 160
            Image.fromarray(img).save(root / "train" / name / f"{i}.png")
    return root


def _env() -> dict:
    return dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _no_leaks(stderr: str) -> None:
    assert "leaked" not in stderr and "resource_tracker" not in stderr, stderr[-3000:]


def test_a_small_folder_decodes_in_process_and_a_large_one_in_workers(tmp_path, monkeypatch):
    ds = load_dataset("folder", _folder(tmp_path / "data"), image_size=8)
    assert pipeline.decodes_in_process(ds.train) and pipeline.default_workers(ds.train) == 0
    size = ds.train.total_bytes()
    assert size == sum(os.stat(p).st_size for p in ds.train.paths)
    assert ds.train.total_bytes(limit=10) > 10  # stops early, above the limit
    monkeypatch.setattr(pipeline, "IN_PROCESS_BYTES", size - 1)
    assert not pipeline.decodes_in_process(ds.train) and pipeline.default_workers(ds.train) >= 1


def test_workers_and_the_prefetch_thread_deliver_the_same_batches(tmp_path):
    ds = load_dataset("folder", _folder(tmp_path / "data"), image_size=8)
    batches = {}
    for workers in (0, 1):
        with contextlib.closing(train_stream(ds.train, StreamOptions(8, 3, "standard", workers=workers), 0, 2)) as it:
            batches[workers] = list(it)
    assert len(batches[0]) == len(batches[1]) == 2 * (len(ds.train) // 8)
    for (a, la, fa), (b, lb, fb) in zip(batches[0], batches[1]):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
        assert fa == fb == ()


_STREAM = """
import contextlib, sys
from nas_cli.data import load_dataset
from nas_cli.data.input_pipeline import StreamOptions, train_stream
if __name__ == "__main__":
    ds = load_dataset("folder", sys.argv[1], image_size=8)
    with contextlib.closing(train_stream(ds.train, StreamOptions(8, 0, "standard", workers=2), 0, 3)) as it:
        for i, batch in enumerate(it):
            if sys.argv[2] == "error" and i == 1:
                raise ValueError("stopped on purpose")
    print("done", i + 1)
"""


@pytest.mark.slow  # two worker processes start and stop in a fresh process: ~30 s on the loaded 2-core machine
@pytest.mark.parametrize("end", ["normal", "error"])
def test_worker_streams_leave_nothing_behind(tmp_path, end):
    script = tmp_path / "stream.py"
    script.write_text(_STREAM)
    proc = subprocess.run([sys.executable, str(script), str(_folder(tmp_path / "data")), end], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    if end == "normal":
        assert proc.returncode == 0 and "done 9" in proc.stdout, proc.stderr[-3000:]
    else:
        assert proc.returncode == 1 and "stopped on purpose" in proc.stderr, proc.stderr[-3000:]
    _no_leaks(proc.stderr)


def _spawned_workers(pid: int) -> list[int]:
    """Child processes of ``pid`` started by multiprocessing's spawn (grain's workers)."""
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            for child in f.read().split():
                with open(f"/proc/{child}/cmdline", "rb") as g:
                    if b"spawn_main" in g.read():
                        found.append(int(child))
    return found


@pytest.mark.slow
def test_ctrl_c_during_a_folder_training_with_workers_leaves_nothing_behind(tmp_path):
    root = _folder(tmp_path / "data", n=20)
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "nas_cli", "train-supernet", "--dataset", "folder", "--data-dir",
                             str(root), "--image-size", "8", "--epochs", "2", "--batch-size", "8", "--calib-images",
                             "16", "--seed", "0", "--data-workers", "1", "--out", str(run)],
                            cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group: Ctrl-C at a terminal signals it all
    try:
        deadline = time.monotonic() + 600
        while not _spawned_workers(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        time.sleep(3)  # the worker is up and feeding the stream
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted; resume with" in err, err[-3000:]
    assert "multiprocessing" not in err and "grain" not in err, err[-3000:]  # no worker died of the Ctrl-C
    _no_leaks(err)
