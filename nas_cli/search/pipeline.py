"""What `nas search` runs: a search whose truth is a training run's supernet or a benchmark table."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

from nas_cli.distributed import Parallel
from nas_cli.errors import UserError
from nas_cli.runs.identity import describe as describe_weights
from nas_cli.runs.identity import file_sha256
from nas_cli.search.config import SearchConfig
from nas_cli.search.driver import SearchResult, run_search
from nas_cli.evaluation.table import open_table_evaluator

#: the space of a benchmark table when none is named
DEFAULT_TABLE_SPACE = "nas-bench-201"


@dataclasses.dataclass
class Served:
    """What a process other than 0 of a multi-process search did: measured ``measured`` subnets'
    accuracies for process 0, which wrote the search to ``out_dir``."""

    process: int
    measured: int
    out_dir: Path


def search_settings(run_dir: Path, config: SearchConfig, out_dir: Path, latency_table: Path | None,
                    latency_calibrate: bool, parallel: Parallel) -> dict:
    """What every process of one multi-process search must be started with alike."""
    return {**config.to_json(), "run": str(Path(run_dir).absolute()), "out": str(Path(out_dir).absolute()),
            "latency_table": None if latency_table is None else str(Path(latency_table).absolute()),
            "latency_calibrate": latency_calibrate, "devices": parallel.devices}


def search_pipeline(run_dir: Path, config: SearchConfig, objective_columns: Sequence[tuple[str, str | None]], *,
                    out: Path | None = None, benchmark_table: Path | None = None, space: str | None = None,
                    latency_table: Path | None = None, latency_calibrate: bool = True,
                    free_metrics: Sequence[str] = (), parallel: Parallel | None = None, progress: Callable[[dict], None] | None = None,
                    log: Callable[[str], None] = print) -> SearchResult | Served:
    """Opens the truth (a training run, or a table), then runs or resumes the search.

    Args:
      run_dir: the training run; with ``benchmark_table`` only the default home of the outputs.
      config: the search (objectives, budgets, strategy, effort, seed).
      objective_columns: (metric, table column or None) per objective; columns only with a table.
      out: the search directory (default ``run_dir/search``).
      benchmark_table: a CSV table used as the truth instead of a supernet.
      space: the table's space (default nas-bench-201); only with a table.
      latency_table: a latency model for the run's cheap latency estimates.
      latency_calibrate: put every latency at one device speed (see nas_cli.evaluation.supernet).
      free_metrics: cost metrics of the table read for every architecture at no evaluation; only
        with a table.
      parallel: the devices measuring accuracies (default: every local one) and, for a multi-host
        search, the processes (see :func:`search_together`); only with a training run.
      progress: called with every log record of the search.
      log: called with a note on how the latency model was scaled.

    Returns:
      The search's result; on a process other than 0 of a multi-process search, what it served.

    Raises:
      UserError: options that do not go together, and whatever opening the truth or the search raises.
    """
    parallel = parallel or Parallel()
    if benchmark_table is not None:
        if parallel.devices is not None:
            raise UserError(f"--devices {parallel.devices} only applies to a training run (a benchmark table is "
                            "looked up, not measured); drop it")
        if parallel.multi_process:
            raise UserError("--coordinator, --num-processes and --process-id only apply to a training run (a "
                            "benchmark table is looked up, not measured); run one process without them")
        # the predictors' programs (mlp, in auto's candidates) then compile once per machine, not per search
        from nas_cli.runs.xla_cache import enable_compilation_cache

        enable_compilation_cache()
        evaluator = open_table_evaluator(benchmark_table, space or DEFAULT_TABLE_SPACE, objective_columns,
                                         [b.metric for b in config.budgets], free_metrics)
        source, weights = "benchmark table", {"table": file_sha256(benchmark_table)[:16]}
        if evaluator.free:  # what the search knows for free is part of what it is (a resume must agree)
            source += f", {', '.join(evaluator.free)} read for every architecture"
    else:
        if space is not None:
            raise UserError("--space only applies with --benchmark-table (a run directory knows its space)")
        if free_metrics:
            raise UserError(f"--free-metrics {','.join(free_metrics)} only applies with --benchmark-table (a "
                            "training run's free latency is a --latency-table)")
        named = [f"{m}={c}" for m, c in objective_columns if c is not None]
        if named:
            raise UserError(f"objective columns ({', '.join(named)}) only apply with --benchmark-table; "
                            "write the objectives without '=COL'")
    out_dir = out if out is not None else run_dir / "search"
    if benchmark_table is None:
        if parallel.multi_process:
            return search_together(run_dir, config, out_dir, latency_table=latency_table,
                                   latency_calibrate=latency_calibrate, parallel=parallel, progress=progress, log=log)
        # imported here: it pulls in JAX and the supernet, which a table search never needs
        from nas_cli.evaluation.supernet import open_run_evaluator

        evaluator = open_run_evaluator(run_dir, seed=config.seed, latency_table=latency_table,
                                       calibrate_in=out_dir if latency_calibrate else None,
                                       latency_runtime=config.latency_runtime, devices=parallel.devices)
        _log_calibration(evaluator, latency_table, log)
        # what measures, not where it lies: a copied or moved run is the same search
        source, weights = "training run", evaluator.weights
    return run_search(evaluator, config, out_dir, source=source, weights=weights, progress=progress, log=log)


def _log_calibration(evaluator, latency_table: Path | None, log: Callable[[str], None]) -> None:
    cal = evaluator.latency_calibration
    if latency_table is not None and cal is not None:
        log(f"latency model scaled by {cal['scale']:.3f} to this device's speed now" if "why" not in cal
            else f"latency model used as recorded ({cal['why']})")
    from nas_cli.evaluation import latency_record  # noqa: PLC0415

    record = latency_record(evaluator) if latency_table is not None else None
    if record is not None and record.get("overhead_dominated"):
        log(f"warning: the latency table {latency_table} is overhead-dominated (its pieces, timed alone, measure "
            "mostly the cost of a call): its estimates barely differ between subnets, so the front's latencies "
            "cannot rank them; search without --latency-table to measure end to end, or use `nas latency fit`")


def search_together(run_dir: Path, config: SearchConfig, out_dir: Path, *, latency_table: Path | None,
                    latency_calibrate: bool, parallel: Parallel, progress: Callable[[dict], None] | None = None,
                    log: Callable[[str], None] = print) -> SearchResult | Served:
    """A search of a training run by several processes (see nas_cli.evaluation.spread): process 0 runs the
    search, measures every latency and writes every file; each batch of new subnets' accuracies is
    measured over all processes, one subnet per process. The result is one process's.

    Every process is started with the same flags; they meet first as a training run's do
    (nas_cli.distributed.initialize, one-line errors), then open the run, each with the same weights.

    Raises:
      DistributedError: processes that cannot meet, were not started alike, or read other weights;
        on a process other than 0, any failure of process 0 (its message).
    """
    from nas_cli import distributed as dist
    from nas_cli.evaluation.supernet import open_run_evaluator
    from nas_cli.evaluation.spread import SpreadEvaluator, SpreadMeasurer

    settings = search_settings(run_dir, config, out_dir, latency_table, latency_calibrate, parallel)
    dist.initialize(parallel, settings)  # before anything starts JAX's runtime
    dist.check_same_settings(settings)  # where a cluster's environment gave the process ids
    main = dist.is_main()
    # only process 0 models or times latency, and only it keeps the latency calibration in out_dir
    evaluator = dist.on_every_process(lambda: open_run_evaluator(
        run_dir, seed=config.seed, latency_table=latency_table if main else None,
        calibrate_in=out_dir if latency_calibrate and main else None, latency_runtime=config.latency_runtime,
        devices=parallel.devices), "to open the run")
    seen = dist.gather_json(evaluator.weights)
    for p, w in enumerate(seen[1:], start=1):
        if w != seen[0]:
            raise dist.DistributedError(
                f"process {p} read {describe_weights(w)} from {run_dir}, process 0 {describe_weights(seen[0])}; "
                "every process must see the same run folder (a shared file system)")
    spread = SpreadMeasurer(lambda key: evaluator.measure_accuracy(evaluator.space.decode(key)))
    if not main:
        return Served(dist.process_index(), spread.serve(), Path(out_dir))
    try:
        _log_calibration(evaluator, latency_table, log)
        result = run_search(SpreadEvaluator(evaluator, spread), config, out_dir, source="training run", weights=evaluator.weights,
                            progress=progress, log=log)
    except BaseException as e:
        try:
            spread.stop(dist.describe(e))
        except Exception:  # noqa: BLE001 - a partner already gone: the runtime ends it; e is the error to show
            pass
        raise
    spread.stop()
    return result
