"""The ``nas`` command line: a thin Typer layer over the library (see nas_cli/commands/)."""

from __future__ import annotations

import typer

from nas_cli.commands import register_all

app = typer.Typer(
    name="nas",
    help="Hardware-aware neural architecture search in JAX: train one weight-sharing supernet, "
    "search it under a latency budget, export a standalone subnet.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
register_all(app)


def main() -> None:
    """Console-script entry point."""
    app()
