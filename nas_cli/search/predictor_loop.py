"""Predictor-in-the-loop (MSuNAS / LINAS style): measure an initial design, fit a predictor per
metric, propose what to measure next, measure it, refit, and repeat until the configured number of
true evaluations is spent.

Two proposals (``SearchConfig.proposal``):

* ``front``: the predictors are cheap enough to score a whole candidate pool (every architecture of
  a small space, e.g. NAS-Bench-201's 15,625 cells, else ``pool`` random ones plus every one-gene
  mutation of the measured front), so they do; the candidates are ranked by non-dominated front
  among the measured architectures and themselves, predictions made optimistic by ``explore``
  predictive stds (ensemble spread, GP std), and the best fronts measured;
* ``inner``: the inner pymoo algorithm runs on predictions, and diverse candidates of its final
  population are measured.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from nas_cli.errors import UserError
from nas_cli.evaluation import METRICS
from nas_cli.search.algorithms import make_algorithm
from nas_cli.search.context import SearchContext, Stopwatch
from nas_cli.search.operators import canonical_keys, n_choices, repair_genomes, sample_genomes
from nas_cli.search.problem import ArchProblem
from nas_cli.search.selection import initial_design, select_diverse, select_front
from nas_cli.search.tracking import constraint_columns, feasible_front, feasible_mask
from predictors import PREDICTORS, get_predictor, kendall_tau
from predictors.data import column_scale, split_feature_kind
from search_spaces.base import Arch, SearchSpace


#: A predictor that chooses its model by cross-validation (``auto``, ``ensemble``) chooses again
#: only when the measured set has grown by this factor since its last choice; in between, its
#: choice is refitted on everything measured (one fit instead of k folds x every candidate).
#: Choosing every iteration was nearly all of a 300-evaluation NAS-Bench-201 search's time (363 of
#: 400 s in a profile of 4 iterations). Against choosing every iteration (growth 1, ~7x the CPU)
#: and 1.5 on two accuracy x device pairs of the NAS-Bench-201 table, no arm's front differed from 2's
#: by more than the spread between seeds (bench/RESULTS.md, issue 29, "the schedule's quality over seeds").
RESELECT_GROWTH = 2.0


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def selection_size(n: int, first: int, growth: float | None = None) -> int:
    """How many of the first-measured architectures the model choice of an iteration with ``n``
    measured is made on: the largest of ``first``, ``ceil(first * growth)``, ... that is at most
    ``n`` (``n`` itself below ``first``, and with ``growth`` 1 or less: a choice every iteration).
    A function of ``n`` alone, so that a resumed search remakes the choice of the uninterrupted one
    from the measured list's prefix. ``growth`` defaults to :data:`RESELECT_GROWTH` as it is at the
    call (a benchmark may set it)."""
    growth = RESELECT_GROWTH if growth is None else float(growth)
    if n <= first or growth <= 1.0:
        return n
    s = first
    while math.ceil(s * growth) <= n:
        s = math.ceil(s * growth)
    return s


class ZeroCostFeatures:
    """Zero-cost proxies of architectures as predictor features: computed once per architecture
    (cached by canonical key) through the run's supernet, standardised by the proxies of a fixed set
    of architectures (the search's initial design, so a resumed search scales them alike).

    Args:
      proxies: a :class:`search_spaces.zero_cost.ZeroCostProxies` of the run.
    """

    def __init__(self, space: SearchSpace, proxies):
        self.space, self.proxies = space, proxies
        self._raw: dict[str, np.ndarray] = {}
        self._mean = self._std = None

    @property
    def width(self) -> int:
        return len(self.proxies.proxies)

    def raw(self, archs: Sequence[Arch]) -> np.ndarray:
        keys = [self.space.encode(a) for a in archs]
        for key, arch in zip(keys, archs):
            if key not in self._raw:
                v = self.proxies(arch)
                self._raw[key] = np.asarray([v[p] for p in self.proxies.proxies], np.float64)
        return np.stack([self._raw[k] for k in keys]) if keys else np.zeros((0, self.width))

    def fix_scale(self, archs: Sequence[Arch]) -> None:
        """Standardise every later call by the mean and std of the proxies of ``archs``."""
        self._mean, self._std = column_scale(self.raw(archs))

    def __call__(self, archs: Sequence[Arch]) -> np.ndarray:
        assert self._mean is not None, "fix_scale first"
        return ((self.raw(archs) - self._mean) / self._std).astype(np.float32)

    def cost(self) -> dict[str, float]:
        return self.proxies.cost()


def zero_cost_features(ctx: SearchContext) -> ZeroCostFeatures | None:
    """The search's zero-cost features (None unless ``--features`` asks for them).

    Raises:
      UserError: the evaluator has no supernet to compute them through (a benchmark table).
    """
    if not split_feature_kind(ctx.config.features)[1]:
        return None
    run = ctx.evaluator.run
    if run is None:
        raise UserError(f"--features {ctx.config.features}: zero-cost proxies are computed through a trained "
                        "supernet's weights, and this search measures a table; use --features structure or onehot")
    from search_spaces.zero_cost import zero_cost_of_run  # noqa: PLC0415  (JAX, only when asked for)

    return ZeroCostFeatures(ctx.space, zero_cost_of_run(run))


def encode_archs(space: SearchSpace, archs: Sequence[Arch], features: str,
                 zero_cost: ZeroCostFeatures | None = None) -> np.ndarray:
    """Predictor features ``(n, F)`` of ``archs``: with ``structure``, the space's structure features
    then the genome's one-hot (see :func:`metric_columns`); with ``onehot``, the one-hot alone. With
    ``+zc`` the zero-cost proxies come right after the structure (or one-hot) features; ``zc`` is
    the proxies alone."""
    base, with_zc = split_feature_kind(features)
    parts = []
    if base == "onehot":
        parts.append(np.stack([np.asarray(space.features(a), np.float32) for a in archs]))
    elif base == "structure":
        parts.append(np.stack([np.asarray(space.structure_features(a), np.float32) for a in archs]))
    if with_zc:
        if zero_cost is None:
            raise ValueError(f"features {features!r} need the zero-cost proxies of a supernet")
        parts.append(zero_cost(archs))
    if base == "structure":
        parts.append(np.stack([np.asarray(space.features(a), np.float32) for a in archs]))
    return np.concatenate(parts, 1)


def metric_columns(space: SearchSpace, features: str, metric: str, zero_cost_width: int = 0) -> slice:
    """The columns of :func:`encode_archs` that the model of ``metric`` sees.

    A quality metric (accuracy) sees what the architecture computes, the structure features (and
    the zero-cost proxies); a cost metric (latency, ...) also sees the genome's one-hot, because what
    runs can differ from what computes: NAS-Bench-201's cells run their dead edges too (GP tau of
    raspi4 / 1080ti / silver latency at 200 cells 0.78 / 0.72 / 0.69 on structure features alone,
    0.83 / 0.86 / 0.82 with the one-hot beside them; bench/RESULTS.md).
    """
    if split_feature_kind(features)[0] != "structure" or not METRICS[metric]:
        return slice(None)
    return slice(0, len(space.structure_feature_names()) + zero_cost_width)


class Surrogate:
    """Predicted metrics of genomes: fitted predictors, or ``estimate`` where it is exact/cheap.

    Quality metrics (accuracy) are fitted through the normal scores of their ranks (``targets="rank"``):
    the search only needs their order, and their distribution is far from normal (a tail of broken
    architectures, a dense crowd of good ones). Cost metrics (latency) are fitted as they are: they add
    up over the layers, which rank scores would bend. On the NAS-Bench-201 table this raised the share
    of the true front that 300 evaluations find from 0.42 to 0.49 (mean over 10 accuracy x device
    pairs; bench/RESULTS.md, issue 18).

    A predictor that chooses its model by cross-validation (``auto``, ``ensemble``) chooses on the
    first :func:`selection_size` measured architectures, once per such size (kept in
    ``selections``), and the choice is refitted on everything measured.

    Args:
      estimates: a cache of ``estimate`` results by canonical key, kept across iterations.
      selections: the model choices by ``(metric, selection size)``, kept across iterations.
      rows: the features of architectures by canonical key, kept across iterations (each
        architecture is encoded once per search).
    """

    def __init__(self, ctx: SearchContext, measured: list[str], iteration: int, estimates: dict | None = None,
                 zero_cost: ZeroCostFeatures | None = None, selections: dict | None = None,
                 rows: dict[str, np.ndarray] | None = None):
        self.ctx = ctx
        self.zero_cost = zero_cost
        self._rows = {} if rows is None else rows
        space, cfg = ctx.space, ctx.config
        probe = ctx.evaluator.estimate([space.largest()])[0]
        needed = list(dict.fromkeys([*cfg.objectives, *ctx.bounds]))
        self.estimated = [m for m in needed if m in probe and m != "accuracy"]
        self.models = {}
        X = self.encode_keys(measured)
        self._cols = {}
        selections = {} if selections is None else selections
        chooses = PREDICTORS.get(cfg.predictor).chooses
        n = len(measured)
        s = selection_size(n, cfg.initial_size)
        for j, m in enumerate(m for m in needed if m not in self.estimated):
            y = np.asarray([ctx.cache[k][m] for k in measured], np.float64)
            self._cols[m] = metric_columns(space, cfg.features, m, zero_cost.width if zero_cost else 0)
            Xm = X[:, self._cols[m]]
            targets = "rank" if METRICS[m] else "standard"
            model = None
            if chooses and (m, s) not in selections:
                chooser = get_predictor(cfg.predictor, seed=_seed(cfg.seed, s, j, 4), targets=targets).fit(Xm[:s], y[:s])
                selections[(m, s)] = chooser.selection()
                if s == n:
                    model = chooser
            if model is None:
                chosen = selections.get((m, s), {}) if chooses else {}
                model = get_predictor(cfg.predictor, seed=_seed(cfg.seed, iteration, j), targets=targets,
                                      **chosen).fit(Xm, y)
            self.models[m] = model
        self._est: dict[str, dict] = {} if estimates is None else estimates

    def encode_keys(self, keys: Sequence[str]) -> np.ndarray:
        """Features ``(n, F)`` of architectures by canonical key, each encoded once per search."""
        todo = [k for k in dict.fromkeys(keys) if k not in self._rows]
        if todo:
            for k, row in zip(todo, self.encode([self.ctx.space.decode(k) for k in todo])):
                self._rows[k] = row
        return np.stack([self._rows[k] for k in keys])

    def encode(self, archs: Sequence[Arch]) -> np.ndarray:
        return encode_archs(self.ctx.space, archs, self.ctx.config.features, self.zero_cost)

    def predict(self, archs: Sequence[Arch], X: np.ndarray | None = None, with_std: bool = False,
                keys: Sequence[str] | None = None) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Predicted (or estimated) metrics of ``archs`` as arrays by metric, and their predictive
        stds (0 for estimated metrics and for models without one); ``X``: their features, ``keys``:
        their canonical strings, if known."""
        space = self.ctx.space
        mean, std = {}, {}
        if self.models:
            X = self.encode(archs) if X is None else X
            for m, model in self.models.items():
                Xm = X[:, self._cols[m]]
                mean[m] = np.asarray(model.predict(Xm), np.float64)
                std[m] = np.zeros(len(archs))
                if with_std:
                    try:
                        std[m] = np.asarray(model.predict_std(Xm), np.float64)
                    except NotImplementedError:  # the model has no notion of uncertainty
                        pass
        if self.estimated:
            keys = [space.encode(a) for a in archs] if keys is None else keys
            todo = [i for i, k in enumerate(keys) if k not in self._est]
            if todo:
                for i, est in zip(todo, self.ctx.evaluator.estimate([archs[i] for i in todo])):
                    self._est[keys[i]] = est
            for m in self.estimated:
                mean[m] = np.asarray([float(self._est[k][m]) for k in keys])
                std[m] = np.zeros(len(archs))
        return mean, std

    def metrics(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        """Predicted (or estimated) metrics of ``archs``, one dict each."""
        mean, _ = self.predict(archs)
        return [{m: float(v[i]) for m, v in mean.items()} for i in range(len(archs))]

    def __call__(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X).round().astype(np.int64)  # pymoo's operators hand over floats
        return self.ctx.objectives(self.metrics([self.ctx.space.from_genome(x) for x in X]))


class CandidatePool:
    """What the ``front`` proposal scores: every architecture of a space with at most ``size`` genomes
    (enumerated and encoded once), else ``size`` random ones per iteration plus every one-gene
    mutation of the measured front (local search around what is known to be good)."""

    def __init__(self, space: SearchSpace, features: str, size: int, zero_cost: ZeroCostFeatures | None = None):
        self.space, self.features, self.size, self.zero_cost = space, features, size, zero_cost
        k = n_choices(space)
        self.exhaustive = int(np.prod(k.astype(object))) <= size
        if self.exhaustive:
            grid = np.stack(np.unravel_index(np.arange(int(np.prod(k))), tuple(k)), 1)
            self._keys = list(dict.fromkeys(canonical_keys(space, repair_genomes(space, grid))))
            self._archs = [space.decode(key) for key in self._keys]
            self._X = encode_archs(space, self._archs, features, zero_cost)

    def neighbours(self, keys: Sequence[str]) -> list[str]:
        """Every architecture one gene away from one of ``keys``."""
        space, k = self.space, n_choices(self.space)
        rows = []
        for key in keys:
            g = space.to_genome(space.decode(key))
            for j in range(len(g)):
                for c in range(k[j]):
                    if c != g[j]:
                        h = g.copy()
                        h[j] = c
                        rows.append(h)
        return canonical_keys(self.space, repair_genomes(self.space, np.asarray(rows))) if rows else []

    def candidates(self, front_keys: Sequence[str], rng: np.random.Generator) -> tuple[list[str], list, np.ndarray]:
        """Candidate keys, their architectures and features ``(n, F)``."""
        if self.exhaustive:
            return self._keys, self._archs, self._X
        keys = list(dict.fromkeys([*self.neighbours(front_keys),
                                   *canonical_keys(self.space, sample_genomes(self.space, self.size, rng))]))
        archs = [self.space.decode(key) for key in keys]
        return keys, archs, encode_archs(self.space, archs, self.features, self.zero_cost)


def _propose_front(ctx: SearchContext, surrogate: Surrogate, pool: CandidatePool, measured: list[str],
                   k: int, rng: np.random.Generator) -> tuple[list[str], dict]:
    """The ``front`` proposal: ``k`` unmeasured candidates of the pool, by optimistic predicted front."""
    cfg, done = ctx.config, set(measured)
    recs = [ctx.cache[m] for m in measured]
    front, _ = feasible_front(measured, recs, ctx.norm, ctx.bounds)
    keys, archs, X = pool.candidates([measured[i] for i in front], rng)
    todo = [i for i, key in enumerate(keys) if key not in done]
    if not todo:
        return [], {}
    mean, std = surrogate.predict([archs[i] for i in todo], X[todo], with_std=cfg.explore > 0,
                                  keys=[keys[i] for i in todo])
    # optimism in the face of uncertainty: each metric moved by `explore` stds towards its better side
    opt = {m: mean[m] + (1.0 if METRICS[m] else -1.0) * cfg.explore * std[m] for m in mean}
    F, G = ctx.norm.columns(opt), constraint_columns(opt, ctx.bounds, len(todo))
    cv = np.max(G, axis=1) if G.shape[1] else np.zeros(len(todo))
    feas = feasible_mask(recs, ctx.bounds)
    measured_F = ctx.norm([r for r, ok in zip(recs, feas) if ok]) if feas.any() else np.zeros((0, F.shape[1]))
    chosen = select_front(F, cv, k, measured_F)
    return [keys[todo[i]] for i in chosen], {keys[todo[i]]: {m: float(v[i]) for m, v in mean.items()} for i in chosen}


def _propose_inner(ctx: SearchContext, surrogate: Surrogate, measured: list[str], k: int,
                   it: int) -> tuple[list[str], dict]:
    """The ``inner`` proposal: the inner algorithm on predictions, diverse candidates of its population."""
    cfg, space, done = ctx.config, ctx.space, set(measured)
    problem = ArchProblem(space, len(cfg.objectives), len(ctx.bounds), fn=surrogate)
    algorithm = make_algorithm(cfg.algorithm, space, len(cfg.objectives), cfg.population)
    algorithm.setup(problem, termination=("n_gen", cfg.generations), seed=_seed(cfg.seed, it, 1))
    algorithm.run()
    pool_X = [x for P in (algorithm.pop, algorithm.opt) if P is not None and len(P) for x in P.get("X")]
    keys = list(dict.fromkeys(canonical_keys(space, np.asarray(pool_X)))) if pool_X else []
    cand = [key for key in keys if key not in done]
    if not cand:
        return [], {}
    pm = surrogate.metrics([space.decode(c) for c in cand])
    F, G = ctx.objectives(pm)
    cv = np.max(G, axis=1) if G.shape[1] else np.zeros(len(cand))
    recs = [ctx.cache[m] for m in measured]
    front, _ = feasible_front(measured, recs, ctx.norm, ctx.bounds)
    anchors = ctx.norm([recs[i] for i in front]) if front else None
    return [cand[i] for i in select_diverse(F, cv, k, anchors)], dict(zip(cand, pm))


def run_with_predictor(ctx: SearchContext, state: dict | None) -> dict:
    """Runs the predictor loop from ``state`` (None: from the initial design) until
    ``config.evaluations`` architectures are measured (or the space is exhausted).

    Returns:
      The final state: ``iteration``, ``measured`` (canonical keys, in order), ``done``.
    """
    cfg, space = ctx.config, ctx.space
    E = cfg.evaluations
    if state is None:
        watch = Stopwatch()
        with watch("design"):
            rng = np.random.default_rng(_seed(cfg.seed, 0))
            # the design is spread over the space's own features (no proxies needed to choose it)
            base = split_feature_kind(cfg.features)[0] or "structure"
            design = initial_design(space, cfg.initial_size, rng, fixed=[space.largest(), space.smallest()],
                                    encode=lambda a: encode_archs(space, [a], base)[0])
        with watch("evaluate"):
            ctx.measure(design)
        measured = [space.encode(a) for a in design]
        ctx.log(0, measured, seconds=watch.seconds, stage="initial")
        state = {"iteration": 0, "measured": measured, "done": len(measured) >= E}
        ctx.checkpoint(state)
    watch = Stopwatch()
    with watch("setup"):  # proxies' scale, the candidate pool and its features: once per search
        zero_cost = zero_cost_features(ctx) if not state["done"] else None
        if zero_cost is not None:
            zero_cost.fix_scale([space.decode(key) for key in state["measured"][:cfg.initial_size]])
        pool = (CandidatePool(space, cfg.features, cfg.pool, zero_cost)
                if cfg.proposal == "front" and not state["done"] else None)
    # kept across iterations: cheap estimates, model choices, and every architecture's features
    estimates: dict[str, dict] = {}
    selections: dict = {}
    rows: dict[str, np.ndarray] = dict(zip(pool._keys, pool._X)) if pool is not None and pool.exhaustive else {}
    while not state["done"]:
        it = state["iteration"] + 1
        measured = list(state["measured"])
        done_keys = set(measured)
        with watch("fit"):
            surrogate = Surrogate(ctx, measured, it, estimates, zero_cost, selections, rows)
        k = min(cfg.batch, E - len(measured))
        with watch("score"):
            if pool is not None:
                picked, predicted = _propose_front(ctx, surrogate, pool, measured, k,
                                                   np.random.default_rng(_seed(cfg.seed, it, 3)))
            else:
                picked, predicted = _propose_inner(ctx, surrogate, measured, k, it)
            rng = np.random.default_rng(_seed(cfg.seed, it, 2))
            for _ in range(50):  # top up with random unmeasured architectures if the proposal ran short
                if len(picked) >= k:
                    break
                for key in canonical_keys(space, sample_genomes(space, 4 * k, rng)):
                    if key not in done_keys and key not in picked and len(picked) < k:
                        picked.append(key)

        if not picked:  # every architecture of the space is measured
            state = {**state, "done": True}
            ctx.checkpoint(state)
            break
        with watch("evaluate"):
            ctx.measure([space.decode(p) for p in picked])
        measured += picked
        extra = {"stage": "predictor", "batch": len(picked)}
        scored = [p for p in picked if p in predicted]
        if "accuracy" in surrogate.models and len(scored) >= 2:
            # how well the model ranked what it chose: the usual health check of a predictor loop
            extra["batch_kendall_tau"] = kendall_tau([ctx.cache[p]["accuracy"] for p in scored],
                                                     [predicted[p]["accuracy"] for p in scored])
        if zero_cost is not None:
            cost = zero_cost.cost()
            extra["zero_cost"] = {"subnets": cost["subnets"], "seconds_per_subnet": cost["seconds_per_subnet"]}
        ctx.log(it, measured, seconds=watch.seconds, **extra)
        watch = Stopwatch()
        state = {"iteration": it, "measured": measured, "done": len(measured) >= E}
        ctx.checkpoint(state)
    return state
