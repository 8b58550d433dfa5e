"""Benchmark of the predictor-in-the-loop search on a tabular benchmark: how much of the true front
300 evaluations find, beside random search in the same run.

For every accuracy column x latency column of the table (default: the NAS-Bench-201 development
table in ../shared, skipped cleanly when absent; --synthetic for a generated one) and every seed,
with the latency budget at that device's median latency, it runs
  front  - predictor mode, --proposal front (the predictors score every cell; the optimistic
           predicted front, ranked against what is measured, is measured next),
  random - uniform random sampling of the same number of evaluations,
and reports the measured front's hypervolume as a fraction of the true feasible front's (from the
whole table) and the fraction of the true front's members found. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != _HERE]
sys.path.insert(0, os.path.dirname(_HERE))

import numpy as np  # noqa: E402

from nas_cli.search import SearchConfig, parse_budget, run_search  # noqa: E402
from nas_cli.table_eval import TableEvaluator, synthetic_nasbench201_rows, write_table  # noqa: E402
from search_spaces.nasbench201 import NASBench201Space  # noqa: E402

DEV_TABLE = Path(_HERE).parent.parent / "shared" / "data" / "nasbench201" / "nb201_dev.csv"


def _columns(path: Path, text: str | None, word: str) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    if text:
        return [c.strip() for c in text.split(",") if c.strip()]
    return [c for c in header if word in c.lower() and c != "arch_str"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", type=Path, help=f"CSV benchmark table (default {DEV_TABLE})")
    ap.add_argument("--synthetic", action="store_true", help="a generated NAS-Bench-201-like table instead")
    ap.add_argument("--accuracy-columns", help="comma-separated (default: every column naming 'acc')")
    ap.add_argument("--latency-columns", help="comma-separated (default: every column naming 'lat')")
    ap.add_argument("--evaluations", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--predictor", default="gp")
    ap.add_argument("--initial", type=int, default=50)
    ap.add_argument("--batch", type=int, default=20)
    ap.add_argument("--explore", type=float, default=0.0)
    ap.add_argument("--features", default="structure")
    args = ap.parse_args()

    space = NASBench201Space()
    work = Path(tempfile.mkdtemp(prefix="bench_search_"))
    if args.synthetic:
        table = work / "synthetic_nb201.csv"
        write_table(table, synthetic_nasbench201_rows(seed=0))
    else:
        table = args.table or DEV_TABLE
        if not table.is_file():
            print(f"skipped: the development table {table} is absent (it lives in ../shared, outside the "
                  "repository); pass --table or --synthetic", file=sys.stderr)
            print(json.dumps({"skipped": str(table)}))
            return 0
    E = args.evaluations
    runs, summary = [], {}
    for acc in _columns(table, args.accuracy_columns, "acc"):
        for lat in _columns(table, args.latency_columns, "lat"):
            ev = TableEvaluator(space, table, {"accuracy": acc, "latency": lat})
            budget_ms = float(np.median([v["latency"] for v in ev.table.values()]))
            budget = (parse_budget("latency", repr(budget_ms)),)
            methods = {
                "front": dict(evaluations=E, initial=args.initial, batch=args.batch, predictor=args.predictor,
                              proposal="front", explore=args.explore, features=args.features),
                # the largest and smallest cells are always measured first: 2 + population x 1 = E
                "random": dict(algorithm="random", population=E - 2, generations=1),
            }
            for name, kw in methods.items():
                for seed in range(args.seeds):
                    t0 = time.perf_counter()
                    res = run_search(ev, SearchConfig(budgets=budget, seed=seed, **kw),
                                     work / f"{acc}-{lat}-{name}-{seed}")
                    last = [r for r in res.log if r["n_evaluations"] <= E][-1]
                    runs.append({"accuracy": acc, "latency": lat, "method": name, "seed": seed,
                                 "evaluations": last["n_evaluations"],
                                 "hv_ratio": round(last["true_hypervolume_ratio"], 4),
                                 "front_found": round(last["true_front_found"], 4),
                                 "true_front_size": last["true_front_size"],
                                 "seconds": round(time.perf_counter() - t0, 1)})
                    print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
                mine = [r for r in runs if (r["accuracy"], r["latency"], r["method"]) == (acc, lat, name)]
                summary.setdefault(f"{acc} vs {lat} (budget {budget_ms:.4g} ms)", {})[name] = {
                    "hv_ratio_mean": round(float(np.mean([r["hv_ratio"] for r in mine])), 4),
                    "hv_ratio_min": min(r["hv_ratio"] for r in mine),
                    "front_found_mean": round(float(np.mean([r["front_found"] for r in mine])), 4),
                    "front_found_min": min(r["front_found"] for r in mine),
                    "true_front_size": mine[0]["true_front_size"],
                    "seconds_per_seed": round(float(np.mean([r["seconds"] for r in mine])), 1)}
    print(json.dumps({
        "table": "synthetic nas-bench-201-like (seed 0)" if args.synthetic else str(table),
        "evaluations": E, "seeds": args.seeds, "predictor": args.predictor, "initial": args.initial,
        "batch": args.batch, "explore": args.explore, "features": args.features, "summary": summary,
        "targets_met": {k: v["front"]["hv_ratio_min"] >= 0.99 and v["front"]["front_found_min"] >= 0.5
                        for k, v in summary.items()},
        "runs": runs,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
