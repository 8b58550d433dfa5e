"""Helpers shared by the command modules: every failure becomes one line on stderr and an exit code
(nas_cli.errors.one_line: 2 for bad input, 1 for a full disk, 130 for Ctrl-C)."""

from __future__ import annotations

import functools
from typing import Callable

import click
import typer

from nas_cli.errors import one_line


def _resume_hint(kwargs: dict) -> str:
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
        except (click.exceptions.Exit, click.Abort, click.ClickException):
            raise
        except BaseException as e:  # noqa: BLE001 - one_line maps every class (and re-raises bugs on request)
            if isinstance(e, SystemExit):
                raise
            message, code = one_line(e, _resume_hint(kwargs))
            typer.echo(message, err=True)
            raise typer.Exit(code) from None

    return wrapper
