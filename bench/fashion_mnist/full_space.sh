#!/usr/bin/env bash
# Issue 3 quality on the full mobilenetv3 space (5 stages, width 0.5, 14 px, all 54k images, 5 epochs),
# then issue 5's every-model-with-and-without-pretraining table on 300 of its subnets.
# About 75 min of the 2-core CPU for the two trainings side by side, 5 min for the sample.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
OUT=${OUT:-runs/bench/q14full}
ARGS=(--data-dir ../shared/data/fashion-mnist --epochs 5 --limit-train 0 --width-mult 0.5 --resolution 14 --subnets 0 --out "$OUT")
mkdir -p "$OUT"
$PY bench/supernet_quality.py "${ARGS[@]}" --stage supernet 2> "$OUT/supernet.log" &
$PY bench/supernet_quality.py "${ARGS[@]}" --stage alone 2> "$OUT/alone.log"
wait
$PY bench/supernet_quality.py "${ARGS[@]}" > "$OUT/quality.json"
cat "$OUT/quality.json"
.venv/bin/nas predictor sample "$OUT/supernet" --n 300 --seed 0 --out "$OUT/sample300.csv"
$PY bench/predictors.py "$OUT/sample300.csv" --target accuracy --space "$OUT/supernet" --test-rows 200 \
    --sizes 25,50,100 --repeats 3 --ignore flops --ignore params --pretrain-samples 2000 > "$OUT/predictors.json"
cat "$OUT/predictors.json"
