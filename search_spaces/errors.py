"""The library's exceptions: every message names the bad value and what is allowed.

search_spaces/, predictors/ and kernels/ raise these (or subclasses defined beside the code that
raises them) and never import the CLI; `nas` turns any :class:`NasError` into one line on stderr
and a non-zero exit code.
"""

from __future__ import annotations


class NasError(ValueError):
    """A problem with a value or file the caller supplied; ``str(e)`` is the whole explanation."""


class ArchError(NasError):
    """An architecture string or genome that is not valid in a space (the message says why)."""


class UnknownNameError(NasError):
    """A name that no registry entry has; the message lists the names that exist."""
