"""Predictor benchmark: Kendall tau of every model by training-set size, beside scikit-learn baselines.

    python bench/predictors.py                                   # the development table (issue 18)
    python bench/predictors.py --table ../shared/data/nasbench201/nb201_dev.csv [--target COL ...]
    python bench/predictors.py DATA.csv [--target accuracy] [--space NAME] [--sizes 50,100,200,500]
        [--models ridge,...,auto] [--repeats 3] [--test-rows 2000] [--features structure|onehot]
        [--pretrain-samples 2000] [--score-candidates 100000] [--no-baselines] [--seed 0]

DATA.csv is any table ``nas predictor fit`` reads (a column ``arch``/``arch_str`` of a space's
canonical strings, or generic categorical columns). ``--table`` is the same for a table that may be
absent: without it the benchmark says so and exits 0 (the development table lives outside the
repository, in ../shared). With neither, it is the development table, 2,000 held-out rows.

For every target (``--target``, repeatable; default every column whose name has ``acc`` in it), size
n and repeat r, a seeded split trains on n rows and scores the held-out ones (``--test-rows`` fixed
rows per repeat, or every row not trained on). Our models see ``--features`` (the space's structure
features by default); the baselines, scikit-learn RandomForest (300 trees, max_features 0.5) and
GradientBoosting (300 rounds, lr 0.05, depth 3, subsample 0.8), see the genome's one-hot, as a user
without this project would fit them. Each model is also run as ``<model>+pretrain`` on spaces that
count FLOPs/params. Then ``--score-model`` (auto), fitted on 200 rows, scores ``--score-candidates``
random architectures of the space: the time to build their features and to predict them is
reported. Prints one JSON object; figures are means (and std) over repeats.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# This file is named like the package it benchmarks: keep its own folder off the import path.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from nas_cli.errors import UserError  # noqa: E402
from predictors import all_metrics, check_predictor_name, get_predictor, predictor_names  # noqa: E402
from predictors.data import ArchEncoder, arch_column, make_encoder, read_csv, targets  # noqa: E402
from predictors.pretrain import has_stats, random_pretrain_set  # noqa: E402

MIN_TEST_ROWS = 10
#: the development table of issue 18, beside the repository (../shared is not part of it)
DEV_TABLE = _HERE.parent.parent / "shared" / "data" / "nasbench201" / "nb201_dev.csv"
DEV_TEST_ROWS = 2000
#: the baselines: what a user would fit with scikit-learn on one-hot features
BASELINES = {
    "sklearn_rf(onehot)": lambda seed: RandomForestRegressor(n_estimators=300, max_features=0.5, random_state=seed),
    "sklearn_gb(onehot)": lambda seed: GradientBoostingRegressor(
        n_estimators=300, learning_rate=0.05, max_depth=3, subsample=0.8, random_state=seed
    ),
}
METRICS = ("kendall_tau", "spearman", "rmse", "fit_s")


def accuracy_columns(table, ignore=()) -> list[str]:
    """The columns a benchmark of accuracy predictors targets by default: names with ``acc`` in them."""
    skip = set(ignore) | {c for c in (arch_column(table, "", ignore),) if c}
    found = [c for c in table.header if "acc" in c.lower() and c not in skip]
    if not found:
        raise UserError(f"{table.path}: no column name has 'acc' in it ({', '.join(table.header)}); pass --target")
    return found


def _split(n_rows: int, size: int, repeat: int, seed: int, test_rows: int | None):
    order = np.random.default_rng(seed + 1000 * repeat + size).permutation(n_rows)
    if test_rows:  # one fixed held-out set per repeat, training sets drawn from the rest
        return order[test_rows : test_rows + size], order[:test_rows]
    return order[:size], order[size:]


def _mean_entry(rows: list[dict], n_test: int) -> dict:
    entry = {}
    for key in METRICS:
        values = np.array([row[key] for row in rows])
        entry[key] = round(float(values.mean()), 4)
        if key != "fit_s":
            entry[f"{key}_std"] = round(float(values.std()), 4)
    entry["n_test"] = n_test
    if "chosen" in rows[0]:
        entry["chosen"] = [row["chosen"] for row in rows]
    return entry


def _fit_ours(model, X, y, train, test, seed, pretrain) -> dict:
    start = time.perf_counter()
    p = get_predictor(model, seed=seed).fit(X[train], y[train], pretrain=pretrain)
    row = {**all_metrics(y[test], p.predict(X[test])), "fit_s": time.perf_counter() - start}
    if getattr(p, "chosen", None) is not None:
        row["chosen"] = p.chosen.name
    return row


def _fit_baseline(make, X, y, train, test, seed) -> dict:
    start = time.perf_counter()
    with threadpool_limits(limits=1):
        pred = make(seed).fit(X[train], y[train]).predict(X[test])
    return {**all_metrics(y[test], pred), "fit_s": time.perf_counter() - start}


def _summary(by_label: dict, baselines: list[str], sizes: list[int], tau_size: int = 200) -> dict:
    """Per model: tau at ``tau_size`` and whether it beats every baseline at every size."""
    out = {}
    for label, by_size in by_label.items():
        if label in baselines:
            continue
        margins = {
            str(s): round(by_size[str(s)]["kendall_tau"] - max(by_label[b][str(s)]["kendall_tau"] for b in baselines), 4)
            for s in sizes
        } if baselines else {}
        out[label] = {
            f"tau_at_{tau_size}": by_size.get(str(tau_size), {}).get("kendall_tau"),
            "margin_over_best_baseline": margins,
            "above_baselines_at_every_size": bool(margins) and all(m > 0 for m in margins.values()),
        }
    return out


def score_candidates(encoder, X, y, model: str, n: int, fit_rows: int, seed: int) -> dict:
    """Fits ``model`` on ``fit_rows`` rows, then times features and predictions of ``n`` candidates
    (random architectures of the space; for a generic table, rows drawn from the table)."""
    train = np.random.default_rng(seed).permutation(len(y))[:fit_rows]
    p = get_predictor(model, seed=seed).fit(X[train], y[train])
    rng = np.random.default_rng(seed + 1)
    start = time.perf_counter()
    if isinstance(encoder, ArchEncoder):
        candidates = np.stack([encoder.encode(encoder.space.sample(rng)) for _ in range(n)])
    else:
        candidates = X[rng.integers(0, len(X), n)]
    features_s = time.perf_counter() - start
    start = time.perf_counter()
    pred = p.predict(candidates)
    predict_s = time.perf_counter() - start
    assert pred.shape == (n,) and np.all(np.isfinite(pred))
    out = {"model": model, "fit_rows": int(len(train)), "candidates": n,
           "features_s": round(features_s, 3), "predict_s": round(predict_s, 3)}
    if getattr(p, "chosen", None) is not None:
        out["chosen"] = p.chosen.name
    return out


def run(
    data,
    target: str | list[str] | None = "accuracy",
    space: str | None = None,
    sizes=(50, 100, 200, 500),
    models=None,
    repeats: int = 3,
    pretrain_samples: int = 2000,
    seed: int = 0,
    ignore=(),
    test_rows: int | None = None,
    features: str = "structure",
    baselines: bool = True,
    score: int = 0,
    score_model: str = "auto",
    score_rows: int = 200,
) -> dict:
    """The benchmark as a dict (see the module docstring); ``target=None`` means every accuracy column."""
    models = list(models or predictor_names())
    for m in models + ([score_model] if score else []):
        check_predictor_name(m, "model")
    table = read_csv(data)
    target_list = accuracy_columns(table, ignore) if target is None else (
        [target] if isinstance(target, str) else list(target))
    encoder = make_encoder(table, target_list[0], space=space, ignore=ignore, features=features)
    X = encoder.transform(table)
    onehot = X
    if isinstance(encoder, ArchEncoder) and encoder.features != "onehot":
        onehot = ArchEncoder(encoder.space_name, encoder.options, features="onehot", column=encoder.column).transform(table)
    room = len(X) - (test_rows or MIN_TEST_ROWS)
    usable = [s for s in sizes if s <= room]
    if not usable:
        raise UserError(
            f"{data}: {len(X)} rows leave fewer than {test_rows or MIN_TEST_ROWS} test rows at every size "
            f"{list(sizes)}; use smaller --sizes"
        )
    pretrain = None
    if pretrain_samples > 0 and isinstance(encoder, ArchEncoder) and has_stats(encoder.space):
        pretrain = random_pretrain_set(encoder.space, pretrain_samples, seed=seed)
    variants = [(m, m, False) for m in models]
    if pretrain is not None:
        variants += [(f"{m}+pretrain", m, True) for m in models]
    baseline_names = list(BASELINES) if baselines else []

    results, summary = {}, {}
    for name in target_list:
        y = targets(table, name)
        by_label: dict = {label: {} for label in baseline_names + [v[0] for v in variants]}
        for size in usable:
            runs: dict = {label: [] for label in by_label}
            for r in range(repeats):
                train, test = _split(len(y), size, r, seed, test_rows)
                for label in baseline_names:
                    runs[label].append(_fit_baseline(BASELINES[label], onehot, y, train, test, seed + r))
                for label, model, use_pretrain in variants:
                    runs[label].append(_fit_ours(model, X, y, train, test, seed + r, pretrain if use_pretrain else None))
            for label, rows in runs.items():
                by_label[label][str(size)] = _mean_entry(rows, test_rows or len(y) - size)
        results[name] = by_label
        summary[name] = _summary(by_label, baseline_names, usable)
    out = {
        "data": str(data),
        "targets": target_list,
        "encoding": f"arch:{encoder.space_name}" if isinstance(encoder, ArchEncoder) else "table",
        "features": encoder.features if isinstance(encoder, ArchEncoder) else "table",
        "n_features": int(X.shape[1]),
        "baseline_features": "onehot" if isinstance(encoder, ArchEncoder) else "table",
        "rows": int(len(X)),
        "sizes": usable,
        "repeats": repeats,
        "test_rows": test_rows,
        "seed": seed,
        "pretrain_samples": pretrain_samples if pretrain is not None else 0,
        "results": results,
        "summary": summary,
    }
    if score:
        y = targets(table, target_list[0])
        out["scoring"] = {"target": target_list[0], **score_candidates(
            encoder, X, y, score_model, score, min(score_rows, len(y)), seed)}
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data", nargs="?", default=None)
    parser.add_argument("--table", default=None, help="a table that may be absent (then: a message and exit 0)")
    parser.add_argument("--target", action="append", default=None,
                        help="column to predict (repeatable); default: every column with 'acc' in its name")
    parser.add_argument("--space", default=None, help="a space name, or the training run the rows come from")
    parser.add_argument("--test-rows", type=int, default=None,
                        help="score every size on the same N held-out rows (default: all rows not trained on; "
                        f"{DEV_TEST_ROWS} on the development table)")
    parser.add_argument("--ignore", action="append", default=[])
    parser.add_argument("--sizes", default="50,100,200,500", help="comma-separated training-set sizes")
    parser.add_argument("--models", default=",".join(predictor_names()))
    parser.add_argument("--features", default="structure", help="structure or onehot (our models; arch tables)")
    parser.add_argument("--no-baselines", action="store_true", help="leave out the scikit-learn baselines")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pretrain-samples", type=int, default=2000)
    parser.add_argument("--score-candidates", type=int, default=100_000,
                        help="time scoring this many candidates with --score-model (0: skip)")
    parser.add_argument("--score-model", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    data, test_rows = args.data, args.test_rows
    if data is None:
        table = Path(args.table) if args.table else DEV_TABLE
        if not table.is_file():
            print(f"skipped: the development table {table} is absent (it lives in ../shared, outside the "
                  "repository); pass a CSV to benchmark on", file=sys.stderr)
            return 0
        data = str(table)
        test_rows = DEV_TEST_ROWS if test_rows is None else test_rows
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        space = args.space
        if space is not None:
            from nas_cli.runs import space_spec

            space = space_spec(space)
        out = run(
            data, args.target, space=space, sizes=sizes, models=[m for m in args.models.split(",") if m],
            repeats=args.repeats, pretrain_samples=args.pretrain_samples, seed=args.seed, ignore=args.ignore,
            test_rows=test_rows, features=args.features, baselines=not args.no_baselines,
            score=args.score_candidates, score_model=args.score_model,
        )
    except (UserError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
