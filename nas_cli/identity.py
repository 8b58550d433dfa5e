"""What a checkpoint is: its step and a hash of its files, recorded when it is saved.

``checksums.json`` (beside ``checkpoint/``, out of orbax's way) maps each saved step to the SHA-256 of every file under
``checkpoint/<step>/`` (paths relative to that folder, so a copied or moved run keeps its
identity). Loading a step recomputes them: a damaged file is named, never used. The identity of a
run's weights (:func:`weights_identity`) is the step and a hash of its ``params`` files; every
search result, cache entry and accuracy measurement records it.
"""

from __future__ import annotations

import hashlib
import json
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


def read_checksums(ckpt_dir: Path) -> dict[str, dict[str, str]]:
    """The recorded checksums by step (as a string); empty when none were recorded or the record
    itself is unreadable (then the steps are used unchecked, as before checksums existed)."""
    path = ckpt_dir.parent / CHECKSUMS
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)}


def record_step(ckpt_dir: Path, step: int, keep: list[int]) -> None:
    """Records the checksums of a step just saved; drops the records of steps no longer kept."""
    sums = read_checksums(ckpt_dir)
    sums[str(step)] = file_hashes(ckpt_dir / str(step))
    atomic_write_json(ckpt_dir.parent / CHECKSUMS, {k: v for k, v in sums.items() if int(k) in set(keep) | {step}})


def damage(ckpt_dir: Path, step: int) -> str | None:
    """None when step ``step`` matches its recorded checksums (or none were recorded), else what
    is wrong with it, naming the first file that differs."""
    recorded = read_checksums(ckpt_dir).get(str(step))
    if recorded is None:
        return None
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
    (or, for a run saved before checksums, the files as they are now)."""
    hashes = read_checksums(ckpt_dir).get(str(step)) or file_hashes(ckpt_dir / str(step))
    return {"step": int(step), "hash": combined_hash(hashes, PARAMS + "/")}


def describe(identity: dict | None) -> str:
    """``step 3 (weights 1a2b...)`` for messages."""
    if not isinstance(identity, dict):
        return "unrecorded weights"
    if "table" in identity:
        return f"a benchmark table with hash {identity['table']}"
    return f"checkpoint step {identity.get('step')} (weights {identity.get('hash')})"
