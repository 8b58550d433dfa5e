"""``nas search``: multi-objective search of a trained supernet (or a benchmark table) under budgets."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nas_cli.commands._common import (
    coordinator_option,
    init_timeout_option,
    num_processes_option,
    prepare_out,
    process_id_option,
    removed_if_refused,
    user_errors,
)
from nas_cli.commands.help_texts import ALGORITHMS, DEFAULT_TABLE_SPACE, PREDICTORS, SEARCH_DEFAULTS as _D


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
    objectives: str = typer.Option(",".join(_D["objectives"]), "--objectives", help="Comma-separated objectives among "
                                   "accuracy (max), latency, flops, params (min). With a table, "
                                   "'accuracy=COL,latency=COL' names its columns."),
    algorithm: str = typer.Option(_D["algorithm"], "--algorithm", help=f"{' | '.join(ALGORITHMS)} "
                                  "(the inner search in predictor mode)."),
    population: int = typer.Option(_D["population"], "--population", help="Population size per generation."),
    generations: int = typer.Option(_D["generations"], "--generations", help="Generations (of the inner search in predictor mode)."),
    evaluations: Optional[int] = typer.Option(None, "--evaluations", help="Predictor-in-the-loop: spend exactly "
                                              "this many true evaluations (table look-ups count too)."),
    predictor: str = typer.Option(_D["predictor"], "--predictor", help="Accuracy predictor in predictor mode "
                                  f"({', '.join(PREDICTORS)})."),
    initial: Optional[int] = typer.Option(None, "--initial", help="Predictor mode: size of the initial "
                                          "space-filling design.", show_default="a quarter of --evaluations"),
    batch: int = typer.Option(_D["batch"], "--batch", help="Predictor mode: architectures measured per iteration."),
    proposal: str = typer.Option(_D["proposal"], "--proposal", help="Predictor mode: front (score a candidate pool, "
                                 "measure its optimistic predicted front) or inner (run --algorithm on predictions)."),
    features: str = typer.Option(_D["features"], "--features", help="Predictor mode: what the predictors see, the "
                                 "space's structure features or the genome's onehot, either +zc (with every "
                                 "candidate's zero-cost proxies through the supernet; needs --pool 5000 or less), "
                                 "or zc alone."),
    pool: int = typer.Option(_D["pool"], "--pool", help="Predictor mode, --proposal front: score every architecture "
                             "of a space with at most this many, else this many random ones plus the front's "
                             "one-gene mutations."),
    explore: float = typer.Option(_D["explore"], "--explore", help="Predictor mode, --proposal front: predictive stds "
                                  "of optimism (0: the predicted means)."),
    seed: int = typer.Option(_D["seed"], "--seed", help="Seed of the search's proposals. It fixes which architectures are proposed given their "
              "measurements: accuracies are deterministic, so the same seed gives the same front wherever "
              "latency is too (a --latency-table with --no-latency-calibrate); "
              "measured latency varies with timing noise, which can change the front."),
    out: Optional[Path] = typer.Option(None, "--out", help="Output directory. "
                                       "An unfinished search there is resumed.", show_default="RUN_DIR/search"),
    benchmark_table: Optional[Path] = typer.Option(None, "--benchmark-table", help="A CSV benchmark table "
                                                   "(arch_str column + metric columns) used as the truth "
                                                   "instead of a supernet."),
    space: Optional[str] = typer.Option(None, "--space", help="The table's search space (with "
                                        "--benchmark-table).", show_default=DEFAULT_TABLE_SPACE),
    free_metrics: Optional[str] = typer.Option(None, "--free-metrics", help="With --benchmark-table: cost metrics "
                                              "(comma-separated, e.g. latency; not accuracy) the search reads for every "
                                              "architecture without spending an evaluation, as a measured latency table "
                                              "gives them (HW-NAS-Bench's setting); only accuracy is then learned.",
                                              show_default="none"),
    latency_table: Optional[Path] = typer.Option(None, "--latency-table", help="A latency lookup table for "
                                                 "the supernet run's cheap latency estimates."),
    latency_runtime: str = typer.Option(_D["latency_runtime"], "--latency-runtime", help="What runs the subnets whose latency "
                                        "is measured: jax or onnxruntime (the exported ONNX form; a --latency-table "
                                        "must have been profiled in it)."),
    latency_calibrate: bool = typer.Option(True, "--latency-calibrate/--no-latency-calibrate", help="Put every "
                                           "latency at one device speed (kept for a resumed search): with "
                                           "--latency-table, its predictions scaled to this device's speed now; "
                                           "without, each measurement timed beside reference subnets and scaled "
                                           "to the speed at the search's start."),
    devices: Optional[int] = typer.Option(None, "--devices", help="Local devices that measure each subnet's "
                                          "accuracy (BatchNorm recalibration and validation, the batches split "
                                          "over them; the same accuracies on any number).", show_default="all"),
    coordinator: Optional[str] = coordinator_option(),
    num_processes: Optional[int] = num_processes_option("search together (each measures its share of the subnets' accuracies)"),
    process_id: Optional[int] = process_id_option("every file; it runs the search and measures latency"),
    init_timeout: int = init_timeout_option(),
) -> None:
    """Search Pareto-optimal subnets (accuracy vs latency by default) under hard budgets.

    Writes pareto.json (read by `nas export subnet --rank K`), pareto.csv, pareto.png, search_log.jsonl (hypervolume per iteration) and the measurement cache to --out, then prints the front.

    Re-running with the same --out resumes an interrupted search from its last finished iteration.
    """
    from nas_cli.commands._progress import note

    note("preparing the search: loading JAX and the run")
    from nas_cli.distributed import Parallel
    from nas_cli.search import (
        SearchConfig,
        format_bounds,
        format_front,
        latency_warning,
        parse_objectives,
        search_pipeline,
    )
    from nas_cli.search.pipeline import Served

    parallel = Parallel(devices, coordinator, num_processes, process_id, init_timeout)
    # a refused search (a bad budget, another search there) leaves no folder holding only its lock
    with removed_if_refused(run_dir if benchmark_table is not None else None, out or run_dir / "search"):
        objective_spec = parse_objectives(objectives)
        # in a multi-process search only process 0 writes (and creates --out); the others only check it
        prepare_out(out, folder=True, create=not parallel.multi_process)
        budgets = {"latency": latency_budget, "flops": flops_budget, "params": params_budget}
        config = SearchConfig(
            objectives=tuple(m for m, _ in objective_spec),
            budgets={m: text for m, text in budgets.items() if text is not None}, algorithm=algorithm,
            population=population, generations=generations, evaluations=evaluations, predictor=predictor,
            initial=initial, batch=batch, seed=seed, proposal=proposal, features=features, pool=pool, explore=explore,
            latency_runtime=latency_runtime,
        )

        free = tuple(m.strip() for m in (free_metrics or "").split(",") if m.strip())
        with _search_progress(config) as display:
            result = search_pipeline(run_dir, config, objective_spec, out=out, benchmark_table=benchmark_table,
                                     space=space, free_metrics=free, latency_table=latency_table,
                                     latency_calibrate=latency_calibrate, parallel=parallel,
                                     progress=display, log=display.log)
        if isinstance(result, Served):
            typer.echo(f"process {result.process}: measured {result.measured} subnets' accuracies for the search; "
                       f"process 0 wrote it to {result.out_dir}")
            return
        typer.echo(f"\nPareto front ({len(result.front)} subnets; {format_bounds(result.bounds)}):")
        typer.echo(format_front(result.front))
        warning = latency_warning(result.front, result.bounds)
        if warning is not None:
            typer.echo(warning, err=True)
        typer.echo(f"\nwrote {result.out_dir / 'pareto.json'}, pareto.csv, pareto.png, search_log.jsonl")


def _search_progress(config):
    """The display of a search of ``config``: how many iterations and evaluations it plans."""
    import math

    from nas_cli.commands._progress import SearchProgress

    if config.evaluations is None:  # plain: the largest and smallest, then a population per generation
        return SearchProgress(config.generations, 2 + config.population * config.generations, exact=False)
    rest = max(config.evaluations - config.initial_size, 0)
    return SearchProgress(math.ceil(rest / config.batch), config.evaluations, exact=True, initial=True)


def register(app: typer.Typer) -> None:
    app.command("search")(search)
