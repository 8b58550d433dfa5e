"""Predictor-in-the-loop (MSuNAS / LINAS style): measure an initial design, fit a predictor, run
the inner algorithm on predictions, measure a few diverse candidates of the predicted front,
refit, and repeat until the configured number of true evaluations is spent."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nas_cli.search.algorithms import make_algorithm
from nas_cli.search.context import SearchContext
from nas_cli.search.operators import canonical_keys, sample_genomes
from nas_cli.search.problem import ArchProblem
from nas_cli.search.selection import initial_design, select_diverse
from nas_cli.search.tracking import feasible_front
from predictors import get_predictor, kendall_tau
from search_spaces.base import Arch


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


class Surrogate:
    """Predicted metrics of genomes: fitted predictors, or ``estimate`` where it is exact/cheap."""

    def __init__(self, ctx: SearchContext, measured: list[str], iteration: int):
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
        """Predicted (or estimated) metrics of ``archs``, one dict each."""
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


def run_with_predictor(ctx: SearchContext, state: dict | None) -> dict:
    """Runs the predictor loop from ``state`` (None: from the initial design) until
    ``config.evaluations`` architectures are measured (or the space is exhausted).

    Returns:
      The final state: ``iteration``, ``measured`` (canonical keys, in order), ``done``.
    """
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
        surrogate = Surrogate(ctx, measured, it)

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
            extra["batch_kendall_tau"] = kendall_tau([ctx.cache[p]["accuracy"] for p in scored],
                                                     [predicted[p]["accuracy"] for p in scored])
        ctx.log(it, measured, **extra)
        state = {"iteration": it, "measured": measured, "done": len(measured) >= E}
        ctx.checkpoint(state)
    return state
