"""Command groups. Each module defines ``register(app)``; add new modules to ``_MODULES``."""

from __future__ import annotations

import importlib

import typer

_MODULES = [
    "nas_cli.commands.train",
    "nas_cli.commands.search",
    "nas_cli.commands.export",
    "nas_cli.commands.predictor",
    "nas_cli.commands.latency",
]


def register_all(app: typer.Typer) -> None:
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name == name:  # not written yet
                continue
            raise
        module.register(app)
