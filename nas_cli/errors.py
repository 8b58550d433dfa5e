"""User-facing errors: one line that names the bad value and what is allowed, and a non-zero exit."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input or files. The CLI prints ``error: <message>`` and exits 2."""

    exit_code = 2
