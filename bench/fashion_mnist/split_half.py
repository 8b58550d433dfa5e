"""How much of a subnet's measured accuracy is predictable at all: accuracy on two disjoint halves of
the validation split for the same subnets (BN recalibrated once); Kendall tau between the halves,
and the Spearman-Brown-corrected reliability of the full split."""
import json
import sys
import numpy as np
sys.path.insert(0, ".")
from nas_cli import runs
from nas_cli.evaluation.subnet import SubnetEvaluator
from nas_cli.training.supernet import calibration_images
from predictors import kendall_tau
import csv
runs.enable_compilation_cache()
RUN = sys.argv[1] if len(sys.argv) > 1 else "runs/fm/supernet"
CSV = sys.argv[2] if len(sys.argv) > 2 else "runs/fm/test200.csv"
run = runs.open_run(RUN)
ev = SubnetEvaluator(run.space, run.dataset.mean, run.dataset.std)
calib = calibration_images(run.dataset, run.config.calib_images, run.config.seed)
val = run.dataset.val
h = len(val) // 2
a, b, full = [], [], []
archs = [r["arch"] for r in csv.DictReader(open(CSV))][:120]
for s in archs:
    arch = run.space.decode(s)
    st = ev.calibrate(run.params, arch, calib)
    pred = ev.logits(run.params, st, arch, val.images).argmax(-1) == val.labels
    a.append(pred[:h].mean())
    b.append(pred[h:].mean())
    full.append(pred.mean())
r = np.corrcoef(a, b)[0, 1]
print(json.dumps({"n": len(archs), "tau_half_vs_half": kendall_tau(a, b), "pearson_half_vs_half": r,
                  "reliability_full_spearman_brown": 2 * r / (1 + r),
                  "accuracy_std": float(np.std(full)), "accuracy_range": [float(min(full)), float(max(full))]}))
