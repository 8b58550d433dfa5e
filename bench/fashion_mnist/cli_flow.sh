#!/usr/bin/env bash
# Issue 5 latency target: table, learned model on 200 subnets, validation on 100 others (mobilenetv3, 32 px, batch 1).
# Defaults: 20 interleaved rounds of 10 runs, the reference subnets timed in every chunk.
set -euo pipefail
cd "$(dirname "$0")/../.."
NAS=.venv/bin/nas
OUT=${OUT:-runs/lat2}
mkdir -p "$OUT"
time $NAS latency profile --space mobilenetv3 --resolution 32 --out $OUT/lut32.json
time $NAS latency validate $OUT/lut32.json --space mobilenetv3 --samples 100 --json > $OUT/validate_lut32.json
cat $OUT/validate_lut32.json
time $NAS latency fit --space mobilenetv3 --lut $OUT/lut32.json --samples 200 --out $OUT/model32.json --json > $OUT/fit32.json
cat $OUT/fit32.json
time $NAS latency validate $OUT/model32.json --space mobilenetv3 --samples 100 --json > $OUT/validate_model32.json
cat $OUT/validate_model32.json
