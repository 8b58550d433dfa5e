"""Supernets trained by other tools, imported as `nas` runs: Once-for-All's (:mod:`.ofa`, `nas import
ofa`), read from PyTorch checkpoints without torch (:mod:`.torch_pickle`). Each public name of the
modules is re-exported here."""

from __future__ import annotations

from nas_cli.importing.ofa import (
    PUBLISHED,
    SPACE,
    OfaNet,
    convert,
    import_ofa,
    parse_net,
    read_supernet,
    stored_stats,
)
from nas_cli.importing.ofa_keys import canonical_key
from nas_cli.importing.torch_pickle import read_pth

__all__ = [
    "PUBLISHED",
    "SPACE",
    "OfaNet",
    "canonical_key",
    "convert",
    "import_ofa",
    "parse_net",
    "read_pth",
    "read_supernet",
    "stored_stats",
]
