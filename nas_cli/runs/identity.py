"""What a checkpoint is: its step and a hash of its files, recorded when it is saved.

``checksums.json`` (beside ``checkpoint/``, out of orbax's way) maps each saved step to the SHA-256
of every file under ``checkpoint/<step>/`` (paths relative to that folder, so a copied or moved run
keeps its identity). Loading a step recomputes them: a damaged file is named, never used; a missing
or damaged ``checksums.json`` is an error too (``NAS_UNCHECKED_WEIGHTS=1`` is the explicit
opt-out), never a skipped check. The identity of a run's weights (:func:`weights_identity`) is the
step and a hash of its ``params`` files; every search result, cache entry and accuracy measurement
records it (with the data's identity, see nas_cli.runs.measured_by).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

from predictors.files import atomic_write_json

CHECKSUMS = "checksums.json"
PARAMS = "params"  # the item of a checkpoint that holds the supernet weights


def file_sha256(path: Path) -> str:
    """The SHA-256 of one file's bytes (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_hashes(step_dir: Path) -> dict[str, str]:
    """SHA-256 of every file under ``step_dir``, keyed by its path relative to it."""
    return {p.relative_to(step_dir).as_posix(): file_sha256(p)
            for p in sorted(p for p in step_dir.rglob("*") if p.is_file())}


def combined_hash(hashes: dict[str, str], prefix: str = "") -> str:
    """One hash over the files whose relative path starts with ``prefix`` (16 hex digits)."""
    h = hashlib.sha256()
    for name in sorted(hashes):
        if name.startswith(prefix):
            h.update(f"{name}\0{hashes[name]}\n".encode())
    return h.hexdigest()[:16]


#: the explicit opt-out of the checksum check (for a run whose record was lost): loud, never implied
UNCHECKED_ENV = "NAS_UNCHECKED_WEIGHTS"


def unchecked() -> bool:
    """Whether the user opted out of checking checkpoints against ``checksums.json``."""
    return os.environ.get(UNCHECKED_ENV, "") not in ("", "0")


def _load(path: Path) -> dict[str, dict[str, str]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError("not a JSON object of steps")
    return data


def read_checksums(ckpt_dir: Path) -> dict[str, dict[str, str]] | None:
    """The recorded checksums by step (as a string).

    A missing or unreadable record is an error, never a skipped check; with ``NAS_UNCHECKED_WEIGHTS=1``
    (an explicit opt-out) it is a warning and None is returned (the steps are then used unchecked).

    Raises:
      UserError: ``checksums.json`` is missing or damaged, naming it and the opt-out.
    """
    from nas_cli.errors import UserError

    path = ckpt_dir.parent / CHECKSUMS
    try:
        return _load(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        what = "is missing" if isinstance(e, FileNotFoundError) else f"is damaged ({str(e).splitlines()[0][:80]})"
        if unchecked():
            print(f"warning: {path} {what}; the checkpoint's weights are used UNCHECKED "
                  f"({UNCHECKED_ENV} is set)", file=sys.stderr)
            return None
        raise UserError(f"{path} {what}: it holds the checksums the checkpoint's weights are checked against; "
                        f"restore it, or set {UNCHECKED_ENV}=1 to use the weights unchecked") from None


def record_step(ckpt_dir: Path, step: int, keep: list[int]) -> None:
    """Records the checksums of a step just saved; drops the records of steps no longer kept. A lost
    or damaged record is started again (the older steps it held then count as unrecorded)."""
    try:
        sums = _load(ckpt_dir.parent / CHECKSUMS)
    except (OSError, ValueError, UnicodeDecodeError):
        sums = {}
    sums[str(step)] = file_hashes(ckpt_dir / str(step))
    atomic_write_json(ckpt_dir.parent / CHECKSUMS, {k: v for k, v in sums.items() if int(k) in set(keep) | {step}})


def start_record(ckpt_dir: Path) -> None:
    """An empty record, written when a run starts: from then on a missing ``checksums.json`` means a
    lost record (an error), and a step it does not list is a save that never finished."""
    atomic_write_json(ckpt_dir.parent / CHECKSUMS, {})


def unrecorded_steps(ckpt_dir: Path, steps: list[int]) -> list[int]:
    """The steps newer than every recorded one: saves a kill interrupted after orbax finished the
    folder but before its checksums were recorded (the record is written right after)."""
    sums = read_checksums(ckpt_dir)
    if sums is None:
        return []
    newest = max((int(k) for k in sums), default=0)
    return [s for s in steps if s > newest]


def damage(ckpt_dir: Path, step: int) -> str | None:
    """None when step ``step`` matches its recorded checksums (or the user opted out of the check),
    else what is wrong with it, naming the first file that differs.

    Raises:
      UserError: the record itself is missing or damaged (see :func:`read_checksums`).
    """
    sums = read_checksums(ckpt_dir)
    if sums is None:
        return None
    recorded = sums.get(str(step))
    if recorded is None:
        return f"no checksums recorded for it in {ckpt_dir.parent / CHECKSUMS}"
    now = file_hashes(ckpt_dir / str(step))
    for name in sorted(set(recorded) | set(now)):
        if name not in now:
            return f"{name} is missing"
        if name not in recorded:
            continue  # a file orbax added after the record (metadata); the recorded ones decide
        if now[name] != recorded[name]:
            return f"{name} differs from its checksum at save time"
    return None


def weights_identity(ckpt_dir: Path, step: int) -> dict:
    """``{"step", "hash"}`` of a checkpoint's weights: the recorded checksums of its params files
    (or, opted out of the check, the files as they are now)."""
    hashes = (read_checksums(ckpt_dir) or {}).get(str(step)) or file_hashes(ckpt_dir / str(step))
    return {"step": int(step), "hash": combined_hash(hashes, PARAMS + "/")}


def describe(identity: dict | None) -> str:
    """``step 3 (weights 1a2b...)`` for messages."""
    if not isinstance(identity, dict):
        return "unrecorded weights"
    if "table" in identity:
        return f"a benchmark table with hash {identity['table']}"
    data = f", data {identity['data']}" if "data" in identity else ""
    return f"checkpoint step {identity.get('step')} (weights {identity.get('hash')}{data})"
