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
``--free-metrics latency`` runs the searches as `nas search --free-metrics latency` does: every
cell's latency read from the table at no evaluation, as a measured latency table gives it, so the
300 evaluations are spent on accuracy alone (HW-NAS-Bench's setting).

A ceiling study: ``--oracle accuracy=table`` (or ``latency=table``, or both, comma-separated) hands
the ``front`` search a metric's true values in place of its in-loop predictor, and ``METRIC=oof`` its
5-fold out-of-fold predictions by gradient boosting on the space's features over the whole table
(each cell predicted by a model fitted on the 80% of the table it is not in: ~42x a 300-evaluation
search). Nothing else changes: the search still measures 300 cells and still predicts the other
metric, so the found fraction says how far a better model of that metric could take it.
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
from nas_cli.search import predictor_loop  # noqa: E402
from nas_cli.evaluation.table import TableEvaluator, synthetic_nasbench201_rows, write_table  # noqa: E402
from search_spaces.nasbench201 import NASBench201Space  # noqa: E402

DEV_TABLE = Path(_HERE).parent.parent / "shared" / "data" / "nasbench201" / "nb201_dev.csv"


def _columns(path: Path, text: str | None, word: str) -> list[str]:
    with open(path, newline="", encoding="utf-8") as f:
        header = next(csv.reader(f))
    if text:
        return [c.strip() for c in text.split(",") if c.strip()]
    return [c for c in header if word in c.lower() and c != "arch_str"]


ORACLE_METRICS = ("accuracy", "latency")
ORACLE_SOURCES = ("table", "oof")


def parse_oracle(text: str | None) -> dict[str, str]:
    """``accuracy=table,latency=oof`` -> {metric: source}; a bad entry is a one-line error."""
    out = {}
    for item in filter(None, (t.strip() for t in (text or "").split(","))):
        metric, _, source = item.partition("=")
        if metric not in ORACLE_METRICS or source not in ORACLE_SOURCES:
            raise SystemExit(f"--oracle {item!r}: use METRIC=SOURCE, METRIC one of {', '.join(ORACLE_METRICS)}; "
                             f"SOURCE one of {', '.join(ORACLE_SOURCES)}")
        out[metric] = source
    return out


_OOF: dict[str, np.ndarray] = {}


def oracle_values(space, ev: TableEvaluator, metric: str, column: str, source: str) -> dict[str, float]:
    """A metric of every cell of the table: its true value, or its out-of-fold prediction (computed
    once per table column)."""
    keys = list(ev.table)
    y = np.asarray([ev.table[k][metric] for k in keys], np.float64)
    if source == "table":
        return dict(zip(keys, y))
    if column not in _OOF:
        from sklearn.ensemble import HistGradientBoostingRegressor  # noqa: PLC0415
        from sklearn.model_selection import KFold  # noqa: PLC0415

        X = predictor_loop.encode_archs(space, [space.decode(k) for k in keys], "structure")
        pred = np.zeros(len(y))
        for train, test in KFold(5, shuffle=True, random_state=0).split(X):
            model = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.1, random_state=0)
            pred[test] = model.fit(X[train], y[train]).predict(X[test])
        _OOF[column] = pred
    return dict(zip(keys, _OOF[column]))


def install_oracle(values: dict[str, dict[str, float]]) -> None:
    """Makes the predictor loop's surrogate return ``values`` (metric -> key -> value) for those metrics."""
    base = predictor_loop.Surrogate

    class OracleSurrogate(base):
        def predict(self, archs, X=None, with_std=False, keys=None):
            mean, std = super().predict(archs, X, with_std, keys)
            keys = [self.ctx.space.encode(a) for a in archs] if keys is None else keys
            for m, by_key in values.items():
                mean[m] = np.asarray([by_key[k] for k in keys])
                std[m] = np.zeros(len(keys))
            return mean, std

    predictor_loop.Surrogate = OracleSurrogate


