"""User-facing errors: one line that names the bad value and what is allowed, and a non-zero exit.

:func:`one_line` is the one place that turns a failure into that line and an exit code: the
CLI's and the library's errors (2), a path that cannot be written or read (2), a full disk (1),
Ctrl-C (130), and anything else (1, "internal error"; ``NAS_TRACEBACK=1`` shows the traceback).
"""

from __future__ import annotations

import errno
import os
import re
from typing import Mapping

from search_spaces.errors import NasError


class UserError(NasError):
    """A problem with the user's input or files found by the CLI (a flag, a run folder, a data
    folder). The library's errors share its root, :class:`search_spaces.errors.NasError`: the CLI
    prints ``error: <message>`` for any of them and exits 2."""

    exit_code = 2


class FieldError(UserError):
    """A bad value of a config field (``TrainConfig``, ``SearchConfig``: the configs are the only
    validators of what a user sets).

    The message names fields as ``{field}`` markers: ``str(e)`` shows them as the library knows them
    (``epochs 0 must be at least 1``), and the CLI as the user typed them (``--epochs 0 must be at
    least 1``) through :data:`nas_cli.commands.flags.FLAGS`, the one table of field -> flag names.

    Args:
      template: the message; ``{name}`` (lower-case, underscores) marks a field's name. Values are
        interpolated before: a marker is only a brace pair around a bare lower-case word.
    """

    def __init__(self, template: str):
        self.template = template
        super().__init__(naming(template, {}))

    def named(self, names: Mapping[str, str]) -> str:
        """The message with each field called what ``names`` calls it (others by their field name)."""
        return naming(self.template, names)


_MARKER = re.compile(r"\{([a-z][a-z0-9_]*)\}")


def naming(template: str, names: Mapping[str, str]) -> str:
    """``template`` with every ``{field}`` marker replaced by ``names[field]`` (default: the field)."""
    return _MARKER.sub(lambda m: names.get(m.group(1), m.group(1)), template)


#: exit codes besides UserError's 2
EXIT_FAILURE, EXIT_INTERRUPTED = 1, 130

_PATH_ERRNOS = {errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.ENOENT,
                errno.EEXIST, errno.EINVAL, errno.ENAMETOOLONG, errno.ELOOP, errno.ENXIO, errno.ENODEV}


def _os_message(e: OSError) -> tuple[str, int]:
    where = e.filename if e.filename is not None else "a file"
    what = e.strerror or str(e)
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"error: no space left on the device writing {where}; free some space and run the same "
                "command again (finished epochs, measurements and results are kept; training continues "
                "with --resume)", EXIT_FAILURE)
    if e.errno in _PATH_ERRNOS:
        return f"error: cannot use {where}: {what}; choose a path you can write to (a folder for --out)", 2
    return f"error: {where}: {what}", EXIT_FAILURE


def one_line(e: BaseException, resume_hint: str = "run the same command again",
             names: Mapping[str, str] | None = None) -> tuple[str, int]:
    """The single line to print for ``e`` and the exit code; ``names`` calls a :class:`FieldError`'s
    fields by the CLI's flag names.

    Raises:
      ``e`` itself when it is no user-facing failure and ``NAS_TRACEBACK`` is set (debugging).
    """
    if isinstance(e, FieldError) and names is not None:
        return f"error: {e.named(names)}", 2
    if isinstance(e, NasError):
        return f"error: {e}", 2
    if isinstance(e, KeyboardInterrupt):
        return f"interrupted; resume with: {resume_hint}", EXIT_INTERRUPTED
    if isinstance(e, OSError):
        return _os_message(e)
    if os.environ.get("NAS_TRACEBACK"):
        raise e
    text = " ".join(str(e).split())[:300]
    return (f"error: internal error {type(e).__name__}: {text} (this is a bug; NAS_TRACEBACK=1 shows where)",
            EXIT_FAILURE)
