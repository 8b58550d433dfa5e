"""Helpers shared by the command modules: user errors become one line on stderr and exit code 2."""

from __future__ import annotations

import functools
from typing import Callable

import typer

from nas_cli.errors import UserError
from search_spaces.base import ArchError


def user_errors(fn: Callable) -> Callable:
    """Decorator for a Typer command: a UserError/ArchError prints ``error: ...`` and exits 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (UserError, ArchError) as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from None

    return wrapper
