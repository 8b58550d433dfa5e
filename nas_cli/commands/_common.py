"""Helpers shared by the command modules: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import functools
from typing import Callable

import typer

from nas_cli.errors import UserError
from search_spaces.errors import NasError


def user_errors(fn: Callable) -> Callable:
    """Decorator for a Typer command: a UserError (the CLI's) or NasError (the library's) prints
    ``error: ...`` on one line and exits 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, NasError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper
