"""Latency files: their formats and version, reading them with clear errors, and checking them
against a space.

Both kinds of latency file (a lookup table, a learned model) are one JSON object with ``format``,
``version``, ``space`` (:func:`space_spec`) and ``options`` (what rebuilds the space). Each kind
registers its reader in :data:`FORMATS`; :func:`load_latency_model` reads any of them.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable

from predictors.latency.errors import LatencyError
from search_spaces.registry import Registry

TABLE_FORMAT = "nas-latency-table"
MODEL_FORMAT = "nas-latency-model"
VERSION = 2  # 2: tables and models record their reference level

#: how each file format becomes a latency model: ``reader(data, space)``
FORMATS: Registry[Callable[[dict, Any], Any]] = Registry("latency file format")


def read_latency_file(path) -> dict:
    """The JSON object of a latency file of a known format and this version.

    Raises:
      LatencyError: the file is missing, not JSON, not a latency file, or of another version.
    """
    path = Path(path)
    if not path.is_file():
        raise LatencyError(f"latency file {path} does not exist; make one with `nas latency profile` or "
                           "`nas latency fit`")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LatencyError(f"latency file {path} is not valid JSON ({e})") from None
    if not isinstance(data, dict) or data.get("format") not in FORMATS:
        fmt = data.get("format") if isinstance(data, dict) else None
        known = " or ".join(repr(name) for name in FORMATS.names())
        raise LatencyError(f"latency file {path} has format {fmt!r}; expected {known}")
    if data.get("version") != VERSION:
        raise LatencyError(f"latency file {path} has version {data.get('version')!r}; this nas reads version "
                           f"{VERSION}: re-make it with `nas latency profile` or `nas latency fit`")
    wrong = damage(data)
    if wrong is not None:
        raise LatencyError(f"latency file {path} is damaged ({wrong}); re-make it with `nas latency profile` "
                           "or `nas latency fit`")
    return data


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def damage(data: dict) -> str | None:
    """What is missing or malformed in a latency file's object (None when it is whole): a table's
    ``entries``, ``batch``, ``overhead_ms``, and either kind's ``reference``."""
    if data["format"] == TABLE_FORMAT:
        entries = data.get("entries")
        if not isinstance(entries, dict) or not entries:
            return "no 'entries' object of timed pieces"
        bad = next((k for k, v in entries.items() if not (isinstance(v, dict) and _number(v.get("ms")))), None)
        if bad is not None:
            return f"entry {bad!r} has no number 'ms'"
        for key in ("batch", "overhead_ms"):
            if not _number(data.get(key)):
                return f"{key!r} is {data.get(key)!r}, not a number"
    ref = data.get("reference")
    if ref is not None:
        if not isinstance(ref, dict) or not _number(ref.get("level_ms")) or not ref["level_ms"] > 0:
            return "'reference' has no positive number 'level_ms'"
        archs = ref.get("archs")
        if not isinstance(archs, list) or not archs or not all(isinstance(a, str) for a in archs):
            return "'reference' has no list of arch strings 'archs'"
    return None


def space_spec(space) -> dict:
    """What a latency file records of its space: the name and the full (frozen) config."""
    return {"name": space.name, "config": jsonable(dataclasses.asdict(space.config))}


def jsonable(obj):
    """``obj`` with every tuple turned into a list, as JSON reads it back."""
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def check_space_name(spec: dict, name: str, source: str) -> None:
    """Raises a LatencyError when a latency file's space (``spec``) is not the space ``name``."""
    if spec.get("name") != name:
        raise LatencyError(f"{source} was made for space {spec.get('name')!r}, not {name!r}")


def check_space(spec: dict, space, source: str) -> None:
    """Raises a LatencyError naming what differs between a latency file's space and ``space``.

    The file may cover more resolutions than the space uses; every other config field must match.
    """
    check_space_name(spec, space.name, source)
    if not hasattr(space, "config"):  # a tabular space (nas-bench-201): its name is all there is
        return
    want = space_spec(space)["config"]
    have = spec.get("config", {})
    missing = sorted(set(want["resolutions"]) - set(have.get("resolutions", [])))
    if missing:
        raise LatencyError(f"{source} covers resolutions {have.get('resolutions')}; the space also uses "
                           f"{missing} (profile a table at each of {want['resolutions']})")
    diffs = [f"{k} {have.get(k)!r} (space: {v!r})" for k, v in want.items()
             if k != "resolutions" and have.get(k) != v]
    if diffs:
        raise LatencyError(f"{source} was made for a different {space.name} config: " + "; ".join(diffs))


def check_runtime(data: dict, runtime: str, source: str) -> None:
    """Raises a LatencyError when a latency file was measured with another runtime than ``runtime``
    (a file without the record was measured with ``jax``)."""
    have = (data.get("runtime") or {}).get("name", "jax")
    if have == "external":  # timed elsewhere (`nas latency fit --timings`): nothing here can check it
        return
    if have != runtime:
        raise LatencyError(f"{source} was measured with runtime {have!r}; it cannot stand for runtime {runtime!r} "
                           f"(profile a table with runtime {runtime!r})")


def load_latency_model(path, space, data: dict | None = None, runtime: str | None = None):
    """The latency model in ``path`` (a table or a learned model), checked against ``space`` (and
    against ``runtime``, the name of the runtime it must have been measured with, when given).

    ``data``: the file's contents when the caller has read them already (:func:`read_latency_file`).
    Both kinds answer ``predict(arch) -> ms`` and ``predict_many(archs)``.
    """
    data = read_latency_file(path) if data is None else data
    check_space(data.get("space", {}), space, f"latency file {path}")
    if runtime is not None:
        check_runtime(data, runtime, f"latency file {path}")
    return FORMATS.get(data["format"])(data, space)
