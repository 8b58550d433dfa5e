"""Folder locks: one writer per training run and per search folder.

A lock is ``fcntl.flock`` on ``<folder>/.nas.lock``, which holds the holder's pid and command.
The kernel releases it when the holder dies (kill -9 included), so a stale lock is taken over
without any clean-up; a live holder is named in the refusal.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterator

from nas_cli.errors import UserError

LOCK_FILE = ".nas.lock"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        pid = int(info["pid"])
        if info.get("host") == socket.gethostname():
            os.kill(pid, 0)  # the recorded holder may have exited while another still holds it
        return f"process {pid} on {info.get('host', '?')} ({info.get('command', '?')}, since {info.get('since', '?')})"
    except PermissionError:  # alive, another user's
        return f"process {info['pid']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another nas process"


@contextlib.contextmanager
def locked(folder: Path, *, what: str = "folder") -> Iterator[None]:
    """Holds ``folder``'s exclusive lock for the ``with`` block (``what`` names the folder's kind in
    the refusal).

    Raises:
      UserError: the folder is locked by a live process, which the message names.
    """
    folder = Path(folder)
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(path)
            raise UserError(f"{what} {folder} is in use by {holder}; wait for it to finish, or use "
                            "another folder") from None
        with contextlib.suppress(OSError):  # name the holder for whoever is refused next
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "command": " ".join(["nas", *sys.argv[1:]])[:200],
                    "since": time.strftime("%Y-%m-%d %H:%M:%S")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
