"""Refused commands leave nothing behind and say why in the user's own words."""

from __future__ import annotations

from typer.testing import CliRunner

from nas_cli.main import app
from nas_cli.evaluation.table import synthetic_nasbench201_rows, write_table

runner = CliRunner()


def test_a_refused_training_leaves_no_folder_holding_only_its_lock(tmp_path):
    out = tmp_path / "runs" / "r"
    result = runner.invoke(app, ["train-supernet", "--dataset", "mnist", "--data-dir", str(tmp_path / "nowhere"),
                                 "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert not out.exists()


def test_a_refused_search_or_export_leaves_no_folder(tmp_path):
    not_a_run = tmp_path / "empty"
    not_a_run.mkdir()
    result = runner.invoke(app, ["search", str(not_a_run), "--latency-budget", "1ms"])
    assert result.exit_code == 2 and "is not a training run" in result.output
    assert list(not_a_run.iterdir()) == []
    result = runner.invoke(app, ["export", "subnet", str(not_a_run), "--rank", "1", "--out", str(tmp_path / "e")])
    assert result.exit_code == 2 and "is not a training run" in result.output
    assert not (tmp_path / "e").exists()


def test_a_folder_someone_uses_or_that_holds_work_is_kept(tmp_path):
    import fcntl
    import os

    from nas_cli.commands._common import removed_if_refused
    from nas_cli.runs.locks import LOCK_FILE

    held, work = tmp_path / "held", tmp_path / "work"
    try:
        with removed_if_refused(held, work):
            held.mkdir()
            work.mkdir()
            (work / LOCK_FILE).write_text("{}")
            (work / "cache.jsonl").write_text("{}\n")
            (held / LOCK_FILE).write_text("{}")
            fd = os.open(held / LOCK_FILE, os.O_RDWR)
            fcntl.flock(fd, fcntl.LOCK_EX)  # another process holding it, as far as flock can tell
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    finally:
        os.close(fd)
    assert (work / "cache.jsonl").exists()
    assert (held / LOCK_FILE).exists()


def test_a_refused_re_search_names_the_settings_as_flags(tmp_path):
    table = tmp_path / "nb201.csv"
    write_table(table, synthetic_nasbench201_rows(seed=0))
    args = ["search", str(tmp_path / "run"), "--benchmark-table", str(table), "--population", "4",
            "--generations", "1"]
    assert runner.invoke(app, [*args, "--latency-budget", "60%"]).exit_code == 0
    again = runner.invoke(app, [*args, "--latency-budget", "50%"])
    assert again.exit_code == 2
    assert "budgets: --latency-budget 60% there, --latency-budget 50% now" in again.stderr, again.stderr
    assert "{" not in again.stderr
