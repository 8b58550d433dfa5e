#!/bin/bash
# issues 5 and 6 on the Fashion-MNIST mobilenetv3-tiny supernet (14 px): random search first (its
# 600 uniformly random measured subnets are also the predictor dataset), then
# predictor-in-the-loop NSGA-II; 200 evaluations each, 3 seeds.
cd "$(dirname "$0")/../.."
RUN=runs/fm/supernet
while [ ! -f $RUN/final.json ]; do sleep 20; done
for s in 0 1 2; do
  .venv/bin/nas search $RUN --latency-budget 60% --latency-table runs/fm/lut14.json --algorithm random \
      --population 22 --generations 9 --seed $s --out runs/fm/random-$s
done
for s in 0 1 2; do
  .venv/bin/nas search $RUN --latency-budget 60% --latency-table runs/fm/lut14.json --algorithm nsga2 \
      --evaluations 200 --predictor gp --seed $s --out runs/fm/nsga2-$s
done
