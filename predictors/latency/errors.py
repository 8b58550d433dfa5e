"""The latency package's exception."""

from __future__ import annotations

from search_spaces.errors import NasError


class LatencyError(NasError):
    """A latency file, space or measurement setting that cannot be used; the message names the value."""
