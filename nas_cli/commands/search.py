"""``nas search``: multi-objective search of a trained supernet (or a benchmark table) under budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nas_cli.commands._common import user_errors
from nas_cli.errors import UserError


@user_errors
def search(
    run_dir: Path = typer.Argument(..., help="A training run directory (the supernet to search). With "
                                   "--benchmark-table it only holds the outputs (created if missing)."),
    latency_budget: str = typer.Option(..., "--latency-budget", help="Latency budget: milliseconds ('3.5ms' "
                                       "or '3.5') or a percentage of the largest subnet's latency ('60%')."),
    flops_budget: Optional[str] = typer.Option(None, "--flops-budget", help="FLOPs (MACs) budget: '300M', "
                                               "'1.2G', '5e8' or '60%' of the largest subnet's."),
    params_budget: Optional[str] = typer.Option(None, "--params-budget", help="Parameter budget: '5M', "
                                                "'2e6' or '60%' of the largest subnet's."),
    objectives: str = typer.Option("accuracy,latency", "--objectives", help="Comma-separated objectives among "
                                   "accuracy (max), latency, flops, params (min). With a table, "
                                   "'accuracy=COL,latency=COL' names its columns."),
    algorithm: str = typer.Option("nsga2", "--algorithm", help="nsga2 | nsga3 | agemoea2 | moead | random "
                                  "(the inner search in predictor mode)."),
    population: int = typer.Option(20, "--population", help="Population size per generation."),
    generations: int = typer.Option(10, "--generations", help="Generations (of the inner search in predictor mode)."),
    evaluations: Optional[int] = typer.Option(None, "--evaluations", help="Predictor-in-the-loop: spend exactly "
                                              "this many true evaluations (table look-ups count too)."),
    predictor: str = typer.Option("auto", "--predictor", help="Accuracy predictor in predictor mode "
                                  "(auto, mlp, gp, ridge, rbf, gbt)."),
    initial: Optional[int] = typer.Option(None, "--initial", help="Predictor mode: size of the initial "
                                          "space-filling design (default: a quarter of --evaluations)."),
    batch: int = typer.Option(8, "--batch", help="Predictor mode: architectures measured per iteration."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same front."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory (default RUN_DIR/search). "
                                       "An unfinished search there is resumed."),
    benchmark_table: Optional[Path] = typer.Option(None, "--benchmark-table", help="A CSV benchmark table "
                                                   "(arch_str column + metric columns) used as the truth "
                                                   "instead of a supernet."),
    space: Optional[str] = typer.Option(None, "--space", help="The table's search space (with "
                                        "--benchmark-table; default nas-bench-201)."),
    latency_table: Optional[Path] = typer.Option(None, "--latency-table", help="A latency lookup table for "
                                                 "the supernet run's cheap latency estimates."),
    latency_calibrate: bool = typer.Option(True, "--latency-calibrate/--no-latency-calibrate", help="Put every "
                                           "latency at one device speed (kept for a resumed search): with "
                                           "--latency-table, its predictions scaled to this device's speed now; "
                                           "without, each measurement timed beside reference subnets and scaled "
                                           "to the speed at the search's start."),
) -> None:
    """Search Pareto-optimal subnets (accuracy vs latency by default) under hard budgets.

    Writes pareto.json (read by `nas export subnet --rank K`), pareto.csv, pareto.png, search_log.jsonl (hypervolume per iteration) and the measurement cache to --out, then prints the front.

    Re-running with the same --out resumes an interrupted search from its last finished iteration.
    """
    from nas_cli.search import SearchConfig, format_front, parse_budget, parse_objectives, run_search

    objective_spec = parse_objectives(objectives)
    budgets = [parse_budget("latency", latency_budget)]
    if flops_budget is not None:
        budgets.append(parse_budget("flops", flops_budget))
    if params_budget is not None:
        budgets.append(parse_budget("params", params_budget))
    config = SearchConfig(
        objectives=tuple(m for m, _ in objective_spec), budgets=tuple(budgets), algorithm=algorithm,
        population=population, generations=generations, evaluations=evaluations, predictor=predictor,
        initial=initial, batch=batch, seed=seed,
    )
    config.validate()

    if benchmark_table is not None:
        evaluator, source = _table_evaluator(benchmark_table, space or "nas-bench-201", objective_spec, budgets)
    else:
        if space is not None:
            raise UserError("--space only applies with --benchmark-table (a run directory knows its space)")
        named = [f"{m}={c}" for m, c in objective_spec if c is not None]
        if named:
            raise UserError(f"objective columns ({', '.join(named)}) only apply with --benchmark-table; "
                            "write the objectives without '=COL'")
        try:
            from nas_cli.run_eval import open_run_evaluator  # lazy: pulls in JAX and the supernet
        except ModuleNotFoundError as e:
            if e.name != "nas_cli.run_eval":
                raise
            raise UserError("searching a training run needs nas_cli.run_eval, which this build lacks; "
                            "search a benchmark table with --benchmark-table instead") from None

    out_dir = out if out is not None else run_dir / "search"
    if benchmark_table is None:
        evaluator = open_run_evaluator(run_dir, seed=seed, latency_table=latency_table,
                                       calibrate_in=out_dir if latency_calibrate else None)
        source = str(run_dir.resolve())
        cal = getattr(evaluator, "latency_calibration", None)
        if latency_table is not None and cal is not None:
            typer.echo(f"latency model scaled by {cal['scale']:.3f} to this device's speed now" if "why" not in cal
                       else f"latency model used as recorded ({cal['why']})")

    def progress(rec: dict) -> None:
        best = rec.get("best_accuracy")
        typer.echo(f"iteration {rec['iteration']}: {rec['n_evaluations']} evaluated, hypervolume "
                   f"{rec['hypervolume']:.4f}, front {rec['front_size']}"
                   + (f", best accuracy {best:.4f}" if best is not None else ""))

    result = run_search(evaluator, config, out_dir, source=source, progress=progress)
    units = {"latency": " ms"}
    budgets_text = ", ".join(f"{m} <= {v:.4g}{units.get(m, '')}" for m, v in result.bounds.items())
    typer.echo(f"\nPareto front ({len(result.front)} subnets; {budgets_text}):")
    typer.echo(format_front(result.front))
    over = [r for r in result.front if r.get("latency_measured_ms", 0.0) > result.bounds.get("latency", float("inf"))]
    if over:
        worst = max(r["latency_measured_ms"] / r["latency_ms"] - 1 for r in over)
        typer.echo(f"warning: {len(over)} of the {len(result.front)} subnets on the front measure above the latency "
                   f"budget here (the latency table is off by up to {100 * worst:.0f}%); profile the table on an "
                   "idle machine, fit a learned model (`nas latency fit`), or search without --latency-table", err=True)
    typer.echo(f"\nwrote {out_dir / 'pareto.json'}, pareto.csv, pareto.png, search_log.jsonl")


def _table_evaluator(path: Path, space_name: str, objective_spec, budgets):
    import search_spaces  # noqa: F401  (registers the spaces)
    import search_spaces.nasbench201  # noqa: F401  (registers nas-bench-201 even before __init__ lists it)
    from search_spaces.base import get_space

    from nas_cli.table_eval import CHEAP, TableEvaluator

    space = get_space(space_name)
    columns = {m: (c or m) for m, c in objective_spec}
    for b in budgets:
        columns.setdefault(b.metric, b.metric)
    optional = {m: m for m in ("accuracy", "latency", *CHEAP) if m not in columns}
    return TableEvaluator(space, path, columns, optional), str(path.resolve())


def register(app: typer.Typer) -> None:
    app.command("search")(search)