def overhead(log: list[dict]) -> dict:
    """A search's own wall seconds from its log (``seconds`` of every line): by part, summed over the
    iterations, and ``overhead_seconds``, everything but the evaluations."""
    parts: dict[str, float] = {}
    for rec in log:
        for part, sec in rec.get("seconds", {}).items():
            parts[part] = parts.get(part, 0.0) + sec
    return {"overhead_seconds": round(sum(v for k, v in parts.items() if k != "evaluate"), 1),
            "parts_seconds": {k: round(v, 1) for k, v in sorted(parts.items())}}


def record_choices() -> list[dict]:
    """Makes every cross-validated choice of ``auto`` append what it chose, and from what, to the
    returned list (its rows, targets, the chosen candidate and each candidate's mean fold tau and
    out-of-fold seconds)."""
    import predictors.auto as auto  # noqa: PLC0415
    import predictors.cross_validation as cv  # noqa: PLC0415

    out: list[dict] = []
    seconds: dict[str, float] = {}
    real_oof, real_fit = cv.out_of_fold, auto.AutoPredictor._fit

    def timed_oof(name, *a, **kw):
        t = time.perf_counter()
        try:
            return real_oof(name, *a, **kw)
        finally:
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t

    def fit(self, X, y, pretrain):
        seconds.clear()
        t = time.perf_counter()
        real_fit(self, X, y, pretrain)
        if self.config["choice"] is None:
            out.append({"rows": len(y), "targets": self.targets, "chosen": self._choice["name"],
                        "weights": self.scores.get("ensemble", {}).get("weights"),
                        "tau": {c: round(v["kendall_tau"], 4) for c, v in self.scores.items()},
                        "seconds": {**{c: round(v, 2) for c, v in seconds.items()},
                                    "total": round(time.perf_counter() - t, 2)}})

    cv.out_of_fold = timed_oof
    auto.AutoPredictor._fit = fit
    return out


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
    ap.add_argument("--free-metrics", default="",
                    help="comma-separated cost metrics read for every cell at no evaluation (nas search --free-metrics)")
    ap.add_argument("--oracle", help="ceiling study: METRIC=table|oof[,...] for the front search (see above)")
    ap.add_argument("--methods", default="front,random", help="comma-separated, among front, random")
    ap.add_argument("--budget", default="median",
                    help="the latency budget: 'median' (each device's median latency) or a `nas search "
                         "--latency-budget` value such as 50%% (of the largest cell's latency) or 12ms")
    ap.add_argument("--growth", default=None,
                    help="comma-separated RESELECT_GROWTH values, one front search each, side by side (1: the "
                         "model chosen by cross-validation every iteration; default: the product's "
                         f"{predictor_loop.RESELECT_GROWTH:g}); only changes auto and ensemble")
    ap.add_argument("--choices", action="store_true",
                    help="add every cross-validated model choice of auto to each run: rows, targets, the "
                         "chosen candidate, each candidate's mean fold tau and seconds")
    ap.add_argument("--profile", action="store_true",
                    help="add each run's own overhead: the wall seconds of its log's parts (fit, score, track, "
                         "write, ...: everything but evaluate), their sum, and the process's CPU seconds")
    args = ap.parse_args()
    methods_wanted = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods_wanted or set(methods_wanted) - {"front", "random"}:
        raise SystemExit(f"--methods {args.methods!r}: use front, random or both, comma-separated")
    oracle = parse_oracle(args.oracle)
    try:
        growths = ([float(g) for g in args.growth.split(",") if g.strip()] if args.growth
                   else [predictor_loop.RESELECT_GROWTH])
    except ValueError:
        raise SystemExit(f"--growth {args.growth!r}: use numbers, comma-separated (e.g. 2,1,1.5)") from None
    choices = record_choices() if args.choices else None
    free = tuple(m.strip() for m in args.free_metrics.split(",") if m.strip())

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
    plain_surrogate = predictor_loop.Surrogate
    runs, summary = [], {}
    for acc in _columns(table, args.accuracy_columns, "acc"):
        for lat in _columns(table, args.latency_columns, "lat"):
            ev = TableEvaluator(space, table, {"accuracy": acc, "latency": lat}, free=free)
            budget_ms = float(np.median([v["latency"] for v in ev.table.values()]))
            budget_text = repr(budget_ms) if args.budget == "median" else args.budget
            if args.budget != "median":
                parse_budget("latency", budget_text)  # a bad value stops here, with its one-line error
            predictor_loop.Surrogate = plain_surrogate
            if oracle:
                install_oracle({m: oracle_values(space, ev, m, {"accuracy": acc, "latency": lat}[m], src)
                                for m, src in oracle.items()})
            budget = (parse_budget("latency", budget_text),)
            front = dict(evaluations=E, initial=args.initial, batch=args.batch, predictor=args.predictor,
                         proposal="front", explore=args.explore, features=args.features)
            methods = {
                **{("front" if len(growths) == 1 else f"front@growth{g:g}"): {**front, "_growth": g} for g in growths},
                # the largest and smallest cells are always measured first: 2 + population x 1 = E
                "random": dict(algorithm="random", population=E - 2, generations=1),
            }
            for name, kw in methods.items():
                if name.partition("@")[0] not in methods_wanted:
                    continue
                kw = dict(kw)
                predictor_loop.RESELECT_GROWTH = kw.pop("_growth", growths[0])
                for seed in range(args.seeds):
                    t0, c0 = time.perf_counter(), time.process_time()
                    if choices is not None:
                        choices.clear()
                    res = run_search(ev, SearchConfig(budgets=budget, seed=seed, **kw),
                                     work / f"{acc}-{lat}-{name}-{seed}")
                    last = [r for r in res.log if r["n_evaluations"] <= E][-1]
                    runs.append({"accuracy": acc, "latency": lat, "method": name, "seed": seed,
                                 "evaluations": last["n_evaluations"],
                                 "hv_ratio": round(last["true_hypervolume_ratio"], 4),
                                 "front_found": round(last["true_front_found"], 4),
                                 "true_front_size": last["true_front_size"],
                                 "seconds": round(time.perf_counter() - t0, 1),
                                 # the trajectory, for a side by side of where two schedules part
                                 "found_by_n": {r["n_evaluations"]: round(r["true_front_found"], 3) for r in res.log},
                                 "hv_by_n": {r["n_evaluations"]: round(r["true_hypervolume_ratio"], 4) for r in res.log}})
                    if choices is not None:
                        runs[-1]["choices"] = list(choices)
                    if args.profile:
                        runs[-1].update(overhead(res.log), cpu_seconds=round(time.process_time() - c0, 1))
                    print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
                mine = [r for r in runs if (r["accuracy"], r["latency"], r["method"]) == (acc, lat, name)]
                summary.setdefault(f"{acc} vs {lat} (budget {budget_ms:.4g} ms)", {})[name] = {
                    "hv_ratio_mean": round(float(np.mean([r["hv_ratio"] for r in mine])), 4),
                    "hv_ratio_min": min(r["hv_ratio"] for r in mine),
                    "front_found_mean": round(float(np.mean([r["front_found"] for r in mine])), 4),
                    "front_found_min": min(r["front_found"] for r in mine),
                    "true_front_size": mine[0]["true_front_size"],
                    "seconds_per_seed": round(float(np.mean([r["seconds"] for r in mine])), 1),
                    **({"overhead_seconds_per_seed": round(float(np.mean([r["overhead_seconds"] for r in mine])), 1),
                        "cpu_seconds_per_seed": round(float(np.mean([r["cpu_seconds"] for r in mine])), 1)}
                       if args.profile else {})}
    print(json.dumps({
        "table": "synthetic nas-bench-201-like (seed 0)" if args.synthetic else str(table),
        "evaluations": E, "seeds": args.seeds, "predictor": args.predictor, "initial": args.initial,
        "batch": args.batch, "budget": args.budget, "growth": growths, "explore": args.explore, "methods": methods_wanted, "features": args.features, "oracle": oracle, "free_metrics": list(free),
        "summary": summary,
        "targets_met": {f"{k} {name}": r["hv_ratio_min"] >= 0.99 and r["front_found_min"] >= 0.5
                        for k, v in summary.items() for name, r in v.items() if name.startswith("front")},
        "runs": runs,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
