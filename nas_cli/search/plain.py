"""Plain mode: a pymoo algorithm's ask/tell loop with the true evaluator, checkpointed per generation."""

from __future__ import annotations

import numpy as np
from pymoo.problems.static import StaticProblem

from nas_cli.search.algorithms import make_algorithm
from nas_cli.search.context import SearchContext
from nas_cli.search.operators import canonical_keys
from nas_cli.search.problem import ArchProblem


def run_plain(ctx: SearchContext, state: dict | None) -> dict:
    """Runs ``population x generations`` from ``state`` (None: from the start) to the end.

    Returns:
      The final state: ``iteration``, ``measured`` (canonical keys, in order), ``algorithm``, ``done``.
    """
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
