"""What `nas train-supernet` shows while it runs: log lines when piped, TensorBoard scalars per step
written while the epoch runs (each at its own wall time)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

import nas_cli.training.supernet as train_module
from nas_cli.config import TrainConfig
from nas_cli.main import app
from nas_cli.runs.tensorboard import EventWriter, read_scalars
from nas_cli.training.supernet import train_supernet

# the shapes of tests/end_to_end/test_cli.py's run: its programs come from the persistent XLA cache
TINY = dict(space="mobilenetv3-tiny", dataset="digits", epochs=1, batch_size=32, limit_train=256, calib_images=64)


@pytest.mark.slow  # a training: ~100 s on the loaded 2-core machine even with the XLA cache warm
def test_step_scalars_are_written_during_the_epoch_at_their_own_time(tmp_path, monkeypatch):
    writes: list[tuple[int, float, int]] = []  # (step, walltime, steps reported done when written)
    done = [0]

    class Recording(EventWriter):
        def scalars(self, step, values, walltime=None):
            if "train/loss" in values:
                writes.append((step, walltime, done[0]))
            super().scalars(step, values, walltime=walltime)

    monkeypatch.setattr(train_module, "EventWriter", Recording)
    monkeypatch.setattr(train_module, "FINITE_EVERY", 2)  # sync (and write) every 2 steps

    def progress(d, total):
        done[0] = d

    train_supernet(TrainConfig(**TINY), tmp_path / "r", progress=progress, log=lambda m: None)
    steps = [s for s, _, _ in writes]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    assert writes[0][2] < 8, "step 1's loss was written only at the epoch's end"
    times = [t for _, t, _ in writes]
    assert times == sorted(times) and len(set(times)) == len(times)  # each step its own time
    assert [s for s, _ in read_scalars(tmp_path / "r" / "tb")["train/loss"]] == steps


@pytest.mark.slow
def test_piped_output_reads_as_a_log(tmp_path):
    result = CliRunner().invoke(app, ["train-supernet", "--out", str(tmp_path / "r"), "--epochs", "2",
                                      "--batch-size", "32", "--limit-train", "256", "--calib-images", "64"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    assert lines[0].startswith("preparing ")
    assert any(line.startswith("training: step 16/16 (100%), epoch 2/2") for line in lines), out
    assert any("evaluating the largest and smallest subnets" in line for line in lines)
