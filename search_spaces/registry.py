"""One registry type for every family of components found by name (spaces, predictors, search
algorithms): ``SPACES.get("mobilenetv3")``.

Registering a name twice is an error, so two modules can never silently shadow each other; help
texts and error messages list :meth:`Registry.names`, never a hand-kept list.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Generic, Iterator, TypeVar

from search_spaces.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order.

    Args:
      kind: what the entries are, in messages ("search space", "predictor", ...).
      load: called once, the first time the registry is read, to register the built-in entries
        (importing their modules); their import then costs nothing until a name is looked up.
    """

    def __init__(self, kind: str, load: Callable[[], None] | None = None):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._load = load

    def _loaded(self) -> dict[str, T]:
        if self._load is not None:
            load, self._load = self._load, None  # before loading: the loaded modules register here
            load()
        return self._entries

    def register(self, name: str, entry: T) -> T:
        """Adds ``entry`` under ``name`` and returns it; a taken name raises ValueError."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered already; choose another name")
        self._entries[name] = entry
        return entry

    def decorator(self, name_of: Callable[[T], str]) -> Callable[[T], T]:
        """A decorator registering the decorated object under ``name_of(obj)``."""

        def register(entry: T) -> T:
            return self.register(name_of(entry), entry)

        return register

    def get(self, name: str) -> T:
        """The entry of ``name``; an unknown name raises UnknownNameError listing the known ones."""
        if name not in self._loaded():
            raise UnknownNameError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._loaded())

    def help(self) -> str:
        """The names as one string for help texts: ``a|b|c``."""
        return "|".join(self.names())

    @contextlib.contextmanager
    def scoped(self, name: str, entry: T) -> Iterator[T]:
        """Registers ``entry`` for the duration of a ``with`` block (tests that add a toy entry)."""
        self._loaded()
        self.register(name, entry)
        try:
            yield entry
        finally:
            del self._entries[name]

    def __contains__(self, name: object) -> bool:
        return name in self._loaded()

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._loaded())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self.names())})"
