"""The progress display of `nas train-supernet`: compile phases seen as they happen, an ETA without
compile time, plain log lines when the output is not a terminal."""

from __future__ import annotations

import io

from nas_cli.commands._progress import StepProgress, clock


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _display(tty: bool, interval: float = 30.0):
    stream, now = io.StringIO(), Clock()
    return StepProgress("training", epochs=2, stream=stream, tty=tty, interval=interval, now=now), stream, now


def test_log_lines_say_when_compiling_starts_and_ends_and_the_eta_excludes_it():
    p, out, now = _display(tty=False)
    for i in range(3):  # 3 programs, 20 s each
        now.t += 20
        p.compiled(False, 1.0)
        p.compiled(True, 19.0)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("compiling: JAX compiles each new program once")
    assert any("compiling: 3 programs so far" in line for line in lines), lines
    # 10 steps of 0.5 s each after the compiles; the first report starts the clock
    for done in range(1, 11):
        now.t += 3.0 if done == 1 else 0.5
        p(done, 40)
    text = out.getvalue()
    assert "compiled 3 programs in" in text
    assert p.rate() == 9 / 4.5  # compile time is not in the rate
    assert abs(p.eta() - 30 / 2.0) < 1e-9
    now.t += 31  # the next step after the interval prints a status line with the ETA
    p(11, 40)
    last = out.getvalue().splitlines()[-1]
    assert "step 11/40 (28%), epoch 1/2" in last and "ETA" in last and "compile time excluded" in last
    assert "\r" not in out.getvalue()


def test_a_compile_during_training_is_left_out_of_the_rate():
    p, out, now = _display(tty=False)
    p(1, 100)
    for done in range(2, 12):
        now.t += 1.0
        p(done, 100)
    assert p.rate() == 1.0
    now.t += 30  # a step that compiled for 29 s
    p.compiled(True, 29.0)
    now.t += 1.0  # the compile ends more than 2 s before the next step
    p.compiled(False, 0.0)
    now.t += 3.0
    p(12, 100)
    assert abs(p.rate() - 11 / (10 + 34 - 29)) < 1e-9


def test_terminal_redraws_one_line_and_messages_go_above_it():
    p, out, now = _display(tty=True)
    p(1, 10)
    now.t += 1
    p(2, 10)
    p.log("a message")
    text = out.getvalue()
    assert "\r\x1b[2K" in text and "a message\n" in text
    # the line was cleared for the message, then redrawn below it
    assert text.endswith("\r\x1b[2Ka message\n\r\x1b[2Ktraining: step 2/10 (20%), epoch 1/2, ETA after a few steps")
    p.close()
    assert out.getvalue().endswith("\n")


def test_clock():
    assert clock(5) == "0:05" and clock(125) == "2:05" and clock(3725) == "1:02:05"


def test_search_lines_say_iteration_i_of_n_and_evaluations_e_of_n(tmp_path):
    from typer.testing import CliRunner

    from nas_cli.main import app
    from nas_cli.evaluation.table import synthetic_nasbench201_rows, write_table

    table = tmp_path / "nb201.csv"
    write_table(table, synthetic_nasbench201_rows(seed=0))
    runner = CliRunner()
    plain = runner.invoke(app, ["search", str(tmp_path / "a"), "--benchmark-table", str(table),
                                "--latency-budget", "60%", "--population", "8", "--generations", "2"])
    assert plain.exit_code == 0, plain.output
    err = plain.stderr
    # the first measurement is reported as it finishes, before any iteration ends
    assert "search: iteration 1 of 2, evaluations 1 of at most 18" in err, err
    assert "iteration 1 of 2: evaluations 10 of at most 18, hypervolume" in err
    assert "iteration 2 of 2: evaluations" in err and "\r" not in err
    guided = runner.invoke(app, ["search", str(tmp_path / "b"), "--benchmark-table", str(table),
                                 "--latency-budget", "60%", "--evaluations", "12", "--batch", "4",
                                 "--predictor", "ridge"])
    assert guided.exit_code == 0, guided.output
    assert "initial design: evaluations 4 of 12," in guided.stderr, guided.stderr
    assert "iteration 2 of 2: evaluations 12 of 12," in guided.stderr


def test_search_display_counts_between_iterations():
    from nas_cli.commands._progress import SearchProgress

    out, now = io.StringIO(), Clock()
    p = SearchProgress(3, 20, exact=True, initial=True, stream=out, tty=False, interval=30, now=now)
    p({"event": "measured", "measured": 1})
    assert out.getvalue().startswith("search: initial design, evaluations 1 of 20")
    p({"iteration": 0, "stage": "initial", "n_evaluations": 5, "hypervolume": 0.5, "front_size": 2,
       "best_accuracy": 0.9})
    for e in range(6, 10):
        now.t += 2
        p({"event": "measured", "measured": e})
    assert p.rate() == 8 / 8  # from the first report (1 measured) to 9 measured, 8 s
    now.t += 30
    p({"event": "measured", "measured": 10})
    last = out.getvalue().splitlines()[-1]
    assert last.startswith("search: iteration 1 of 3, evaluations 10 of 20, 0.24 evaluations/s, ETA 0:42"), last
