"""Few-shot latency on a supernet space: priors are this machine's tables, the target another runtime.

    python bench/fewshot_supernet.py [--space mobilenetv3-tiny] [--resolution R] [--prior-runtimes jax,onnxruntime]
        [--target onnxruntime-int8] [--n 10,20] [--seeds 3] [--test 40] [--repeats 5] [--rounds 10] [--save DIR]

Profiles one lookup table per ``--prior-runtimes`` runtime here (predictors.latency.profile_table; the
priors, as `nas latency fit --prior FILE` takes them), then times end to end in the ``--target``
runtime, in one interleaved measurement (predictors.latency.time_archs, at one common device level):
``--test`` random subnets and, for each probe count and seed, the probes ``nas latency probes``
chooses with those priors. For each (n, seed) the few-shot model (``nas latency fit --timings``) is
fitted on the probes' target latencies and scored on the test subnets: Spearman and MAPE. Beside it,
in the same run: each prior table alone (rescaled by the probes' median ratio, its Spearman is the
table's) and FLOPs alone (a log-log line through the same probes). Prints one JSON object.
``--save DIR`` keeps the prior tables (``DIR/PRIOR.json``), every timed subnet's target latency
(``DIR/timings.csv``, ``arch,latency_ms``), the test subnets (``DIR/test.csv``) and each probe set
(``DIR/probes-N-SEED.csv``), so another version of the fit can be scored on the same measurement.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402
from scipy.stats import spearmanr  # noqa: E402

from predictors.latency import (  # noqa: E402
    VALIDATE_STREAM,
    at_level,
    common_level,
    get_runtime,
    make_latency_space,
    profile_table,
    reference_archs,
    sample_archs,
    time_archs,
)
from predictors.latency.fewshot import (  # noqa: E402
    apply_ridge,
    choose_probes,
    fit_fewshot_model,
    fit_ridge,
    flops_of,
    load_prior,
)


def scores(pred, truth) -> dict:
    pred, truth = np.asarray(pred), np.asarray(truth)
    return {"spearman": float(spearmanr(pred, truth)[0]), "mape": float(100 * np.mean(np.abs(pred / truth - 1)))}


def _write_csv(path: Path, header: list[str], rows) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(header)
        w.writerows(rows)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--space", default="mobilenetv3-tiny")
    ap.add_argument("--resolution", type=int, action="append")
    ap.add_argument("--prior-runtimes", default="jax,onnxruntime")
    ap.add_argument("--target", default="onnxruntime-int8")
    ap.add_argument("--n", default="10,20")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--test", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--save", default=None, help="folder to keep the priors, timings, test subnets and probes in")
    args = ap.parse_args(argv)
    t0 = time.time()
    space, options = make_latency_space(args.space, resolutions=args.resolution)
    tmp = Path(args.save) if args.save else Path(tempfile.mkdtemp(prefix="fewshot-supernet-"))
    tmp.mkdir(parents=True, exist_ok=True)
    priors = []
    for name in args.prior_runtimes.split(","):
        table = profile_table(space, repeats=args.repeats, rounds=args.rounds, calib_samples=2, options=options,
                              runtime=get_runtime(name, threads=1) if name != "jax" else get_runtime(name))
        table.save(tmp / f"{name}.json")
        priors.append(load_prior(str(tmp / f"{name}.json"), space))
        print(f"prior {name} profiled ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    test = sample_archs(space, args.test, 0, VALIDATE_STREAM)
    ns = [int(n) for n in args.n.split(",")]
    sets = {(n, s): choose_probes(space, n, s, priors)[0] for n in ns for s in range(args.seeds)}
    keys, archs = {}, []
    for a in test + [a for p in sets.values() for a in p]:
        k = space.encode(a)
        if k not in keys:
            keys[k] = len(archs)
            archs.append(a)
    target = get_runtime(args.target, threads=1)
    timed = time_archs(space, archs, repeats=args.repeats, rounds=args.rounds, references=reference_archs(space),
                       runtime=target)
    y = at_level(timed, common_level(timed))
    print(f"{len(archs)} subnets timed in {args.target} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    y_test = y[[keys[space.encode(a)] for a in test]]
    if args.save:
        _write_csv(tmp / "timings.csv", ["arch", "latency_ms"], [(k, f"{y[i]:.6g}") for k, i in keys.items()])
        _write_csv(tmp / "test.csv", ["arch"], [(space.encode(a),) for a in test])
        for (n, s), probes in sets.items():
            _write_csv(tmp / f"probes-{n}-{s}.csv", ["arch"], [(space.encode(a),) for a in probes])
    f_test = np.log(flops_of(space, test))
    prior_test = [p.predict_many(test) for p in priors]
    out = {"command": "python bench/fewshot_supernet.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
           "space": args.space, "options": options, "target": args.target, "priors": args.prior_runtimes.split(","),
           "test": len(test), "subnets_timed": len(archs), "results": {}}
    for n in ns:
        runs = []
        for s in range(args.seeds):
            probes = sets[(n, s)]
            yp = y[[keys[space.encode(a)] for a in probes]]
            model = fit_fewshot_model(space, probes, yp, priors, seed=s)
            fl = fit_ridge(np.log(flops_of(space, probes))[:, None], yp, "log", 1e-6)
            run = {"seed": s, "model": model.params["model"], "fewshot": scores(model.predict_many(test), y_test),
                   "flops": scores(apply_ridge(fl, f_test[:, None], "log"), y_test)}
            for name, p, pt in zip(out["priors"], priors, prior_test):
                ratio = float(np.median(yp / p.predict_many(probes)))
                run[f"prior_{name}"] = scores(pt * ratio, y_test)
            runs.append(run)
        out["results"][str(n)] = {
            **{k: {m: float(np.mean([r[k][m] for r in runs])) for m in ("spearman", "mape")}
               for k in runs[0] if k not in ("seed", "model")},
            "runs": runs}
    out["seconds"] = time.time() - t0
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
