"""Fine-tuning a subnet (``nas finetune``) against its inherited weights and against training it alone.

Trains one supernet (sandwich rule + in-place distillation) for E epochs (or reuses one in --out), then
takes its smallest (and, with ``--largest``, its largest) subnet and measures, on the validation and test
splits with BatchNorm recalibrated every time:

- ``inherited``: the subnet with the supernet's weights, as the search sees it;
- ``finetuned_distill``: ``nas finetune`` for N epochs with distillation from the largest subnet (weight 1);
- ``finetuned_plain``: the same without distillation (``--distill-weight 0``);
- ``scratch``: the same architecture trained alone from a random initialisation for the same N epochs
  (the same steps, batch, data and augmentation; train-supernet's ``fixed_arch`` with its own recipe:
  the run's learning rate with one warm-up epoch, no distillation).

Prints one JSON object. Every finished training is kept in --out and reused by a re-run.

  python bench/finetune.py --dataset fashion-mnist --data-dir /work/shared/data/fashion-mnist \
      --space mobilenetv3-tiny --epochs 3 --finetune-epochs 2 --limit-train 4096 --out runs/bench/ft
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nas_cli import runs  # noqa: E402
from nas_cli.config import TrainConfig  # noqa: E402
from nas_cli.training.finetune import DEFAULT_LR_FRACTION, finetune  # noqa: E402
from nas_cli.evaluation.subnet import SubnetEvaluator  # noqa: E402
from nas_cli.training.supernet import calibration_images, train_supernet  # noqa: E402


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _train(cfg: TrainConfig, out: Path) -> float:
    """Seconds the training took (0 when a finished one was reused)."""
    if (out / runs.FINAL).is_file():
        return 0.0
    t0 = time.time()
    train_supernet(cfg, out, log=_log, resume=(out / runs.CONFIG).is_file())
    return round(time.time() - t0, 1)


def _accuracies(run_dir: Path, arch: str) -> dict:
    run = runs.open_run(run_dir)
    a = run.space.decode(arch)
    ev = SubnetEvaluator(run.space, run.dataset.mean, run.dataset.std)
    stats = ev.calibrate(run.params, a, calibration_images(run.dataset, run.config.calib_images, run.config.seed))
    return {"accuracy": ev.accuracy(run.params, stats, a, run.dataset.val),
            "test_accuracy": ev.accuracy(run.params, stats, a, run.dataset.test)}


def _finetune(run_dir: Path, out: Path, arch: str, epochs: int, weight: float, lr: float | None) -> dict:
    path = out / "subnet.json"
    t0 = time.time()
    if not path.is_file():
        finetune(run_dir, out, arch=arch, epochs=epochs, distill_weight=weight, lr=lr, format="stablehlo", log=_log,
                 resume=(out / "finetune.json").is_file())
    info = json.loads(path.read_text())
    metrics = [json.loads(line) for line in (out / runs.METRICS).read_text().splitlines()]
    return {**info["finetune"]["after"], "seconds": round(time.time() - t0, 1),
            "history": [{k: r[k] for k in ("epoch", "loss", "val_acc", "images_per_s")} for r in metrics],
            "before": info["finetune"]["before"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--space", default="mobilenetv3-tiny")
    ap.add_argument("--width-mult", type=float, default=1.0)
    ap.add_argument("--resolution", type=int, default=None)
    ap.add_argument("--augment", default=None)
    ap.add_argument("--epochs", type=int, default=3, help="supernet epochs")
    ap.add_argument("--finetune-epochs", type=int, default=2, help="fine-tuning and stand-alone epochs")
    ap.add_argument("--limit-train", type=int, default=4096)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--calib-images", type=int, default=512)
    ap.add_argument("--finetune-lr", type=float, default=None, help="default: nas finetune's (the run's lr)")
    ap.add_argument("--largest", action="store_true", help="the largest subnet too")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench/finetune"))
    args = ap.parse_args()
    runs.enable_compilation_cache()

    base = TrainConfig(space=args.space, dataset=args.dataset, data_dir=args.data_dir, epochs=args.epochs,
                       batch_size=args.batch_size, limit_train=args.limit_train, calib_images=args.calib_images,
                       width_mult=args.width_mult, seed=args.seed, augment=args.augment,
                       resolutions=(args.resolution,) if args.resolution else None)
    supernet_dir = args.out / "supernet"
    supernet_seconds = _train(base, supernet_dir)
    final = json.loads((supernet_dir / runs.FINAL).read_text())
    steps = args.finetune_epochs * (args.limit_train // args.batch_size)
    lr_tag = "" if args.finetune_lr is None else f"-lr{args.finetune_lr:g}"
    results = {}
    for name in ("smallest", "largest") if args.largest else ("smallest",):
        arch = final[name]
        scratch_dir = args.out / f"scratch-{name}"
        scratch_cfg = dataclasses.replace(base, epochs=args.finetune_epochs, fixed_arch=arch, distill=False)
        scratch_seconds = _train(scratch_cfg, scratch_dir)
        row = {"arch": arch,
               "inherited": _accuracies(supernet_dir, arch),
               "finetuned_distill": _finetune(supernet_dir, args.out / f"ft-{name}-kd{lr_tag}", arch,
                                              args.finetune_epochs, 1.0, args.finetune_lr),
               "finetuned_plain": _finetune(supernet_dir, args.out / f"ft-{name}-plain{lr_tag}", arch,
                                            args.finetune_epochs, 0.0, args.finetune_lr),
               "scratch": {**_accuracies(scratch_dir, arch), "seconds": scratch_seconds}}
        results[name] = row
    print(json.dumps({"dataset": args.dataset, "space": args.space, "width_mult": args.width_mult,
                      "limit_train": args.limit_train, "batch_size": args.batch_size, "supernet_epochs": args.epochs,
                      "finetune_epochs": args.finetune_epochs, "finetune_steps": steps,
                      "finetune_lr": args.finetune_lr or base.lr * DEFAULT_LR_FRACTION,
                      "supernet_seconds": supernet_seconds, "load_average": os.getloadavg(), "subnets": results},
                     indent=1))


if __name__ == "__main__":
    main()
