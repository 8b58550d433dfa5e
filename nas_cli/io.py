"""Append-only JSON-lines files (metrics, caches, logs): a crash loses at most the line being written."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The records of a JSON-lines file written by :func:`append_jsonl` (empty if it does not
    exist). A line that does not parse as a JSON object was cut by a crash and is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


def append_jsonl(path: str | os.PathLike, obj: Any) -> None:
    """Appends one JSON line and fsyncs, so a crash loses at most the line being written."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")
        f.flush()
        os.fsync(f.fileno())
