"""Few-shot latency on NAS-Bench-201: each device of a table as the target, the others as priors.

    python bench/fewshot_latency.py --table TABLE.csv [--devices lat_ms_a,lat_ms_b,...] [--n 10,20]
        [--seeds 5] [--random-n 10] [--candidates FAMILY,...]

For every latency column of ``--table`` (``lat_ms_*``, or ``--devices``) as the target and the other
columns as priors (``TABLE.csv:COLUMN``, predictors.latency.load_prior), and for each probe count
``n`` and seed: ``nas latency probes`` chooses ``n`` probes (stratified by the priors), their target
latencies are read from the table (the "timings"), and ``nas latency fit``'s model
(predictors.latency.fit_fewshot_model) predicts every cell. Scored over all the table's cells:
Spearman rank correlation and the share of cells predicted within +-10%. Baselines in the same
run, on the same seeds: FLOPs alone (a log-log line through the same probes; its Spearman is the
FLOPs ranking's) and a ridge on the priors' log-latencies fitted on ``--random-n`` random cells.
Prints one JSON object: per target and n, the mean and each seed's figures and the chosen models.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from collections import Counter
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from predictors.latency.fewshot import (  # noqa: E402
    CANDIDATES,
    Inputs,
    apply_ridge,
    fit_ridge,
    choose_probes,
    flops_of,
    load_prior,
    read_archs,
    fit_fewshot_model,
)
from search_spaces import get_space  # noqa: E402


def scores(pred: np.ndarray, truth: np.ndarray) -> dict:
    return {"spearman": float(spearmanr(pred, truth)[0]),
            "within_10pct": float(np.mean(np.abs(pred / truth - 1.0) <= 0.10))}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--table", required=True)
    ap.add_argument("--space", default="nas-bench-201")
    ap.add_argument("--devices", default=None, help="comma-separated latency columns (default: every lat_ms_*)")
    ap.add_argument("--targets", default=None, help="comma-separated targets among --devices (default: all)")
    ap.add_argument("--n", default="10,20")
    ap.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (5 for the recorded figures)")
    ap.add_argument("--random-n", type=int, default=10)
    ap.add_argument("--candidates", default=None,
                    help="comma-separated model families fit_fewshot_model chooses between (default: all)")
    args = ap.parse_args(argv)
    t0 = time.time()
    space = get_space(args.space)
    import csv  # noqa: PLC0415

    with open(args.table, newline="") as f:
        header = next(csv.reader(f))
    devices = args.devices.split(",") if args.devices else [c for c in header if c.startswith("lat_ms_")]
    archs = read_archs(args.table, space)
    keys = [space.encode(a) for a in archs]
    priors_all = {d: load_prior(f"{args.table}:{d}", space) for d in devices}
    truth_all = {d: priors_all[d].predict_many(archs) for d in devices}
    flops = flops_of(space, archs)
    index = {k: i for i, k in enumerate(keys)}
    out = {"command": "python bench/fewshot_latency.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
           "table": args.table, "cells": len(archs), "devices": devices, "targets": {}}
    targets = args.targets.split(",") if args.targets else devices
    candidates = tuple(args.candidates.split(",")) if args.candidates else CANDIDATES
    out["candidates"] = list(candidates)
    for target in targets:
        truth = truth_all[target]
        priors = [priors_all[d] for d in devices if d != target]
        inputs = Inputs(space, archs, priors)  # every cell's features, computed once for all the models
        res = {}
        for n in map(int, args.n.split(",")):
            runs = []
            for seed in range(args.seeds):
                probes, by = choose_probes(space, n, seed, priors)
                idx = np.asarray([index[space.encode(a)] for a in probes])
                model = fit_fewshot_model(space, probes, truth[idx], priors, seed=seed, candidates=candidates)
                pred = model.predict_inputs(inputs)
                # FLOPs alone through the same probes (its ranking is the FLOPs ranking)
                lf = np.log(flops)
                fl = fit_ridge(lf[idx, None], truth[idx], "log", 1e-6)
                flops_pred = apply_ridge(fl, lf[:, None], "log")
                runs.append({"seed": seed, "stratified_by": by, "model": model.params["model"],
                             "members": len(model.params["members"]), "left_out": len(model.data["left_out"]),
                             "fewshot": scores(pred, truth), "flops": scores(flops_pred, truth)})
            res[str(n)] = {
                "fewshot_spearman": float(np.mean([r["fewshot"]["spearman"] for r in runs])),
                "fewshot_within_10pct": float(np.mean([r["fewshot"]["within_10pct"] for r in runs])),
                "flops_spearman": float(np.mean([r["flops"]["spearman"] for r in runs])),
                "flops_within_10pct": float(np.mean([r["flops"]["within_10pct"] for r in runs])),
                "models": dict(Counter(r["model"] for r in runs)),
                "runs": runs,
            }
        # baseline: ridge on the priors' log-latencies fitted on random cells
        base = []
        P = np.log(np.stack([truth_all[d] for d in devices if d != target], 1))
        for seed in range(args.seeds):
            idx = np.random.default_rng([seed, 0xBA5E]).choice(len(archs), args.random_n, replace=False)
            p = fit_ridge(P[idx], truth[idx], "log", 0.1)
            base.append(scores(apply_ridge(p, P, "log"), truth))
        res[f"random{args.random_n}_prior_ridge"] = {
            "spearman": float(np.mean([b["spearman"] for b in base])),
            "within_10pct": float(np.mean([b["within_10pct"] for b in base])), "runs": base}
        out["targets"][target] = res
        print(f"{target}: " + ", ".join(f"n={n} rho {res[n]['fewshot_spearman']:.3f}" for n in args.n.split(","))
              + f"; flops rho {res[args.n.split(',')[0]]['flops_spearman']:.3f}; random ridge rho "
              f"{res[f'random{args.random_n}_prior_ridge']['spearman']:.3f}", file=sys.stderr)
    ns = args.n.split(",")
    out["mean"] = {
        **{f"fewshot_spearman_n{n}": float(np.mean([out["targets"][d][n]["fewshot_spearman"] for d in targets]))
           for n in ns},
        **{f"fewshot_within_10pct_n{n}": float(np.mean([out["targets"][d][n]["fewshot_within_10pct"]
                                                         for d in targets])) for n in ns},
        "flops_spearman": float(np.mean([out["targets"][d][ns[0]]["flops_spearman"] for d in targets])),
        f"random{args.random_n}_prior_ridge_spearman": float(np.mean(
            [out["targets"][d][f"random{args.random_n}_prior_ridge"]["spearman"] for d in targets])),
    }
    out["seconds"] = time.time() - t0
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
