"""The ``nas`` command line: a thin Typer layer over the library (see nas_cli/commands/).

Importing this module (and so every ``--help``) does not import JAX: the command modules import
the library inside their functions, and their help texts take names and defaults from
nas_cli/commands/help_texts.py.
"""

from __future__ import annotations

from typing import Optional

import typer

from nas_cli.commands import register_all
from nas_cli.commands._usage import OneLineErrors

app = typer.Typer(
    name="nas",
    cls=OneLineErrors,
    help="Hardware-aware neural architecture search in JAX: train one weight-sharing supernet, "
    "search it under a latency budget, export a standalone subnet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # click's plain help: it wraps to the terminal (whole flag names at 80 columns), shows each
    # default as [default: X], and loads in milliseconds (rich's panels cut long flag names)
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"nas {version('nas')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("nas (not installed: no version recorded)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True,
                                                help="Print the version and exit."),
) -> None:
    """Hardware-aware neural architecture search in JAX: train one weight-sharing supernet, search it
    under a latency budget, export a standalone subnet."""


register_all(app)


def main() -> None:
    """Console-script entry point."""
    app()
