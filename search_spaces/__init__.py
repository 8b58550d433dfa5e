"""Search spaces, found by name: ``get_space("mobilenetv3-tiny", in_channels=1, num_classes=10)``.

Where things go:

* a new space: one new package ``search_spaces/<name>/`` (or one module, for a space without a
  supernet) that calls :func:`register_space` / :func:`register_supernet_family`, plus its name in
  :data:`search_spaces.base.BUILTIN_SPACES` (imported, and so registered, the first time the registry
  is read). A supernet space is a :class:`search_spaces.planned.PlannedSpace`: its genome and
  strings, the weights' layout, a plan and one block function (:mod:`search_spaces.plan`); the
  trainers, evaluation, static model, costs and latency pieces are derived.
* layers that several spaces share: :mod:`search_spaces.layers`; the space-independent training
  engine: :mod:`search_spaces.engine`.

The names below load on first use (PEP 562), so that importing :mod:`search_spaces.errors`, the root
of every error the library and the CLI raise, costs no JAX import (the CLI's ``--help`` stays fast).
"""

from __future__ import annotations

import importlib

#: public name -> the module defining it
_EXPORTS = {
    **dict.fromkeys(("SPACES", "Arch", "Gene", "SearchSpace", "SupernetSpace", "get_space", "one_hot_plus_ordinal",
                     "register_space", "register_supernet_family", "space_names", "supernet_space_names"),
                    "search_spaces.base"),
    **dict.fromkeys(("ArchError", "NasError", "UnknownNameError"), "search_spaces.errors"),
    "Registry": "search_spaces.registry",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'search_spaces' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
