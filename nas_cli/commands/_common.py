"""Helpers shared by the command modules: every failure becomes one line on stderr and an exit code
(nas_cli.errors.one_line: 2 for bad input, 1 for a full disk, 130 for Ctrl-C)."""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
from pathlib import Path
from typing import Any, Callable

import typer

from nas_cli.errors import UserError, one_line
from nas_cli.commands._progress import clear_note
from nas_cli.commands.flags import FLAGS
from nas_cli.commands._usage import PASS_THROUGH


def _resume_hint(kwargs: dict) -> str:
    if "resume" in kwargs and kwargs.get("run_dir") is not None:  # nas finetune RUN: its options are needed again
        return "the same command with --resume"
    if "resume" in kwargs and kwargs.get("out") is not None:  # training reads its settings from the run
        return f"nas train-supernet --out {kwargs['out']} --resume"
    return "the same command (it continues where it stopped)"


def user_errors(fn: Callable) -> Callable:
    """Decorator for a Typer command: any failure prints one line (``error: ...``) on stderr and
    exits with its code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except PASS_THROUGH:  # typer's and click's own exits and usage errors: theirs to print
            raise
        except BaseException as e:  # noqa: BLE001 - one_line maps every class (and re-raises bugs on request)
            if isinstance(e, SystemExit):
                raise
            message, code = one_line(e, _resume_hint(kwargs), FLAGS)
            clear_note()
            typer.echo(message, err=True)
            raise typer.Exit(code) from None

    return wrapper


def given_options(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with every option the user did not give (its default) replaced by None, so that
    a config file or a resumed run decides it while the help shows the default."""
    given = ("COMMANDLINE", "ENVIRONMENT", "PROMPT")
    out = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)
        out[name] = value if source is not None and source.name in given else None
    return out


@contextlib.contextmanager
def removed_if_refused(*folders: Path | None):
    """For the ``with`` block of a command that creates ``folders``: each that did not exist before
    and, when the block fails, holds nothing but a lock file (a refused run) is removed again, the
    deepest first. A folder holding anything else (a finished epoch, a measurement) is kept."""
    new = [f for f in folders if f is not None and not f.exists()]
    try:
        yield
    except BaseException:
        for folder in sorted(new, key=lambda p: len(p.parts), reverse=True):
            _remove_if_lock_only(folder)
        raise


def _remove_if_lock_only(folder: Path) -> None:
    from nas_cli.runs.locks import LOCK_FILE

    with contextlib.suppress(OSError):
        if not folder.is_dir() or any(p.name != LOCK_FILE for p in folder.iterdir()):
            return
        lock = folder / LOCK_FILE
        if lock.exists():
            fd = os.open(lock, os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it: no one is using the folder
                lock.unlink()
            except BlockingIOError:
                return
            finally:
                os.close(fd)
        folder.rmdir()


def prepare_out(path: Path | None, *, folder: bool, create: bool = True) -> None:
    """Creates ``--out`` (a folder) or the folder of ``--out`` (a file) before any work, so that a
    path that cannot be written fails at once (nas_cli.errors.one_line words it). Without
    ``create``, only checks that no file stands where a folder must be."""
    if path is None:
        return
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"--out {path} is a file; pass a folder")
    if not folder and path.is_dir():
        raise UserError(f"--out {path} is a folder; pass a file name")
    where = path if folder else path.parent
    if create:
        where.mkdir(parents=True, exist_ok=True)
        return
    above = next((p for p in (where, *where.parents) if p.exists()), None)
    if above is not None and not above.is_dir():
        raise UserError(f"--out {path}: {above} is a file, not a folder; choose another path")


# --- the multi-host options, alike for every command that runs over several processes ------------


def coordinator_option():
    return typer.Option(None, "--coordinator", help="Multi-host: HOST:PORT of process 0 (every process passes "
                        "the same; or JAX_COORDINATOR_ADDRESS).")


def num_processes_option(what: str):
    return typer.Option(None, "--num-processes", help=f"Multi-host: how many processes {what}.")


def process_id_option(writes: str):
    return typer.Option(None, "--process-id", help="Multi-host: this process's index, 0 .. num-processes - 1 "
                        f"(0 writes {writes}).")


def init_timeout_option():
    return typer.Option(300, "--init-timeout", help="Multi-host: seconds to wait for the coordinator and the "
                        "other processes.")
