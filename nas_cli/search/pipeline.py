"""What `nas search` runs: a search whose truth is a training run's supernet or a benchmark table."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

from nas_cli.errors import UserError
from nas_cli.identity import file_sha256
from nas_cli.search.config import SearchConfig
from nas_cli.search.driver import SearchResult, run_search
from nas_cli.table_eval import open_table_evaluator

#: the space of a benchmark table when none is named
DEFAULT_TABLE_SPACE = "nas-bench-201"


def search_pipeline(run_dir: Path, config: SearchConfig, objective_columns: Sequence[tuple[str, str | None]], *,
                    out: Path | None = None, benchmark_table: Path | None = None, space: str | None = None,
                    latency_table: Path | None = None, latency_calibrate: bool = True, devices: int | None = None,
                    progress: Callable[[dict], None] | None = None,
                    log: Callable[[str], None] = print) -> SearchResult:
    """Opens the truth (a training run, or a table), then runs or resumes the search.

    Args:
      run_dir: the training run; with ``benchmark_table`` only the default home of the outputs.
      config: the search (objectives, budgets, strategy, effort, seed).
      objective_columns: (metric, table column or None) per objective; columns only with a table.
      out: the search directory (default ``run_dir/search``).
      benchmark_table: a CSV table used as the truth instead of a supernet.
      space: the table's space (default nas-bench-201); only with a table.
      latency_table: a latency model for the run's cheap latency estimates.
      latency_calibrate: put every latency at one device speed (see nas_cli.run_eval).
      devices: local devices measuring accuracies (None: all); only with a training run.
      progress: called with every log record of the search.
      log: called with a note on how the latency model was scaled.

    Raises:
      UserError: options that do not go together, and whatever opening the truth or the search raises.
    """
    if benchmark_table is not None:
        if devices is not None:
            raise UserError(f"--devices {devices} only applies to a training run (a benchmark table is looked up, "
                            "not measured); drop it")
        evaluator = open_table_evaluator(benchmark_table, space or DEFAULT_TABLE_SPACE, objective_columns,
                                         [b.metric for b in config.budgets])
        source, weights = "benchmark table", {"table": file_sha256(benchmark_table)[:16]}
    else:
        if space is not None:
            raise UserError("--space only applies with --benchmark-table (a run directory knows its space)")
        named = [f"{m}={c}" for m, c in objective_columns if c is not None]
        if named:
            raise UserError(f"objective columns ({', '.join(named)}) only apply with --benchmark-table; "
                            "write the objectives without '=COL'")
    out_dir = out if out is not None else run_dir / "search"
    if benchmark_table is None:
        # imported here: it pulls in JAX and the supernet, which a table search never needs
        from nas_cli.run_eval import open_run_evaluator

        evaluator = open_run_evaluator(run_dir, seed=config.seed, latency_table=latency_table,
                                       calibrate_in=out_dir if latency_calibrate else None,
                                       latency_runtime=config.latency_runtime, devices=devices)
        # what measures, not where it lies: a copied or moved run is the same search
        source, weights = "training run", getattr(evaluator, "weights", None)
        cal = getattr(evaluator, "latency_calibration", None)
        if latency_table is not None and cal is not None:
            log(f"latency model scaled by {cal['scale']:.3f} to this device's speed now" if "why" not in cal
                else f"latency model used as recorded ({cal['why']})")
    return run_search(evaluator, config, out_dir, source=source, weights=weights, progress=progress, log=log)
