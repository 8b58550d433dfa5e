"""Predictor benchmark: tau/rho/RMSE of every model, with and without pretraining, by training-set size.

    python bench/predictors.py DATA.csv --target accuracy [--space NAME] [--sizes 16,32,64,128]
        [--models ridge,rbf,gp,gbt,mlp,auto] [--repeats 3] [--pretrain-samples 2000] [--seed 0]

DATA.csv is any table ``nas predictor fit`` reads (a column ``arch`` of a space's canonical strings,
or generic categorical columns). For each size n and repeat r, a seeded split trains on n rows and
scores the remaining rows. Every model is also run as ``<model>+pretrain``, pretrained on the log
FLOPs/params of ``--pretrain-samples`` random architectures of the space (the MLP ensemble its own
network, the others through the learnt statistics as features), when the table is an arch table of
a space that counts them. Prints one JSON object; figures are means (and std) over repeats.
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

from nas_cli.errors import UserError  # noqa: E402
from predictors import all_metrics, check_predictor_name, get_predictor, predictor_names  # noqa: E402
from predictors.data import ArchEncoder, make_encoder, read_csv, targets  # noqa: E402
from predictors.pretrain import has_stats, random_pretrain_set  # noqa: E402

MIN_TEST_ROWS = 10


def run(
    data,
    target: str,
    space: str | None = None,
    sizes=(16, 32, 64, 128),
    models=None,
    repeats: int = 3,
    pretrain_samples: int = 2000,
    seed: int = 0,
    ignore=(),
    test_rows: int | None = None,
) -> dict:
    """The benchmark as a dict (see the module docstring)."""
    models = list(models or predictor_names())
    for m in models:
        check_predictor_name(m, "model")
    table = read_csv(data)
    encoder = make_encoder(table, target, space=space, ignore=ignore)
    X, y = encoder.transform(table), targets(table, target)
    room = len(y) - (test_rows or MIN_TEST_ROWS)
    usable = [s for s in sizes if s <= room]
    if not usable:
        raise UserError(
            f"{data}: {len(y)} rows leave fewer than {MIN_TEST_ROWS} test rows at every size {list(sizes)}; "
            f"use smaller --sizes"
        )
    pretrain = None
    if pretrain_samples > 0 and isinstance(encoder, ArchEncoder) and has_stats(encoder.space):
        pretrain = random_pretrain_set(encoder.space, pretrain_samples, seed=seed)

    variants = [(m, m, False) for m in models]
    if pretrain is not None:
        variants += [(f"{m}+pretrain", m, True) for m in models]

    results: dict = {label: {} for label, _, _ in variants}
    for size in usable:
        runs: dict = {label: [] for label, _, _ in variants}
        for r in range(repeats):
            order = np.random.default_rng(seed + 1000 * r + size).permutation(len(y))
            if test_rows:  # one fixed held-out set per repeat, training sets drawn from the rest
                test, train = order[:test_rows], order[test_rows : test_rows + size]
            else:
                train, test = order[:size], order[size:]
            for label, model, use_pretrain in variants:
                start = time.perf_counter()
                p = get_predictor(model, seed=seed + r)
                p.fit(X[train], y[train], pretrain=pretrain if use_pretrain else None)
                fit_s = time.perf_counter() - start
                runs[label].append({**all_metrics(y[test], p.predict(X[test])), "fit_s": fit_s})
        for label, rows in runs.items():
            entry = {}
            for key in ("kendall_tau", "spearman", "rmse", "fit_s"):
                values = np.array([row[key] for row in rows])
                entry[key] = round(float(values.mean()), 4)
                if key != "fit_s":
                    entry[f"{key}_std"] = round(float(values.std()), 4)
            entry["n_test"] = test_rows or len(y) - size
            results[label][str(size)] = entry
    return {
        "data": str(data),
        "target": target,
        "encoding": f"arch:{encoder.space_name}" if isinstance(encoder, ArchEncoder) else "table",
        "rows": int(len(y)),
        "features": int(X.shape[1]),
        "sizes": usable,
        "repeats": repeats,
        "seed": seed,
        "pretrain_samples": pretrain_samples if pretrain is not None else 0,
        "results": results,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data")
    parser.add_argument("--target", default="accuracy")
    parser.add_argument("--space", default=None, help="a space name, or the training run the rows come from")
    parser.add_argument("--test-rows", type=int, default=None,
                        help="score every size on the same N held-out rows (default: all rows not trained on)")
    parser.add_argument("--ignore", action="append", default=[])
    parser.add_argument("--sizes", default="16,32,64,128", help="comma-separated training-set sizes")
    parser.add_argument("--models", default=",".join(predictor_names()))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pretrain-samples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        sizes = [int(s) for s in args.sizes.split(",") if s]
        space = args.space
        if space is not None:
            from nas_cli.runs import space_spec

            space = space_spec(space)
        out = run(
            args.data, args.target, space=space, sizes=sizes, models=[m for m in args.models.split(",") if m],
            repeats=args.repeats, pretrain_samples=args.pretrain_samples, seed=args.seed, ignore=args.ignore,
            test_rows=args.test_rows,
        )
    except (UserError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
