"""Progress on stderr that says what is happening from the first second: when JAX compiles (and how
many programs so far), how fast training runs once it does, and an ETA that leaves compile time out.

On a terminal one status line is redrawn in place; otherwise (a log file, CI, nohup) plain lines are
written, at most one per ``interval`` seconds, so that the output reads as a log.

Compilation is seen through JAX's monitoring events (tracing, lowering, XLA compile or a load from
the persistent cache each report a duration): they fire in the thread that compiles, as it happens.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Callable, TextIO

#: JAX's duration events of one program's compilation: trace, lower to MLIR, compile (or load)
_COMPILE_EVENTS = ("/jax/core/compile/jaxpr_trace_duration",
                   "/jax/core/compile/jaxpr_to_mlir_module_duration",
                   "/jax/core/compile/backend_compile_duration")
_PROGRAM_EVENT = _COMPILE_EVENTS[-1]

_active: list["StepProgress"] = []  # the displays listening; one listener is registered per process
_registered = False


def _on_duration(event: str, duration: float, **_kwargs) -> None:
    if event in _COMPILE_EVENTS:
        for display in list(_active):
            display.compiled(event == _PROGRAM_EVENT, duration)


def _listen(display: "StepProgress") -> None:
    global _registered
    if not _registered:
        import jax.monitoring

        jax.monitoring.register_event_duration_secs_listener(_on_duration)
        _registered = True
    _active.append(display)


_transient = False  # a line without its newline stands on the terminal (see note())


def note(message: str, stream: TextIO | None = None) -> None:
    """A first sign of life before the slow imports: on a terminal, a line that the next output
    replaces (an error, the progress); elsewhere an ordinary log line."""
    global _transient
    stream = stream or sys.stderr
    if stream.isatty():
        stream.write(message)
        _transient = True
    else:
        stream.write(message + "\n")
    stream.flush()


def clear_note(stream: TextIO | None = None) -> None:
    """Erases a note() still on the terminal."""
    global _transient
    if _transient:
        stream = stream or sys.stderr
        stream.write("\r\x1b[2K")
        stream.flush()
        _transient = False


def _n(programs: int) -> str:
    return f"{programs} program" + ("" if programs == 1 else "s")


def clock(seconds: float) -> str:
    """``1:02:03`` or ``2:03``."""
    s = int(round(seconds))
    h, m = divmod(s // 60, 60)
    return f"{h}:{m:02d}:{s % 60:02d}" if h else f"{m}:{s % 60:02d}"


class StepProgress:
    """``progress(done, total)`` for nas_cli.training.supernet, and ``log(message)`` that keeps a redrawn line intact.

    Args:
      what: the noun of the line ("training").
      epochs: shows "epoch e/E" beside the step count when given (the steps split evenly over them).
      item: what is counted ("step", "subnet").
      stream: where to write (stderr).
      tty: redraw one line in place; default: whether ``stream`` is a terminal.
      interval: seconds between the plain lines when not a terminal.
      now: the clock (tests pass a fake one).
    """

    def __init__(self, what: str = "training", *, epochs: int | None = None, item: str = "step",
                 stream: TextIO | None = None,
                 tty: bool | None = None, interval: float = 30.0, now: Callable[[], float] = time.monotonic):
        self.what, self.epochs, self.item = what, epochs, item
        self.unit = item + "s"
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty() if tty is None else tty
        self.interval, self.now = interval, now
        self._lock = threading.RLock()
        self._drawn = False  # a status line stands on the terminal's last line
        self.programs = 0  # programs compiled (or loaded from the XLA cache) since start()
        self.compile_seconds = 0.0  # time spent tracing, lowering and compiling
        self._compiling_since: float | None = None  # start of the current run of compile events
        self._phase_programs, self._phase_seconds = 0, 0.0
        self._last_compile = -1e9
        self._t0: float | None = None  # when the first step was reported: the rate counts from there
        self._c0 = 0.0  # compile time by then
        self._first_done: int | None = None  # steps done by then (a resumed run starts past 0)
        self.done = self.total = 0
        self._last_line = self._last_draw = -1e9
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    def start(self) -> "StepProgress":
        """Listens to JAX's compile events and starts the heartbeat (a line while a long compile is silent)."""
        _listen(self)
        self._thread = threading.Thread(target=self._heartbeat, name="nas-progress", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self in _active:
            _active.remove(self)
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self._lock:
            if self._drawn:  # the last state stays on the terminal
                self._write("\r\x1b[2K" + self._status() + "\n", redraw=True)
                self._drawn = False

    def __enter__(self) -> "StepProgress":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # --- inputs ----------------------------------------------------------------------------------

    def compiled(self, program: bool, seconds: float) -> None:
        """One compile event: ``program`` when it finished a program (else a trace or lowering)."""
        with self._lock:
            t = self.now()
            self.compile_seconds += seconds
            self._phase_seconds += seconds
            if self._compiling_since is None:
                self._compiling_since = t - seconds
                self._phase_programs, self._phase_seconds = 0, seconds
                if not self.tty and not self.done:
                    self._line(self.compile_note)
            if program:
                self.programs += 1
                self._phase_programs += 1
            self._last_compile = t
            if self.tty:
                self._redraw()
            elif program and t - self._last_line >= min(self.interval, 10.0):
                self._line(self._status())

    #: the first line of the first compile phase (not on a terminal)
    compile_note = ("compiling: JAX compiles each new program once (the supernet's initialisation, then each "
                    "piece of a subnet the first time a step uses it); later steps reuse them")
    eta_bound = ""  # "at most " where the total is an upper bound

    def __call__(self, done: int, total: int) -> None:
        """``done`` of ``total`` steps finished (nas_cli.training.supernet's progress callback)."""
        self._advance(done, total)

    def _advance(self, done: int, total: int, line: bool = False) -> None:
        """``done`` of ``total`` units finished; ``line``: write a status line now (not on a terminal)."""
        with self._lock:
            t = self.now()
            if self._first_done is None:  # the first report: a resumed run starts at its epoch
                self._t0, self._c0, self._first_done = t, self.compile_seconds, done
            self.done, self.total = done, total
            self._end_compile_phase(t)
            if self.tty:
                self._redraw()
            elif line or t - self._last_line >= self.interval or done == total:
                self._line(self._status())

    def log(self, message: str) -> None:
        """A message line, above the status line on a terminal."""
        with self._lock:
            if self._drawn:
                self._write("\r\x1b[2K", redraw=True)
                self._drawn = False
            self._write(message + "\n")
            if self.tty and self.done:
                self._redraw(force=True)

    # --- figures ---------------------------------------------------------------------------------

    def rate(self) -> float | None:
        """Units (steps) per second, compile time left out (None before two were counted)."""
        if self._t0 is None or self._first_done is None:
            return None
        steps = self.done - self._first_done
        seconds = self.now() - self._t0 - (self.compile_seconds - self._c0)
        if steps < 2 or seconds <= 0:
            return None
        return steps / seconds

    def eta(self) -> float | None:
        r = self.rate()
        return None if r is None else (self.total - self.done) / r

    # --- drawing ---------------------------------------------------------------------------------

    def _compiling(self) -> bool:
        return self._compiling_since is not None

    def _end_compile_phase(self, t: float) -> None:
        # a step that compiled nothing for a few seconds ends a compile phase
        if self._compiling_since is not None and t - self._last_compile > 2.0:
            message = (f"compiled {_n(self._phase_programs)} in {clock(t - self._compiling_since)} "
                       f"({self.programs} in all)")
            self._compiling_since = None
            self.log(message) if self.tty else self._line(message)

    def _compile_status(self) -> str:
        since = self._compiling_since if self._compiling_since is not None else self.now()
        return (f"compiling: {_n(self._phase_programs)} so far, {clock(self.now() - since)} "
                f"({self.programs} in all)")

    def _head(self) -> str:
        pct = 100 * self.done / self.total
        head = f"{self.what}: {self.item} {self.done}/{self.total} ({pct:.0f}%)"
        if self.epochs and self.total >= self.epochs:
            per_epoch = self.total // self.epochs
            epoch = min(max(self.done - 1, 0) // per_epoch + 1, self.epochs)
            head += f", epoch {epoch}/{self.epochs}"
        return head

    def _rate_text(self, r: float) -> str:
        return f"{r:.2f} {self.unit}/s" if r < 10 else f"{r:.0f} {self.unit}/s"

    def _status(self) -> str:
        parts = []
        if self.total:
            parts.append(self._head())
            r = self.rate()
            if r is not None:
                parts.append(self._rate_text(r))
                if self.done < self.total:
                    parts.append(f"ETA {self.eta_bound}{clock((self.total - self.done) / r)} (compile time excluded)")
            elif self.done < self.total:
                parts.append(f"ETA after a few {self.unit}")
        if self._compiling():
            parts.append(self._compile_status())
        elif self.programs:
            parts.append(f"{_n(self.programs)} compiled in {clock(self.compile_seconds)}")
        return ", ".join(parts) if parts else f"{self.what}: starting"

    def _line(self, text: str) -> None:
        self._last_line = self.now()
        self._write(text + "\n")

    def _redraw(self, force: bool = False) -> None:
        t = self.now()
        if force or not self._drawn or t - self._last_draw >= 0.1:  # compile events come in bursts
            self._write("\r\x1b[2K" + self._status(), redraw=True)
            self._drawn, self._last_draw = True, t

    def _write(self, text: str, redraw: bool = False) -> None:
        clear_note(self.stream)
        try:
            self.stream.write(text)
            self.stream.flush()
        except (ValueError, OSError):  # a closed or broken stream: progress is not worth failing for
            pass

    def _heartbeat(self) -> None:
        # a single program can compile for a minute without an event: keep the clock moving
        while not self._stop.wait(1.0 if self.tty else 5.0):
            with self._lock:
                t = self.now()
                if self.tty and (self.done or self._compiling()):
                    self._redraw()
                elif not self.tty and self._compiling() and t - self._last_line >= self.interval:
                    self._line(self._status())


class SearchProgress(StepProgress):
    """``progress(record)`` for nas_cli.search: a line per finished iteration ("iteration i of n,
    evaluations e of N, hypervolume ...") and, between them, each measurement as it finishes (the
    driver reports ``{"event": "measured", "measured": e}``), with compile phases as in training.

    Args:
      iterations: the search's iterations (generations; in predictor mode, after the initial design).
      evaluations: the evaluations planned (predictor mode: exactly; plain: at most, as duplicates
        are measured once).
      exact: whether ``evaluations`` is exact.
      initial: an initial design comes before the iterations (predictor mode; its record is iteration 0).
    """

    compile_note = ("compiling: JAX compiles each new program once (the first measurements of a subnet "
                    "shape compile its BatchNorm recalibration and evaluation); later measurements reuse them")
    def __init__(self, iterations: int, evaluations: int, *, exact: bool, initial: bool = False, **kwargs):
        super().__init__("search", item="evaluation", **kwargs)
        self.iterations, self.exact = iterations, exact
        self.eta_bound = "" if exact else "at most "
        self.total = evaluations
        self.iteration = None  # the last finished iteration (None: none yet)
        self.initial = initial  # predictor mode: an initial design comes first (iteration 0)

    def __call__(self, rec: dict) -> None:
        if rec.get("event") == "measured":
            self._advance(min(rec["measured"], self.total), self.total)
            return
        self.iteration = rec["iteration"]
        with self._lock:
            self.done = min(rec["n_evaluations"], self.total)
            self.log(self.iteration_line(rec))

    def _of(self) -> str:
        return f"{self.total}" if self.exact else f"at most {self.total}"

    def iteration_line(self, rec: dict) -> str:
        best = rec.get("best_accuracy")
        it = rec["iteration"]
        head = ("initial design" if rec.get("stage") == "initial"
                else f"iteration {it} of {self.iterations}")
        return (f"{head}: evaluations {rec['n_evaluations']} of {self._of()}, hypervolume "
                f"{rec['hypervolume']:.4f}, front {rec['front_size']}"
                + (f", best accuracy {best:.4f}" if best is not None else "")
                + (f", {rec['true_hypervolume_ratio']:.4f} of the true front's hypervolume, "
                   f"{rec['true_front_found']:.0%} of its members found" if "true_front_found" in rec else ""))

    def _head(self) -> str:
        if self.iteration is None and self.initial:
            what = "initial design"
        else:
            running = 1 if self.iteration is None else min(self.iteration + 1, self.iterations)
            what = f"iteration {running} of {self.iterations}"
        return f"search: {what}, evaluations {self.done} of {self._of()}"
