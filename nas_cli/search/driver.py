"""The search driver: pymoo ask/tell over an Evaluator, checkpointed after every iteration.

Two modes share the cache, the constraints, the tracking and the outputs:

* plain (:mod:`nas_cli.search.plain`): a pymoo algorithm runs ``population x generations`` with
  ``evaluator.evaluate`` as truth;
* predictor-in-the-loop (:mod:`nas_cli.search.predictor_loop`, ``evaluations`` set).

Re-running with the same directory resumes from the last finished iteration (see
:mod:`nas_cli.search.state`) and ends with the same front as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from nas_cli.errors import UserError
from nas_cli.evaluation import Evaluator, Wrapping
from predictors.files import atomic_write_json, read_jsonl
from nas_cli.runs.locks import locked
from nas_cli.search.budgets import BUDGET_UNITS, Budget
from nas_cli.search.cache import EvalCache
from nas_cli.search.config import SearchConfig
from nas_cli.search.context import SearchContext
from nas_cli.evaluation import latency_record
from nas_cli.search.outputs import latency_axis, write_outputs
from nas_cli.search.plain import run_plain
from nas_cli.search.predictor_loop import run_with_predictor
from nas_cli.search.state import CACHE_FILE, CONFIG_FILE, LOG_FILE, STATE_FILE, load_state, same_config
from nas_cli.search.tracking import Normaliser, make_normaliser, truncate_log
from search_spaces.base import SearchSpace


@dataclasses.dataclass
class SearchResult:
    """The measured feasible front (sorted by accuracy, best first) and the search log."""

    front: list[dict]
    log: list[dict]
    bounds: dict[str, float]
    normaliser: Normaliser
    out_dir: Path


def run_search(evaluator: Evaluator, config: SearchConfig, out_dir: Path, *, source: str = "",
               weights: dict | None = None, progress: Callable[[dict], None] | None = None,
               log: Callable[[str], None] | None = None) -> SearchResult:
    """Runs (or resumes) a search into ``out_dir`` and writes pareto.json/.csv/.png there, holding
    ``out_dir``'s lock (a second search there is refused, naming the first).

    Args:
      evaluator: the truth (``evaluate``) and cheap estimates (``estimate``) of one space.
      config: objectives, budgets, strategy, effort and seed.
      out_dir: the search directory; an unfinished search there is resumed.
      source: what the evaluator reads (a run, a table), recorded in search_config.json.
      weights: the identity of what measures (a checkpoint's step and hash, a table's hash),
        recorded in search_config.json, every cache entry and pareto.json; a folder holding a search
        of other weights is refused.
      progress: called with every log record, and with ``{"event": "measured", "measured": n}`` after
        each measurement (n architectures measured so far).
      log: called with a line when the search resumes.

    Raises:
      UserError: metrics the evaluator lacks, a budget below the smallest subnet's value, or an
        ``out_dir`` holding a different search.
    """
    if not isinstance(evaluator, Evaluator):  # its capabilities are read as attributes, never guessed
        raise TypeError(f"{type(evaluator).__name__} is not a nas_cli.evaluation.Evaluator")
    needed = list(dict.fromkeys([*config.objectives, *(b.metric for b in config.budgets)]))
    have = tuple(evaluator.metric_names())
    missing = [m for m in needed if m not in have]
    if missing:
        raise UserError(f"the evaluator does not measure {', '.join(missing)}; it measures: {', '.join(have)}")

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with locked(out_dir, what="search folder"):
        return _run_locked(evaluator, config, out_dir, source, weights, progress, log)


def _run_locked(evaluator, config, out_dir, source, weights, progress, log) -> SearchResult:
    space = evaluator.space
    wanted = {"space": space.name, "source": source, "weights": weights, **config.to_json()}
    if not same_config(out_dir, wanted):
        # files without a recorded config belong to no search (e.g. one stopped by a bad budget)
        for name in (CACHE_FILE, STATE_FILE, LOG_FILE):
            (out_dir / name).unlink(missing_ok=True)
    cache = EvalCache(out_dir / CACHE_FILE, weights)
    if progress is not None:  # the command's display counts the measurements as they finish
        evaluator = _Reporting(evaluator, cache, progress)

    largest, smallest = cache.measure(space, [space.largest(), space.smallest()], evaluator.evaluate,
                                      int(evaluator.together))
    bounds = resolve_budgets(space, config.budgets, largest, smallest)
    if not (out_dir / CONFIG_FILE).exists():  # recorded once the budgets are known to be feasible
        atomic_write_json(out_dir / CONFIG_FILE, wanted)
    norm = make_normaliser(config.objectives, smallest, largest, bounds)
    ctx = SearchContext(space, evaluator, config, cache, bounds, norm, out_dir, progress)

    state = load_state(out_dir, cache)  # a state listing what the cache lost is replayed from it
    if state is not None:
        truncate_log(out_dir / LOG_FILE, state["iteration"])
        if log is not None:
            log(f"resuming the search in {out_dir} after iteration {state['iteration']} "
                f"({len(state['measured'])} architectures measured)" + (" (already finished)" if state["done"] else ""))
    elif (out_dir / LOG_FILE).exists():
        (out_dir / LOG_FILE).unlink()  # a log without a checkpoint belongs to no iteration we keep

    state = run_plain(ctx, state) if config.evaluations is None else run_with_predictor(ctx, state)

    records = [cache[k] for k in state["measured"]]
    front = write_outputs(out_dir, space, config, bounds, norm, state["measured"], records,
                          # a modelled latency: the final front timed for real
                          lambda keys: evaluator.remeasure([space.decode(k) for k in keys]),
                          weights=weights, latency_label=latency_axis(evaluator),
                          latency_measurement=latency_record(evaluator))
    log = read_jsonl(out_dir / LOG_FILE)
    return SearchResult(front, log, bounds, norm, out_dir)


class _Reporting(Wrapping):
    """``evaluator`` that reports each measurement to ``progress`` as it finishes, as
    ``{"event": "measured", "measured": architectures measured so far}`` (the cache's, with this
    one): a display's "evaluations e of N" between the per-iteration log records."""

    def __init__(self, evaluator: Evaluator, cache: EvalCache, progress: Callable[[dict], None]):
        super().__init__(evaluator)
        self._cache, self._progress = cache, progress

    def evaluate(self, archs):
        out = self.inner.evaluate(archs)
        self._progress({"event": "measured", "measured": len(self._cache) + len(out)})
        return out


def resolve_budgets(space: SearchSpace, budgets: Sequence[Budget], largest: dict, smallest: dict) -> dict[str, float]:
    """The absolute bound of every budget, given the largest and smallest subnets' metrics.

    Raises:
      UserError: a bound below the smallest subnet's value (no architecture could meet it).
    """
    bounds = {}
    for b in budgets:
        bound = b.resolve(float(largest[b.metric]))
        low = float(smallest[b.metric])
        if bound < low:
            unit = BUDGET_UNITS[b.metric]
            raise UserError(
                f"{b.metric} budget {b.text!r} ({bound:.4g}{unit and ' ' + unit}) is below the smallest subnet's "
                f"{b.metric} ({space.encode(space.smallest())}); the smallest {b.metric} achievable is "
                f"{low:.4g}{unit and ' ' + unit}"
            )
        bounds[b.metric] = bound
    return bounds
