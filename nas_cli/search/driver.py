"""The search driver: pymoo ask/tell over an Evaluator, checkpointed after every iteration.

Two modes share the cache, the constraints, the tracking and the outputs:

* plain: a pymoo algorithm runs ``population x generations`` with ``evaluator.evaluate`` as truth;
* predictor-in-the-loop (``evaluations`` set; MSuNAS / LINAS style): measure an initial design,
  fit a predictor, run the inner algorithm on predictions, measure a few diverse candidates of the
  predicted front, refit, and repeat until ``evaluations`` true measurements are spent.

A search directory holds ``search_config.json`` (what was asked), ``cache.jsonl`` (every
measurement), ``state.pkl`` (the last finished iteration: the pickled pymoo algorithm in plain
mode) and ``search_log.jsonl``; re-running with the same directory resumes from the last finished
iteration and ends with the same front as an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import importlib
import io
import json
import pickle
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from pymoo.problems.static import StaticProblem

from nas_cli.errors import UserError
from nas_cli.evaluation import METRICS, Evaluator
from nas_cli.io import read_jsonl
from predictors.files import atomic_write_bytes, atomic_write_json
from nas_cli.search.algorithms import ALGORITHMS, make_algorithm
from nas_cli.search.budgets import BUDGET_UNITS, Budget
from nas_cli.search.cache import EvalCache
from nas_cli.search.operators import canonical_keys, sample_genomes
from nas_cli.search.outputs import write_outputs
from nas_cli.search.problem import ArchProblem
from nas_cli.search.tracking import (
    Normaliser,
    constraints,
    feasible_front,
    front_indices,
    log_line,
    make_normaliser,
    truncate_log,
)
from search_spaces.base import Arch, SearchSpace

CONFIG_FILE = "search_config.json"
CACHE_FILE = "cache.jsonl"
STATE_FILE = "state.pkl"
LOG_FILE = "search_log.jsonl"
_STATE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class SearchConfig:
    """What a search optimises, under which budgets, with which strategy and effort.

    ``evaluations=None`` is plain mode; an integer switches to predictor-in-the-loop with that
    many true evaluations (``initial`` of them for the first design, ``batch`` per iteration).
    """

    objectives: tuple[str, ...] = ("accuracy", "latency")
    budgets: tuple[Budget, ...] = ()
    algorithm: str = "nsga2"
    population: int = 20
    generations: int = 10
    evaluations: int | None = None
    predictor: str = "auto"
    initial: int | None = None
    batch: int = 8
    seed: int = 0

    def validate(self) -> None:
        """Raises UserError naming the first bad field and what is allowed."""
        bad = [m for m in self.objectives if m not in METRICS]
        if bad:
            raise UserError(f"unknown objective {bad[0]!r}; known objectives: {', '.join(METRICS)}")
        if len(self.objectives) < 2:
            raise UserError(f"a search needs at least two objectives, got {list(self.objectives)}")
        if self.algorithm not in ALGORITHMS:
            raise UserError(f"unknown search algorithm {self.algorithm!r}; known algorithms: {', '.join(ALGORITHMS)}")
        seen = set()
        for b in self.budgets:
            if b.metric not in BUDGET_UNITS:
                raise UserError(f"no budget can be set on {b.metric!r}; budget metrics: {', '.join(BUDGET_UNITS)}")
            if b.metric in seen:
                raise UserError(f"two budgets on {b.metric!r}; give one")
            seen.add(b.metric)
        for name, low in (("population", 2), ("generations", 1), ("batch", 1)):
            if getattr(self, name) < low:
                raise UserError(f"--{name} {getattr(self, name)} is too small; use at least {low}")
        if self.evaluations is not None and self.evaluations < 3:
            raise UserError(f"--evaluations {self.evaluations} is too small; use at least 3 "
                            "(the largest and smallest subnets are always measured)")
        if self.initial is not None and self.initial < 2:
            raise UserError(f"--initial {self.initial} is too small; use at least 2")

    @property
    def initial_size(self) -> int:
        assert self.evaluations is not None
        n = self.initial if self.initial is not None else max(4, self.evaluations // 4)
        return min(n, self.evaluations)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["objectives"] = list(self.objectives)
        d["budgets"] = [dataclasses.asdict(b) for b in self.budgets]
        return d


@dataclasses.dataclass
class SearchResult:
    """The measured feasible front (sorted by accuracy, best first) and the search log."""

    front: list[dict]
    log: list[dict]
    bounds: dict[str, float]
    normaliser: Normaliser
    out_dir: Path


def run_search(evaluator: Evaluator, config: SearchConfig, out_dir: Path, *, source: str = "",
               progress: Callable[[dict], None] | None = None) -> SearchResult:
    """Runs (or resumes) a search into ``out_dir`` and writes pareto.json/.csv/.png there.

    Args:
      evaluator: the truth (``evaluate``) and cheap estimates (``estimate``) of one space.
      config: objectives, budgets, strategy, effort and seed.
      out_dir: the search directory; an unfinished search there is resumed.
      source: what the evaluator reads (a run directory, a table), recorded in search_config.json.
      progress: called with every log record.

    Raises:
      UserError: bad config, metrics the evaluator lacks, a budget below the smallest subnet's
        value, or an ``out_dir`` holding a different search.
    """
    config.validate()
    space = evaluator.space
    needed = list(dict.fromkeys([*config.objectives, *(b.metric for b in config.budgets)]))
    have = tuple(evaluator.metric_names())
    missing = [m for m in needed if m not in have]
    if missing:
        raise UserError(f"the evaluator does not measure {', '.join(missing)}; it measures: {', '.join(have)}")
    predictors = _load_predictors(config) if config.evaluations is not None else None

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {"space": space.name, "source": source, **config.to_json()}
    if not _same_config(out_dir, wanted):
        # files without a recorded config belong to no search (e.g. one stopped by a bad budget)
        for name in (CACHE_FILE, STATE_FILE, LOG_FILE):
            (out_dir / name).unlink(missing_ok=True)
    cache = EvalCache(out_dir / CACHE_FILE)

    largest, smallest = cache.measure(space, [space.largest(), space.smallest()], evaluator.evaluate)
    bounds = _resolve_budgets(space, config.budgets, largest, smallest)
    if not (out_dir / CONFIG_FILE).exists():  # recorded once the budgets are known to be feasible
        atomic_write_json(out_dir / CONFIG_FILE, wanted)
    norm = make_normaliser(config.objectives, smallest, largest, bounds)
    ctx = _Context(space, evaluator, config, cache, bounds, norm, out_dir, progress)

    state = _load_state(out_dir)
    if state is not None:
        truncate_log(out_dir / LOG_FILE, state["iteration"])
    elif (out_dir / LOG_FILE).exists():
        (out_dir / LOG_FILE).unlink()  # a log without a checkpoint belongs to no iteration we keep

    if config.evaluations is None:
        state = _plain(ctx, state)
    else:
        state = _with_predictor(ctx, state, predictors)

    records = [cache[k] for k in state["measured"]]
    remeasure = getattr(evaluator, "remeasure", None)  # a modelled latency: time the final front for real
    front = write_outputs(out_dir, space, config, bounds, norm, state["measured"], records,
                          (lambda keys: remeasure([space.decode(k) for k in keys])) if remeasure else None)
    log = read_jsonl(out_dir / LOG_FILE)
    return SearchResult(front, log, bounds, norm, out_dir)


@dataclasses.dataclass
class _Context:
    space: SearchSpace
    evaluator: Evaluator
    config: SearchConfig
    cache: EvalCache
    bounds: dict[str, float]
    norm: Normaliser
    out_dir: Path
    progress: Callable[[dict], None] | None

    def measure(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        return self.cache.measure(self.space, archs, self.evaluator.evaluate)

    def objectives(self, metrics: Sequence[dict]) -> tuple[np.ndarray, np.ndarray]:
        return self.norm(metrics), constraints(metrics, self.bounds)

    def checkpoint(self, state: dict) -> None:
        atomic_write_bytes(self.out_dir / STATE_FILE, _dumps({"version": _STATE_VERSION, **state}))

    def log(self, iteration: int, measured: list[str], **extra) -> None:
        records = [self.cache[k] for k in measured]
        front, hv = feasible_front(measured, records, self.norm, self.bounds)
        accs = [records[i]["accuracy"] for i in front if "accuracy" in records[i]]
        rec = {"iteration": iteration, "n_evaluations": len(measured), "hypervolume": hv,
               "front_size": len(front), "best_accuracy": max(accs) if accs else None,
               "reference_point": self.norm.reference_point, **extra}
        log_line(self.out_dir / LOG_FILE, rec)
        if self.progress is not None:
            self.progress(rec)


def _same_config(out_dir: Path, wanted: dict) -> bool:
    """True when ``out_dir`` records this search; False when it records none.

    Raises:
      UserError: ``out_dir`` records a different search.
    """
    path = out_dir / CONFIG_FILE
    if not path.exists():
        return False
    have = json.loads(path.read_text())
    wanted = json.loads(json.dumps(wanted))  # tuples -> lists, as stored
    diff = sorted(k for k in set(have) | set(wanted) if have.get(k) != wanted.get(k))
    if diff:
        details = "; ".join(f"{k}: {have.get(k)!r} there, {wanted.get(k)!r} now" for k in diff)
        raise UserError(f"{out_dir} holds a different search ({details}); "
                        "repeat its settings to resume it, or pass another --out")
    return True


def _resolve_budgets(space: SearchSpace, budgets: Sequence[Budget], largest: dict, smallest: dict) -> dict[str, float]:
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


def _dumps(obj) -> bytes:
    buf = io.BytesIO()
    _StatePickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def _load_state(out_dir: Path) -> dict | None:
    path = out_dir / STATE_FILE
    if not path.exists():
        return None
    state = pickle.loads(path.read_bytes())
    if state.get("version") != _STATE_VERSION:
        raise UserError(f"{path} was written by another version of nas search; pass another --out")
    return state


# --- plain mode ------------------------------------------------------------------------------


def _plain(ctx: _Context, state: dict | None) -> dict:
    cfg, space = ctx.config, ctx.space
    if state is None:
        problem = ArchProblem(space, len(cfg.objectives), len(ctx.bounds))
        algorithm = make_algorithm(cfg.algorithm, space, len(cfg.objectives), cfg.population)
        algorithm.setup(problem, termination=("n_gen", cfg.generations), seed=cfg.seed)
        state = {"iteration": 0, "measured": [space.encode(space.largest()), space.encode(space.smallest())],
                 "algorithm": algorithm, "done": False}
    algorithm = state["algorithm"]
    measured = list(state["measured"])
    seen = set(measured)
    while not state["done"] and algorithm.has_next():
        pop = algorithm.ask()
        X = pop.get("X").round().astype(np.int64)
        archs = [space.from_genome(x) for x in X]
        metrics = ctx.measure(archs)
        for k in canonical_keys(space, X):
            if k not in seen:
                seen.add(k)
                measured.append(k)
        F, G = ctx.objectives(metrics)
        values = {"F": F, "G": G} if G.shape[1] else {"F": F}
        algorithm.evaluator.eval(StaticProblem(algorithm.problem, **values), pop)
        algorithm.tell(infills=pop)
        iteration = state["iteration"] + 1
        ctx.log(iteration, measured, generation=iteration)
        state = {"iteration": iteration, "measured": list(measured), "algorithm": algorithm,
                 "done": not algorithm.has_next()}
        ctx.checkpoint(state)
    return state


# --- predictor-in-the-loop ---------------------------------------------------------------------


def _load_predictors(config: SearchConfig):
    try:
        import predictors  # noqa: F401  (lazy: only predictor-in-the-loop needs it)
        from predictors import get_predictor
    except ImportError as e:
        raise UserError(f"--evaluations needs the predictors package, which failed to import: {e}") from None
    try:
        get_predictor(config.predictor, seed=config.seed)
    except (ValueError, KeyError) as e:
        raise UserError(f"--predictor: {e}") from None
    return get_predictor


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def initial_design(space: SearchSpace, n: int, rng: np.random.Generator, fixed: Sequence[Arch] = ()) -> list[Arch]:
    """``n`` distinct architectures: ``fixed`` first, then a greedy max-min (space-filling) pick from
    a random pool, by Euclidean distance of predictor features."""
    chosen = list(dict.fromkeys(space.encode(a) for a in fixed))[:n]
    pool = list(dict.fromkeys(canonical_keys(space, sample_genomes(space, max(20 * n, 200), rng))))
    pool = [k for k in pool if k not in set(chosen)]
    if len(chosen) < n and pool:
        feats = np.stack([space.features(space.decode(k)) for k in pool])
        if chosen:
            ref = np.stack([space.features(space.decode(k)) for k in chosen])
            dist = np.min(((feats[:, None] - ref[None]) ** 2).sum(-1), axis=1)
        else:
            dist = np.full(len(pool), np.inf)
        taken = np.zeros(len(pool), bool)
        while len(chosen) < n and not taken.all():
            i = int(np.argmax(np.where(taken, -1.0, dist)))
            taken[i] = True
            chosen.append(pool[i])
            dist = np.minimum(dist, ((feats - feats[i]) ** 2).sum(-1))
    return [space.decode(k) for k in chosen]


def select_diverse(F: np.ndarray, cv: np.ndarray, k: int, anchors: np.ndarray | None = None) -> list[int]:
    """Picks ``k`` candidates: predicted-feasible ones by non-dominated front, within a front the one
    farthest (in normalised objective space) from the anchors and the ones already picked; then
    the least infeasible. Deterministic (ties go to the lower index).

    Args:
      F: predicted normalised objectives ``(n, n_obj)``.
      cv: predicted constraint violation ``(n,)``, ``<= 0`` feasible.
      anchors: objectives of points already measured on the front ``(m, n_obj)``.
    """
    chosen: list[int] = []
    ref = [a for a in (anchors if anchors is not None else np.zeros((0, F.shape[1])))]
    left = np.flatnonzero(cv <= 0)
    while len(chosen) < k and len(left):
        front = left[front_indices(F[left])]
        rest = list(front)
        while rest and len(chosen) < k:
            if ref:
                R = np.stack(ref)
                d = np.min(((F[rest][:, None] - R[None]) ** 2).sum(-1), axis=1)
                j = int(np.argmax(d))
            else:
                j = int(np.argmin(F[rest, 0]))
            i = rest.pop(j)
            chosen.append(int(i))
            ref.append(F[i])
        left = np.setdiff1d(left, front)
    infeasible = np.flatnonzero(cv > 0)
    for i in infeasible[np.argsort(cv[infeasible], kind="stable")]:
        if len(chosen) >= k:
            break
        chosen.append(int(i))
    return chosen


class _Surrogate:
    """Predicted metrics of genomes: fitted predictors, or ``estimate`` where it is exact/cheap."""

    def __init__(self, ctx: _Context, get_predictor, measured: list[str], iteration: int):
        self.ctx = ctx
        space, cfg = ctx.space, ctx.config
        probe = ctx.evaluator.estimate([space.largest()])[0]
        needed = list(dict.fromkeys([*cfg.objectives, *ctx.bounds]))
        self.estimated = [m for m in needed if m in probe and m != "accuracy"]
        self.models = {}
        X = np.stack([space.features(space.decode(k)) for k in measured])
        for j, m in enumerate(m for m in needed if m not in self.estimated):
            y = np.asarray([ctx.cache[k][m] for k in measured], np.float64)
            self.models[m] = get_predictor(cfg.predictor, seed=_seed(cfg.seed, iteration, j)).fit(X, y)
        self._est: dict[str, dict] = {}

    def metrics(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        space = self.ctx.space
        out = [dict() for _ in archs]
        if self.models:
            X = np.stack([space.features(a) for a in archs])
            for m, model in self.models.items():
                for d, v in zip(out, model.predict(X)):
                    d[m] = float(v)
        if self.estimated:
            keys = [space.encode(a) for a in archs]
            todo = [i for i, k in enumerate(keys) if k not in self._est]
            if todo:
                for i, est in zip(todo, self.ctx.evaluator.estimate([archs[i] for i in todo])):
                    self._est[keys[i]] = est
            for d, k in zip(out, keys):
                d.update({m: float(self._est[k][m]) for m in self.estimated})
        return out

    def __call__(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X).round().astype(np.int64)  # pymoo's operators hand over floats
        return self.ctx.objectives(self.metrics([self.ctx.space.from_genome(x) for x in X]))


def _with_predictor(ctx: _Context, state: dict | None, get_predictor) -> dict:
    cfg, space = ctx.config, ctx.space
    E = cfg.evaluations
    if state is None:
        rng = np.random.default_rng(_seed(cfg.seed, 0))
        design = initial_design(space, cfg.initial_size, rng, fixed=[space.largest(), space.smallest()])
        ctx.measure(design)
        measured = [space.encode(a) for a in design]
        ctx.log(0, measured, stage="initial")
        state = {"iteration": 0, "measured": measured, "done": len(measured) >= E}
        ctx.checkpoint(state)
    while not state["done"]:
        it = state["iteration"] + 1
        measured = list(state["measured"])
        done_keys = set(measured)
        surrogate = _Surrogate(ctx, get_predictor, measured, it)

        problem = ArchProblem(space, len(cfg.objectives), len(ctx.bounds), fn=surrogate)
        algorithm = make_algorithm(cfg.algorithm, space, len(cfg.objectives), cfg.population)
        algorithm.setup(problem, termination=("n_gen", cfg.generations), seed=_seed(cfg.seed, it, 1))
        algorithm.run()
        pool_X = [x for P in (algorithm.pop, algorithm.opt) if P is not None and len(P) for x in P.get("X")]
        keys = list(dict.fromkeys(canonical_keys(space, np.asarray(pool_X)))) if pool_X else []
        cand = [k for k in keys if k not in done_keys]

        k = min(cfg.batch, E - len(measured))
        picked: list[str] = []
        predicted: dict[str, dict] = {}
        if cand:
            archs = [space.decode(c) for c in cand]
            pm = surrogate.metrics(archs)
            F, G = ctx.objectives(pm)
            cv = np.max(G, axis=1) if G.shape[1] else np.zeros(len(cand))
            recs = [ctx.cache[m] for m in measured]
            front, _ = feasible_front(measured, recs, ctx.norm, ctx.bounds)
            anchors = ctx.norm([recs[i] for i in front]) if front else None
            picked = [cand[i] for i in select_diverse(F, cv, k, anchors)]
            predicted = {c: m for c, m in zip(cand, pm)}
        rng = np.random.default_rng(_seed(cfg.seed, it, 2))
        for _ in range(50):  # top up with random unmeasured cells if the predicted front ran short
            if len(picked) >= k:
                break
            for key in canonical_keys(space, sample_genomes(space, 4 * k, rng)):
                if key not in done_keys and key not in picked and len(picked) < k:
                    picked.append(key)

        if not picked:  # every architecture of the space is measured
            state = {**state, "done": True}
            ctx.checkpoint(state)
            break
        ctx.measure([space.decode(p) for p in picked])
        measured += picked
        extra = {"stage": "predictor", "batch": len(picked)}
        scored = [p for p in picked if p in predicted]
        if "accuracy" in surrogate.models and len(scored) >= 2:
            # how well the model ranked what it chose: the usual health check of a predictor loop
            from predictors import kendall_tau

            extra["batch_kendall_tau"] = kendall_tau([ctx.cache[p]["accuracy"] for p in scored],
                                                     [predicted[p]["accuracy"] for p in scored])
        ctx.log(it, measured, **extra)
        state = {"iteration": it, "measured": measured, "done": len(measured) >= E}
        ctx.checkpoint(state)
    return state


__all__ = ["SearchConfig", "SearchResult", "run_search", "initial_design", "select_diverse"]
