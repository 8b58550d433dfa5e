#!/usr/bin/env bash
# Issue 18: zero-cost proxies as predictor features on the 14 px Fashion-MNIST supernet.
# 400 random subnets measured with their proxies; 100 held out, fits on 200 and 300 of the rest.
#   bench/fashion_mnist/zero_cost.sh [RUN] [OUT]     (default runs/fm/supernet, runs/fm-zc)
# The run is copied first: sampling appends to the run's accuracy cache, and the original stays untouched.
set -euo pipefail
cd "$(dirname "$0")/../.."
RUN=${1:-runs/fm/supernet}
OUT=${2:-runs/fm-zc}
NAS=${NAS:-.venv/bin/nas}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
[ -d "$OUT/supernet" ] || { mkdir "$OUT/supernet"; cp -r "$RUN"/config.json "$RUN"/data.json "$RUN"/checkpoint \
  "$RUN"/checksums.json "$RUN"/final.json "$OUT/supernet/"; cp "$RUN"/subnet_accuracy.jsonl "$OUT/supernet/" 2>/dev/null || true; }
[ -f "$OUT/sample400.csv" ] || $NAS predictor sample "$OUT/supernet" --n 400 --seed 0 --zero-cost --out "$OUT/sample400.csv" | tee "$OUT/sample.log"
# the CLI flow: rows 1-100 held out, 101-400 to fit, structure+zc beside structure alone
$PY - "$OUT" <<'PY'
import csv, sys
out = sys.argv[1]
rows = list(csv.DictReader(open(f"{out}/sample400.csv")))
for name, part in (("test100", rows[:100]), ("train300", rows[100:400])):
    with open(f"{out}/{name}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n"); w.writeheader(); w.writerows(part)
PY
for F in structure structure+zc; do
  $NAS predictor fit "$OUT/train300.csv" --target accuracy --model auto --space "$OUT/supernet" --features $F \
    --out "$OUT/pred-auto-$F"
  $NAS predictor evaluate "$OUT/pred-auto-$F" "$OUT/test100.csv" --target accuracy --json | tee "$OUT/eval-$F.json"
done
# every feature kind x model x size, 3 seeded splits, and each proxy's own tau
$PY bench/fashion_mnist/zero_cost.py "$OUT/sample400.csv" --space "$OUT/supernet" --test-rows 100 \
  --sizes 200,300 --repeats 3 --models ridge,gp,auto > "$OUT/zero_cost.json"
