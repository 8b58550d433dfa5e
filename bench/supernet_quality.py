"""Supernet quality: inherited-weight accuracy against the same architectures trained alone.

Trains one supernet (sandwich rule + in-place distillation) for E epochs, then trains the smallest,
the largest and N random architectures alone from scratch with the same data, augmentation, epochs
and recipe (``fixed_arch``, no distillation), and compares test accuracy (BN recalibrated in both
cases). Prints one JSON object: per-architecture inherited and stand-alone accuracy, the gaps of the
smallest and largest, the Kendall tau between inherited and stand-alone accuracy over the random
architectures, and every training's per-epoch history (validation accuracy, seconds, images/s).

This is a slow benchmark (many trainings). Each finished training is kept in --out, and a re-run
reuses them, so an interrupted benchmark continues where it stopped. The stand-alone trainings do not
need the supernet, so on a machine with cores to spare they can run beside it in a second process
(``--stage alone``); a last run with the default ``--stage all`` reuses both and compares.

  python bench/supernet_quality.py --dataset fashion-mnist --data-dir ../shared/data/fashion-mnist \
      --epochs 5 --limit-train 12000 --width-mult 0.5 --resolution 28 --subnets 10
  python bench/supernet_quality.py --dataset cifar10 --data-dir ../shared/data/cifar-10-batches-bin \
      --augment standard --epochs 4 --limit-train 20000 --width-mult 0.5 --resolution 16 --subnets 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_cli import runs  # noqa: E402
from nas_cli.config import TrainConfig  # noqa: E402
from nas_cli.evaluation.subnet import SubnetEvaluator  # noqa: E402
from predictors.files import read_jsonl  # noqa: E402
from nas_cli.data.input_pipeline import AUGMENTATIONS  # noqa: E402
from nas_cli.training.supernet import calibration_images, train_supernet  # noqa: E402
from predictors import kendall_tau  # noqa: E402


def _train(cfg: TrainConfig, out: Path) -> None:
    if (out / runs.FINAL).is_file():
        return
    # an interrupted training continues from its last finished epoch (--resume needs a run to continue)
    train_supernet(cfg, out, log=lambda m: print(m, file=sys.stderr, flush=True),
                   resume=(out / runs.CONFIG).is_file())


def _test_accuracy(run_dir: Path, arch) -> float:
    run = runs.open_run(run_dir)
    ev = SubnetEvaluator(run.space, run.dataset.mean, run.dataset.std)
    calib = calibration_images(run.dataset, run.config.calib_images, run.config.seed)
    return ev.calibrated_accuracy(run.params, arch, calib, run.dataset.test)


def _history(run_dir: Path) -> list[dict]:
    """Per epoch of a training: validation accuracy of its largest and smallest subnet (one
    architecture for a stand-alone run), seconds (training + validation) and training images/s."""
    keys = ("epoch", "val_acc_largest", "val_acc_smallest", "seconds", "images_per_s")
    return [{k: r[k] for k in keys if k in r} for r in read_jsonl(run_dir / runs.METRICS)]


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir", default="../shared/data/fashion-mnist")
    ap.add_argument("--space", default="mobilenetv3")
    ap.add_argument("--width-mult", type=float, default=0.5)
    ap.add_argument("--resolution", type=int, default=28)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--limit-train", type=int, default=12000)
    ap.add_argument("--subnets", type=int, default=10)
    ap.add_argument("--augment", choices=tuple(AUGMENTATIONS), default=None,
                    help="training augmentation of the supernet and of every stand-alone run alike "
                         "(default: the dataset's, standard for cifar10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench/quality")
    ap.add_argument("--supernet", default=None,
                    help="an existing finished training run to compare (its settings replace the ones above)")
    ap.add_argument("--stage", choices=("all", "supernet", "alone"), default="all",
                    help="all: train what is missing and compare; supernet: train the supernet only; "
                         "alone: train the stand-alone architectures only (no supernet needed)")
    args = ap.parse_args(argv)
    runs.enable_compilation_cache()
    out = Path(args.out)
    t0 = time.time()
    if args.supernet is not None:
        supernet_dir = Path(args.supernet)
        base = runs.read_config(supernet_dir)
    else:
        supernet_dir = out / "supernet"
        base = TrainConfig(space=args.space, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                           batch_size=args.batch_size, seed=args.seed, limit_train=args.limit_train or None,
                           width_mult=args.width_mult, resolutions=(args.resolution,), augment=args.augment)
        if args.stage != "alone":
            _train(base, supernet_dir)
    if args.stage == "supernet":
        return {}
    if args.stage == "alone" and not (supernet_dir / runs.FINAL).is_file():
        space = runs.make_space(base, runs.load_run_dataset(base))
    else:
        space = runs.open_run(supernet_dir).space
    rng = np.random.default_rng(args.seed + 100)
    archs = {"smallest": space.smallest(), "largest": space.largest()}
    for i in range(args.subnets):
        archs[f"random{i}"] = space.sample(rng)

    rows, history = {}, {"supernet": _history(supernet_dir) if args.stage != "alone" else []}
    for name, arch in archs.items():
        code = space.encode(arch)
        alone_dir = out / f"alone-{name}"
        _train(dataclasses.replace(base, fixed_arch=code, distill=False), alone_dir)
        history[f"alone-{name}"] = _history(alone_dir)
        if args.stage == "alone":
            continue
        inherited = _test_accuracy(supernet_dir, arch)
        alone = json.loads((alone_dir / runs.FINAL).read_text())["test_acc_largest"]
        rows[name] = {"arch": code, "inherited": inherited, "alone": alone,
                      "gap_points": round(100 * (inherited - alone), 2), "mflops": space.flops(arch) / 1e6}
        print(json.dumps({name: rows[name]}), file=sys.stderr, flush=True)

    if args.stage == "alone":
        return {}
    rand = [r for n, r in rows.items() if n.startswith("random")]
    result = {
        "command": " ".join(["python", "bench/supernet_quality.py", *(argv if argv is not None else sys.argv[1:])]),
        "settings": dataclasses.asdict(base),
        "rows": rows,
        "gap_smallest_points": rows["smallest"]["gap_points"],
        "gap_largest_points": rows["largest"]["gap_points"],
        "within_2_points": abs(rows["smallest"]["gap_points"]) <= 2 and abs(rows["largest"]["gap_points"]) <= 2,
        "kendall_tau_random": kendall_tau([r["alone"] for r in rand], [r["inherited"] for r in rand]) if len(rand) > 1 else None,
        "history": history,
        "seconds": round(time.time() - t0, 1),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
