"""What a search directory keeps so that a search resumes: the recorded config and the last state.

A search directory holds ``search_config.json`` (what was asked), ``cache.jsonl`` (every
measurement), ``state.pkl`` (the last finished iteration: the pickled pymoo algorithm in plain
mode) and ``search_log.jsonl``.
"""

from __future__ import annotations

import importlib
import io
import json
import pickle
from pathlib import Path
from typing import Container

from nas_cli.errors import UserError
from nas_cli.runs.identity import describe
from predictors.files import atomic_write_bytes, read_json, warn

CONFIG_FILE = "search_config.json"
CACHE_FILE = "cache.jsonl"
STATE_FILE = "state.pkl"
LOG_FILE = "search_log.jsonl"
STATE_VERSION = 1


def same_config(out_dir: Path, wanted: dict) -> bool:
    """True when ``out_dir`` records this search; False when it records none.

    Raises:
      UserError: ``out_dir`` records a different search.
    """
    path = out_dir / CONFIG_FILE
    if not path.exists():
        return False
    have = read_json(path, "search record", f"delete {out_dir} to search afresh, or pass another --out")
    if not isinstance(have, dict):
        raise UserError(f"search record {path} is damaged (no JSON object); delete {out_dir} to search "
                        "afresh, or pass another --out")
    wanted = json.loads(json.dumps(wanted))  # tuples -> lists, as stored
    if have.get("weights") != wanted.get("weights"):
        raise UserError(f"{out_dir} holds a search of {describe(have.get('weights'))}, but the weights are now "
                        f"{describe(wanted.get('weights'))} (the run was trained further or replaced, or its "
                        "data changed); its results are not those of these weights: pass another --out, or delete "
                        "it to search afresh")
    diff = sorted(k for k in set(have) | set(wanted) if have.get(k) != wanted.get(k))
    if diff:
        details = "; ".join(f"{k}: {_shown(k, have.get(k))} there, {_shown(k, wanted.get(k))} now" for k in diff)
        raise UserError(f"{out_dir} holds a different search ({details}); "
                        "repeat its settings to resume it, or pass another --out")
    return True


def _shown(key: str, value) -> str:
    """A recorded setting as the user gave it: budgets as their flags, lists comma-separated."""
    if key == "budgets" and isinstance(value, list):
        flags = [f"--{b.get('metric')}-budget {b.get('text')}" for b in value if isinstance(b, dict)]
        return " ".join(flags) if flags else "none"
    if isinstance(value, list):
        return ",".join(map(str, value))
    return "none" if value is None else repr(value) if isinstance(value, str) else str(value)


def _resolve(module: str, qualname: str):
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _rewrap(func, seed):
    from pymoo.util import default_random_state

    return default_random_state(seed=seed)(func)


class _StatePickler(pickle.Pickler):
    """Pickles pymoo algorithms whose operators hold ``@default_random_state`` functions.

    That decorator returns a closure without ``functools.wraps``, which plain pickle cannot name;
    we store the module attribute it is bound to (or the wrapped function) instead.
    """

    def reducer_override(self, obj):
        if callable(obj) and getattr(obj, "__qualname__", "").startswith("default_random_state.<locals>"):
            cells = dict(zip(obj.__code__.co_freevars, (c.cell_contents for c in obj.__closure__ or ())))
            func = cells.get("func")
            if func is not None:
                try:
                    if _resolve(func.__module__, func.__qualname__) is obj:
                        return _resolve, (func.__module__, func.__qualname__)
                except (ImportError, AttributeError):
                    pass
                return _rewrap, (func, cells.get("default_seed"))
        return NotImplemented


def save_state(out_dir: Path, state: dict) -> None:
    """Writes the state of the last finished iteration (atomically: a crash keeps the previous one)."""
    buf = io.BytesIO()
    _StatePickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump({"version": STATE_VERSION, **state})
    atomic_write_bytes(out_dir / STATE_FILE, buf.getvalue())


def load_state(out_dir: Path, cache: Container[str] | None = None) -> dict | None:
    """The state :func:`save_state` wrote in ``out_dir``, or None when there is none.

    The cache is the search's truth and the state only a shortcut through it: a state that lists an
    architecture ``cache`` does not hold (a damaged line of ``cache.jsonl`` was skipped) is dropped
    with a warning, and the search is replayed from its first iteration on what the cache holds
    (deterministic given the measurements; only the lost ones are measured again).

    Raises:
      UserError: the state was written by another version of the search.
    """
    path = out_dir / STATE_FILE
    if not path.exists():
        return None
    stale = UserError(f"{path} was written by another version of nas search; pass another --out")
    try:
        state = pickle.loads(path.read_bytes())
    except (AttributeError, ImportError):  # it names code this version no longer has
        raise stale from None
    except Exception as e:  # noqa: BLE001 - a damaged pickle raises any of a dozen kinds
        # every measurement is in the cache, and the search is deterministic given them: redo it
        warn(f"{path} is damaged ({type(e).__name__}); the search starts again from its first iteration, "
             "reusing every measurement in the cache")
        return None
    if not isinstance(state, dict) or not {"iteration", "measured", "done"} <= set(state):
        warn(f"{path} is damaged (not a search state); the search starts again, reusing the cache")
        return None
    if state.get("version") != STATE_VERSION:
        raise stale
    lost = [k for k in state["measured"] if k not in cache] if cache is not None else []
    if lost:
        warn(f"{path} lists {len(lost)} architecture(s) that {out_dir / CACHE_FILE} no longer holds (first "
             f"{lost[0]}); the search starts again from its first iteration, reusing every cached measurement")
        return None
    return state
