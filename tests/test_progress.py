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
