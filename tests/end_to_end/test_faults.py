"""Fault injection: nothing silently wrong, every failure one line (issue 17).

One tiny run (digits, the -tiny space, 1 epoch, test_cli's settings, so that the persistent XLA
cache serves both) is trained once for the module; every test works on a copy of it; "training on"
is a further checkpoint step of perturbed weights. Measured latency is replaced by a deterministic function of the FLOPs (the faults
here are about files and state, not timing), which keeps the searches fast.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nas_cli.runs import locks
from nas_cli.main import app
from nas_cli.evaluation.supernet import RunEvaluator

runner = CliRunner()

TINY = ["--dataset", "digits", "--epochs", "1", "--batch-size", "32", "--limit-train", "256",
        "--calib-images", "64", "--seed", "0"]
SEARCH = ["--latency-budget", "100%", "--population", "4", "--generations", "1", "--seed", "0"]


def nas(*args):
    return runner.invoke(app, [str(a) for a in args])


def fails(result, code: int, *needles: str) -> str:
    """Asserts exit ``code``, no traceback, and one failure line on stderr, its last line, holding
    ``needles`` (the lines before it are the command's own progress)."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    failures = [line for line in lines if line.startswith(("error:", "interrupted"))]
    assert len(failures) == 1 and lines[-1] == failures[0], result.stderr
    for needle in needles:
        assert needle in failures[0], failures[0]
    return failures[0]


def ok(result):
    assert result.exit_code == 0, result.output
    return result


def _fake_latencies(self, archs):
    if self._level_record is not None and self.latency_calibration is None:  # as the real one: a level first
        from predictors.files import atomic_write_json

        self.latency_calibration = {"mode": "measured", "level_ms": 1.0, "runtime": self.runtime}
        atomic_write_json(self._level_record, self.latency_calibration)
    return [0.01 + 1e-6 * self.space.flops(a) for a in archs]


@pytest.fixture(autouse=True)
def fake_latency(monkeypatch):
    monkeypatch.setattr(RunEvaluator, "measured_latencies", _fake_latencies)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faults") / "run"
    ok(nas("train-supernet", *TINY, "--out", out))
    return out


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run (in another folder: a copy must work like the original)."""
    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    return copy


def front(search_dir: Path) -> list:
    return json.loads((search_dir / "pareto.json").read_text())["front"]


def train_on(run: Path) -> int:
    """Saves the next checkpoint step with other weights (what resumed training does); its number."""
    import jax

    from nas_cli import runs

    loaded = runs.open_run(run)
    params = jax.tree.map(lambda p: p * 1.01, loaded.params)
    runs.save_checkpoint(run, {"params": params}, loaded.epoch + 1)
    return loaded.epoch + 1


def params_file(run: Path, step: int) -> Path:
    files = sorted(p for p in (run / "checkpoint" / str(step) / "params").rglob("*")
                   if p.is_file() and p.stat().st_size > 400 and "/d/" in p.as_posix())
    return max(files, key=lambda p: p.stat().st_size)


# --- 1. results tied to the weights that measured them ----------------------------------------


def test_a_search_over_changed_weights_is_refused_and_export_too(run: Path, tmp_path: Path):
    ok(nas("search", run, *SEARCH))
    first = front(run / "search")
    pareto = json.loads((run / "search" / "pareto.json").read_text())
    assert pareto["weights"]["step"] == 1 and len(pareto["weights"]["hash"]) == 16
    cache = [json.loads(line) for line in (run / "search" / "cache.jsonl").read_text().splitlines()]
    assert all(rec["weights"] == pareto["weights"] for rec in cache)
    assert train_on(run) == 2
    line = fails(nas("search", run, *SEARCH), 2, "checkpoint step 1", "checkpoint step 2", "--out")
    assert "afresh" in line
    assert front(run / "search") == first  # the finished result is untouched
    fails(nas("export", "subnet", run, "--rank", "1", "--out", tmp_path / "exp"), 2, "search again")
    assert not (tmp_path / "exp" / "subnet.json").exists()
    ok(nas("search", run, *SEARCH, "--out", tmp_path / "fresh"))  # a new folder searches the new weights
    assert json.loads((tmp_path / "fresh" / "pareto.json").read_text())["weights"]["step"] == 2


def test_a_copied_run_is_searched_again_and_the_resume_is_announced(trained: Path, tmp_path: Path):
    a = tmp_path / "a"
    shutil.copytree(trained, a)
    ok(nas("search", a, *SEARCH))
    moved = tmp_path / "elsewhere" / "b"
    shutil.copytree(a, moved)
    again = ok(nas("search", moved, *SEARCH))
    assert "resuming the search" in again.output and "after iteration 1" in again.output
    assert front(moved / "search") == front(a / "search")
    mode = stat.S_IMODE((moved / "search" / "pareto.json").stat().st_mode)
    assert mode == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- 2. divergence ------------------------------------------------------------------------------


def test_a_diverging_training_stops_at_the_first_non_finite_loss(tmp_path: Path, monkeypatch):
    import numpy as np

    import nas_cli.training.supernet as train

    steps = []

    def step(state, trainer, archs, batch, distill=True):  # the loss turns to NaN at the third step
        steps.append(1)
        return state, {"loss": np.float32(np.nan if len(steps) >= 3 else 2.0)}

    monkeypatch.setattr(train, "train_step", step)
    out = tmp_path / "nan"
    fails(nas("train-supernet", *TINY, "--out", out), 2, "diverged", "at step 3 (epoch 1)", "--lr")
    assert not (out / "final.json").exists() and not (out / "checkpoint").exists()


@pytest.mark.slow
def test_a_huge_learning_rate_diverges_with_the_step(tmp_path: Path):
    out = tmp_path / "nan"
    fails(nas("train-supernet", *TINY, "--lr", "1e308", "--out", out), 2, "diverged", "at step", "--lr")
    assert not (out / "final.json").exists() and not (out / "checkpoint").exists()


@pytest.mark.parametrize("lr", ["inf", "nan", "0", "-1"])
def test_a_learning_rate_must_be_finite_and_positive(tmp_path: Path, lr: str):
    fails(nas("train-supernet", *TINY, "--lr", lr, "--out", tmp_path / "r"), 2, "lr")
    assert not (tmp_path / "r" / "config.json").exists()


# --- 3. damaged checkpoints -------------------------------------------------------------------


def _damage(run: Path, step: int) -> None:
    f = params_file(run, step)
    data = bytearray(f.read_bytes())
    data[100:500] = bytes(400)
    f.write_bytes(bytes(data))


def test_a_damaged_checkpoint_is_named_never_used(run: Path, tmp_path: Path):
    train_on(run)
    _damage(run, 2)
    fails(nas("search", run, *SEARCH), 2, "step 2", "damaged", "--resume", "intact step 1")
    fails(nas("export", "subnet", run, "--arch", run_arch(run), "--out", tmp_path / "e"), 2, "step 2", "damaged")
    assert not (run / "search" / "pareto.json").exists() and not (tmp_path / "e" / "subnet.json").exists()


def test_resume_falls_back_to_the_last_intact_step(run: Path):
    from nas_cli import runs
    from nas_cli.errors import UserError

    train_on(run)
    _damage(run, 2)
    with pytest.raises(UserError, match="step 2"):
        runs.intact_step(run, fall_back=False)
    assert runs.intact_step(run, fall_back=True) == 1
    assert (run / "checkpoint-damaged" / "2").is_dir() and not (run / "checkpoint" / "2").exists()


@pytest.mark.slow
def test_resume_after_damage_ends_where_an_undamaged_run_does(tmp_path: Path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    ok(nas("train-supernet", *[a if a != "1" else "2" for a in TINY], "--out", whole))
    shutil.copytree(whole, cut)
    _damage(cut, 2)
    (cut / "final.json").unlink()
    resumed = ok(nas("train-supernet", "--out", cut, "--resume"))  # the run's own settings
    assert "damaged" in resumed.stderr and "resuming" in resumed.output
    assert (cut / "checkpoint-damaged" / "2").is_dir()
    assert json.loads((cut / "final.json").read_text()) == json.loads((whole / "final.json").read_text())


def test_a_truncated_checkpoint_is_one_line(run: Path):
    f = params_file(run, 1)
    f.write_bytes(f.read_bytes()[:10])
    fails(nas("search", run, *SEARCH), 2, "step 1", "no intact step")


# --- 5. locks -----------------------------------------------------------------------------------


def test_a_second_writer_is_refused_naming_the_first(run: Path):
    (run / "search").mkdir()
    with locks.locked(run / "search", what="search folder"):
        fails(nas("search", run, *SEARCH), 2, "in use by process", str(os.getpid()))
    with locks.locked(run, what="training run"):
        fails(nas("train-supernet", "--out", run, "--resume"), 2, "in use by process", str(os.getpid()))
    assert not (run / "search" / "pareto.json").exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(run: Path):
    (run / "search").mkdir()
    (run / "search" / locks.LOCK_FILE).write_text(json.dumps({"pid": 2**22 + 7, "host": "x"}))
    ok(nas("search", run, *SEARCH))


# --- 6. the seed --------------------------------------------------------------------------------


def test_the_same_seed_gives_the_same_front_where_latency_is_deterministic(run: Path, tmp_path: Path):
    ok(nas("search", run, *SEARCH, "--out", tmp_path / "s1"))
    (run / "subnet_accuracy.jsonl").unlink()  # accuracies measured again, not read back
    ok(nas("search", run, *SEARCH, "--out", tmp_path / "s2"))
    assert front(tmp_path / "s1") == front(tmp_path / "s2")


# --- traceback classes ------------------------------------------------------------------------


def _bad_outs(tmp_path: Path) -> list[Path]:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    return [Path("/proc/nas-test/out"), a_file, a_file / "below"]


def test_unusable_output_paths_are_one_line_for_every_command(run: Path, tmp_path: Path):
    csv = _table(tmp_path / "t.csv")
    for bad in _bad_outs(tmp_path):
        named = "nas-test" if "proc" in str(bad) else "a-file"
        fails(nas("train-supernet", *TINY, "--out", bad), 2, named)
        fails(nas("search", run, *SEARCH, "--out", bad), 2, named)
        fails(nas("export", "subnet", run, "--arch", run_arch(run), "--out", bad), 2, named)
        fails(nas("predictor", "sample", run, "--n", "2", "--out", bad / "s.csv"), 2, named)
        fails(nas("predictor", "fit", csv, "--target", "accuracy", "--out", bad, "--model", "ridge"), 2, named)
        fails(nas("latency", "profile", "--space", "mobilenetv3-tiny", "--out", bad / "t.json"), 2, named)
    assert not list(tmp_path.glob("**/pareto.json"))


def _table(path: Path) -> Path:
    path.write_text("a,b,accuracy\n" + "".join(f"x{i % 3},y{i % 4},0.{i:02d}\n" for i in range(1, 25)))
    return path


def run_arch(run: Path) -> str:
    return json.loads((run / "final.json").read_text())["smallest"]


def test_a_full_disk_is_one_line_and_a_rerun_recovers(run: Path, tmp_path: Path, monkeypatch):
    ok(nas("search", run, *SEARCH, "--out", tmp_path / "whole"))
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fails(nas("search", run, *SEARCH, "--out", tmp_path / "cut"), 1, "no space left", "again")
    monkeypatch.setattr(os, "fsync", real)
    ok(nas("search", run, *SEARCH, "--out", tmp_path / "cut"))
    assert front(tmp_path / "cut") == front(tmp_path / "whole")


@pytest.mark.parametrize("text", ['{"epochs": "3"}', '{"epochs": null}', '{"epochs": 1.5}',
                                  '{"distill": "no"}', '{"resolutions": ["8"]}', b'{"space": "\xff"}', "[1]"])
def test_wrong_types_in_a_config_are_one_line_and_leave_no_config(tmp_path: Path, text):
    cfg = tmp_path / "c.json"
    cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
    fails(nas("train-supernet", "--config", cfg, "--out", tmp_path / "r"), 2, "c.json")
    assert not (tmp_path / "r" / "config.json").exists()


def test_a_refused_run_leaves_no_config(tmp_path: Path):
    fails(nas("train-supernet", *TINY, "--batch-size", "4096", "--out", tmp_path / "r"), 2)
    assert not (tmp_path / "r" / "config.json").exists()


@pytest.fixture
def searched(run: Path) -> Path:
    ok(nas("search", run, *SEARCH))
    return run / "search"


def test_damaged_search_files(run: Path, searched: Path, tmp_path: Path):
    whole = front(searched)
    # a bad cache line: skipped with a warning, the search still finishes with the same front
    lines = (searched / "cache.jsonl").read_bytes().splitlines(keepends=True)
    (searched / "cache.jsonl").write_bytes(lines[0] + b'{"arch": 3, "metr\xff\n' + b"".join(lines[1:]))
    (searched / "state.pkl").write_bytes(b"\x80\x05garbage")  # the state: the search starts again
    again = ok(nas("search", run, *SEARCH))
    assert "damaged" in again.stderr and front(searched) == whole
    (searched / "pareto.json").write_text('{"front": [')
    fails(nas("export", "subnet", run, "--rank", "1", "--out", tmp_path / "e"), 2, "pareto.json", "damaged")
    (searched / "search_config.json").write_text("{")
    fails(nas("search", run, *SEARCH), 2, "search_config.json", "damaged")


def test_cheap_arguments_are_checked_before_the_run_is_loaded(tmp_path: Path):
    nothing = tmp_path / "not-a-run"
    fails(nas("export", "subnet", nothing, "--out", tmp_path / "e"), 2, "exactly one of")
    fails(nas("export", "subnet", nothing, "--rank", "1", "--out", tmp_path / "e"), 2, "not a training run")


def test_resume_of_a_folder_without_a_run_is_an_error(tmp_path: Path):
    fails(nas("train-supernet", "--out", tmp_path / "empty", "--resume"), 2, "no training run")
    fails(nas("train-supernet", "--out", tmp_path / "empty", "--resume", "--epochs", "3"), 2, "no training run")


def test_resume_names_a_setting_given_again_that_differs(run: Path):
    (run / "final.json").unlink()
    fails(nas("train-supernet", "--out", run, "--resume", "--epochs", "5"), 2, "epochs: 1 in the run, 5 now")


def test_predictor_sample_more_than_the_space_holds_fails_at_once(run: Path, tmp_path: Path):
    fails(nas("predictor", "sample", run, "--n", str(10**12), "--out", tmp_path / "s.csv"), 2, "--n", "distinct")


def test_damaged_predictor_and_latency_files(tmp_path: Path):
    csv = _table(tmp_path / "t.csv")
    ok(nas("predictor", "fit", csv, "--target", "accuracy", "--out", tmp_path / "p", "--model", "ridge"))
    (tmp_path / "p" / "arrays.npz").write_bytes(b"PK\x03\x04 damaged")
    fails(nas("predictor", "evaluate", tmp_path / "p", csv, "--target", "accuracy"), 2, "arrays.npz", "damaged")
    from predictors.latency import read_latency_file
    from predictors.latency.errors import LatencyError

    base = {"format": "nas-latency-table", "version": 2, "batch": 1, "overhead_ms": 0.1,
            "entries": {"stem": {"ms": 0.1}}, "reference": {"archs": ["a"], "level_ms": 1.0}}
    for broken in ({k: v for k, v in base.items() if k != "entries"}, {**base, "reference": {"archs": []}},
                   {**base, "reference": {"archs": ["a"], "level_ms": "fast"}}):
        (tmp_path / "lut.json").write_text(json.dumps(broken))
        with pytest.raises(LatencyError, match="damaged"):
            read_latency_file(tmp_path / "lut.json")
    read_latency_file(_write(tmp_path / "whole.json", base))


def _write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_ctrl_c_is_one_line_with_how_to_resume(run: Path, monkeypatch):
    import nas_cli.search.pipeline as pipeline

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "run_search", interrupted)
    fails(nas("search", run, *SEARCH), 130, "interrupted; resume with")
    monkeypatch.setattr("nas_cli.training.supernet.train_locked", interrupted)
    (run / "final.json").unlink()
    fails(nas("train-supernet", "--out", run, "--resume"), 130, f"nas train-supernet --out {run} --resume")
