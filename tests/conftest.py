"""Test-session set-up: the persistent XLA cache, so programs compiled once (the same supernet pieces
in several trainings) are not compiled again within or across test runs."""

from nas_cli.runs import enable_compilation_cache

enable_compilation_cache()
