"""Zero-cost proxies as predictor features on measured subnets (issue 18): Kendall tau on held-out
subnets for one-hot, structure, structure+zc and zc features, and each proxy's own tau.

    python bench/fashion_mnist/zero_cost.py SAMPLE.csv --space RUN [--test-rows 100] [--sizes 100,200,300]
        [--repeats 3] [--models ridge,gp,auto] [--seed 0]

SAMPLE.csv is what ``nas predictor sample RUN --zero-cost`` writes (arch, accuracy, flops, params,
zc_*). For each repeat r, a seeded split holds out ``--test-rows`` subnets and trains on the first n
of the rest, for each size n. The encoder (the zc columns' standardisation included) is fitted on
the training rows only. Each proxy's own tau, and that of FLOPs and params (free, exact counts, the
baseline a proxy has to beat), is over all rows and, per repeat, over the held-out rows. Prints one
JSON object; figures are means and stds over repeats.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent.parent))

import numpy as np  # noqa: E402

from nas_cli.runs import space_spec  # noqa: E402
from predictors import all_metrics, get_predictor, kendall_tau  # noqa: E402
from predictors.data import ZC_PREFIX, make_encoder, read_csv, targets, zero_cost_columns  # noqa: E402

KINDS = ("onehot", "structure", "structure+zc", "zc")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data")
    ap.add_argument("--space", required=True, help="the training run the subnets come from (or a space name)")
    ap.add_argument("--target", default="accuracy")
    ap.add_argument("--test-rows", type=int, default=100)
    ap.add_argument("--sizes", default="100,200,300")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", default="ridge,gp,auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    table = read_csv(args.data)
    y = targets(table, args.target)
    zc_cols = zero_cost_columns(table, args.target)
    if not zc_cols:
        raise SystemExit(f"{args.data}: no {ZC_PREFIX}* columns; sample with `nas predictor sample RUN --zero-cost`")
    sizes = [int(s) for s in args.sizes.split(",")]
    models = args.models.split(",")
    space = space_spec(args.space)
    n = len(y)
    if max(sizes) + args.test_rows > n:
        raise SystemExit(f"{n} rows: --test-rows {args.test_rows} + size {max(sizes)} is more than the table holds")
    free = {c: np.asarray([float(v) for v in table.column(c)]) for c in (*zc_cols, "flops", "params")
            if c in table.header}
    out = {"data": args.data, "rows": n, "target": args.target, "test_rows": args.test_rows, "sizes": sizes,
           "repeats": args.repeats, "target_std": float(y.std()), "target_range": float(np.ptp(y)),
           "proxy_tau_all_rows": {c: kendall_tau(y, v) for c, v in free.items()},
           "proxy_tau_held_out": {c: [] for c in free}, "results": {}}
    cells: dict = {}
    for r in range(args.repeats):
        order = np.random.default_rng([args.seed, r]).permutation(n)
        test, rest = np.sort(order[: args.test_rows]), order[args.test_rows:]
        for c, v in free.items():
            out["proxy_tau_held_out"][c].append(kendall_tau(y[test], v[test]))
        for size in sizes:
            train = np.sort(rest[:size])
            for kind in KINDS:
                enc = make_encoder(table.subset(train), args.target, space=space, features=kind)
                X_train, X_test = enc.transform(table.subset(train)), enc.transform(table.subset(test))
                for model in models:
                    t0 = time.perf_counter()
                    p = get_predictor(model, seed=args.seed + r).fit(X_train, y[train])
                    m = all_metrics(y[test], p.predict(X_test))
                    m["fit_s"] = time.perf_counter() - t0
                    if model == "auto":
                        m["chosen"] = p.chosen.name
                    cells.setdefault((kind, model, size), []).append(m)
                    print(f"repeat {r} n={size} {kind:>13} {model:>6}: tau {m['kendall_tau']:.3f}", file=sys.stderr)
    out["proxy_tau_held_out"] = {c: {"mean": float(np.mean(v)), "std": float(np.std(v))}
                                 for c, v in out["proxy_tau_held_out"].items()}
    for (kind, model, size), ms in cells.items():
        d = {k: {"mean": float(np.mean([m[k] for m in ms])), "std": float(np.std([m[k] for m in ms]))}
             for k in ("kendall_tau", "spearman", "rmse", "fit_s")}
        if model == "auto":
            d["chosen"] = [m["chosen"] for m in ms]
        out["results"].setdefault(kind, {}).setdefault(model, {})[str(size)] = d
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
