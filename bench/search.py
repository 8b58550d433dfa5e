"""Benchmark of search strategies on a tabular benchmark: hypervolume vs number of true evaluations.

Compares, over several seeds and the same latency budget,
  nsga2+predictor - predictor-in-the-loop NSGA-II (--evaluations E),
  nsga2           - plain NSGA-II, population x generations ~ E evaluations,
  random          - uniform random sampling, same number of evaluations,
and reports each curve as a fraction of the true feasible front's hypervolume (computed from the
whole table). Default table: a synthetic NAS-Bench-201-like one over all 15625 cells, generated
deterministically (nas_cli.table_eval.synthetic_nasbench201_rows); or --table FILE.csv with
arch_str, accuracy and latency columns. Prints one JSON object and writes a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import numpy as np  # noqa: E402

from nas_cli.search import SearchConfig, parse_budget, run_search  # noqa: E402
from nas_cli.search.tracking import feasible_front  # noqa: E402
from nas_cli.table_eval import TableEvaluator, synthetic_nasbench201_rows, write_table  # noqa: E402
from search_spaces.nasbench201 import NASBench201Space  # noqa: E402


def _curve(log: list[dict], grid: np.ndarray, true_hv: float) -> np.ndarray:
    """HV fraction reached after n evaluations, as a step function sampled on ``grid``."""
    n = np.asarray([r["n_evaluations"] for r in log])
    hv = np.asarray([r["hypervolume"] for r in log]) / true_hv
    idx = np.searchsorted(n, grid, side="right") - 1
    return np.where(idx >= 0, hv[np.maximum(idx, 0)], np.nan)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, help="CSV benchmark table (default: synthetic NAS-Bench-201-like)")
    ap.add_argument("--evaluations", type=int, default=400)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--budget", default="60%", help="latency budget")
    ap.add_argument("--predictor", default="ridge")
    ap.add_argument("--population", type=int, default=20)
    ap.add_argument("--initial", type=int, default=100)
    ap.add_argument("--batch", type=int, default=25)
    ap.add_argument("--png", type=Path, default=Path("runs") / "bench" / "search_hv.png")
    args = ap.parse_args()
    # grid points before a method's first log line are NaN; nan-means over them are expected
    warnings.filterwarnings("ignore", category=RuntimeWarning, message="(Mean of empty slice|All-NaN slice)")

    space = NASBench201Space()
    work = Path(tempfile.mkdtemp(prefix="bench_search_"))
    table = args.table
    if table is None:
        table = work / "synthetic_nb201.csv"
        write_table(table, synthetic_nasbench201_rows(seed=0))
    ev = TableEvaluator(space, table, {"accuracy": "accuracy", "latency": "latency"})
    E = args.evaluations
    budget = (parse_budget("latency", args.budget),)
    gens = max(1, round((E - 2) / args.population))
    methods = {
        "nsga2+predictor": dict(algorithm="nsga2", evaluations=E, initial=args.initial, batch=args.batch,
                                predictor=args.predictor, population=40, generations=20),
        "nsga2": dict(algorithm="nsga2", population=args.population, generations=gens),
        "random": dict(algorithm="random", population=args.population, generations=gens),
    }
    grid = np.arange(25, E + 1, 25)
    results, true_hv, bounds = {}, None, None
    for name, kw in methods.items():
        curves, finals, to98, secs = [], [], [], []
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            res = run_search(ev, SearchConfig(budgets=budget, seed=seed, **kw), work / f"{name}-{seed}")
            secs.append(time.perf_counter() - t0)
            if true_hv is None:
                keys = list(ev.table)
                bounds = res.bounds
                _, true_hv = feasible_front(keys, [ev.table[k] for k in keys], res.normaliser, res.bounds)
            c = _curve(res.log, grid, true_hv)
            curves.append(c)
            at_e = [r for r in res.log if r["n_evaluations"] <= E]
            finals.append(at_e[-1]["hypervolume"] / true_hv)
            hit = [r["n_evaluations"] for r in res.log if r["hypervolume"] >= 0.98 * true_hv]
            to98.append(hit[0] if hit else None)
        results[name] = {
            "final_hv_fraction_mean": round(float(np.mean(finals)), 4),
            "final_hv_fraction_per_seed": [round(f, 4) for f in finals],
            "evaluations_to_98pct": to98,
            "seconds_per_seed": round(float(np.mean(secs)), 2),
            "curve": [[int(g), None if np.isnan(v) else round(float(v), 4)]
                      for g, v in zip(grid, np.nanmean(np.stack(curves), 0))],
            "_curves": curves,
        }

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for name, r in results.items():
        C = np.stack(r.pop("_curves"))
        mean = np.nanmean(C, 0)
        ax.plot(grid, mean, label=name)
        ax.fill_between(grid, np.nanmin(C, 0), np.nanmax(C, 0), alpha=0.2)
    ax.axhline(0.98, c="0.5", ls=":", label="98% of true front")
    ax.set_xlabel("true evaluations (table look-ups)")
    ax.set_ylabel("hypervolume / true front's")
    ax.set_title(f"{len(ev.table)} archs, latency <= {bounds['latency']:.3g} ms, {args.seeds} seeds")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    args.png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.png)

    print(json.dumps({
        "table": str(args.table) if args.table else "synthetic nas-bench-201-like (seed 0)",
        "n_archs": len(ev.table), "latency_budget_ms": round(bounds["latency"], 4),
        "true_front_hypervolume": round(true_hv, 4), "evaluations": E, "seeds": args.seeds,
        "predictor": args.predictor, "methods": results, "png": str(args.png),
    }))


if __name__ == "__main__":
    main()
