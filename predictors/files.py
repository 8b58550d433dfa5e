"""The one file-I/O module of the library and the CLI.

* Atomic writes for everything they save: a user's finished work is never left half-written (a crash
  leaves the previous file or the new one, never a mix).
* Append-only JSON-lines files (metrics, caches, logs): a crash loses at most the line being written,
  and a damaged line is skipped (with a warning where it matters), never fatal.
* Reading back a JSON file this tool wrote, with a one-line error when it is damaged.

It lives in the lowest package that writes files, so that every floor above uses the same functions.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

from search_spaces.errors import NasError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Writes ``data`` to a temporary file beside ``path``, fsyncs it, then renames it into place.
    The file gets the permissions of a plainly created one (0644 under umask 022), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")

def warn(message: str) -> None:
    """One ``warning: ...`` line on stderr."""
    print(f"warning: {message}", file=sys.stderr)


def read_jsonl(path: str | os.PathLike, *, valid: Callable[[dict], bool] | None = None,
               warn_as: str | None = None) -> list[dict]:
    """The records of a JSON-lines file written by :func:`append_jsonl` (empty if it does not
    exist). A line that is not a JSON object (cut by a crash, or damaged), or that ``valid``
    rejects, is skipped; with ``warn_as`` (what the file is), damaged lines other than a cut last
    one are reported in one warning."""
    path = Path(path)
    if not path.exists():
        return []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    out, bad = [], 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            rec = None
        if isinstance(rec, dict) and (valid is None or valid(rec)):
            out.append(rec)
        elif i < len(lines) - 1:  # a cut last line (no newline) is what a crash leaves: no warning
            bad += 1
    if bad and warn_as:
        warn(f"skipped {bad} damaged line(s) of {warn_as} {path}; they will be measured again")
    return out


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Appends one JSON line and fsyncs, so a crash loses at most the line being written. A last
    line cut by an earlier crash is ended first, so that it does not swallow this one."""
    with open(path, "a+b") as f:
        end = f.seek(0, os.SEEK_END)
        if end:
            f.seek(end - 1)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((json.dumps(obj) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


def read_json(path: str | os.PathLike, what: str, fix: str) -> Any:
    """The JSON in a file this tool wrote.

    Raises:
      NasError: the file is unreadable or not JSON, naming it, ``what`` it is and the ``fix``.
    """
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise NasError(f"{what} {path} is damaged ({str(e).splitlines()[0][:120]}); {fix}") from None
