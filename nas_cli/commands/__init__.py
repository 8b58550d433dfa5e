"""Command groups: each module defines ``register(app)``; a new group is one module plus one line here."""

from __future__ import annotations

import typer

from nas_cli.commands import export, finetune, import_ofa, latency, predictor, search, train

_MODULES = (train, search, finetune, export, import_ofa, predictor, latency)


def register_all(app: typer.Typer) -> None:
    """Adds every command group to ``app``, in the order `nas --help` lists them."""
    for module in _MODULES:
        module.register(app)
