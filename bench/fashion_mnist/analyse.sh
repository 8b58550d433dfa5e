#!/usr/bin/env bash
# Issue 5 on the multi-resolution Fashion-MNIST supernet: 500 random subnets, 300 to fit, 200 held out.
set -euo pipefail
cd "$(dirname "$0")/../.."
NAS=.venv/bin/nas
$NAS predictor sample runs/fm5/supernet --n 500 --seed 0 --out runs/fm5/sample500.csv
.venv/bin/python - <<'PY'
import csv
rows = list(csv.DictReader(open("runs/fm5/sample500.csv")))
cols = ["arch", "accuracy"]
for name, part in (("test200", rows[:200]), ("train300", rows[200:500])):
    with open(f"runs/fm5/{name}.csv", "w", newline="") as f:
        w = csv.writer(f); w.writerow(cols); w.writerows([r[c] for c in cols] for r in part)
PY
$NAS predictor fit runs/fm5/train300.csv --target accuracy --model auto --space runs/fm5/supernet --out runs/fm5/pred-auto
$NAS predictor evaluate runs/fm5/pred-auto runs/fm5/test200.csv --target accuracy --json > runs/fm5/auto_eval.json
cat runs/fm5/auto_eval.json
