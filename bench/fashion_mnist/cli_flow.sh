#!/usr/bin/env bash
# Issue 5 latency target: table, learned model on 100 subnets, validation on 100 others (mobilenetv3, 32 px, batch 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
NAS=.venv/bin/nas
time $NAS latency profile --space mobilenetv3 --out runs/lat/lut32.json
time $NAS latency fit --space mobilenetv3 --lut runs/lat/lut32.json --samples 100 --out runs/lat/model32.json --json > runs/lat/fit32.json
cat runs/lat/fit32.json
time $NAS latency validate runs/lat/model32.json --space mobilenetv3 --samples 100 --json > runs/lat/validate_model32.json
cat runs/lat/validate_model32.json
