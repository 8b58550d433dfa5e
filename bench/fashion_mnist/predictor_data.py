"""Issue 5 data: the uniformly random subnets measured by the three random searches, as CSVs."""
import csv
import json
import random
from pathlib import Path
rows = {}
for s in (0, 1, 2):
    for line in Path(f"runs/fm/random-{s}/cache.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows.setdefault(r["arch"], r["metrics"]["accuracy"])
# the largest and smallest subnets are measured by every search, not sampled: leave them out
for fixed in ("r14-k5e6.k5e6.k5e6-k5e6.k5e6.k5e6-k5e6.k5e6.k5e6", "r14-k3e3-k3e3-k3e3"):
    rows.pop(fixed, None)
archs = sorted(rows)
random.Random(0).shuffle(archs)
def write(path, keys):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "accuracy"])
        w.writerows([k, rows[k]] for k in keys)
write("runs/fm/random_all.csv", archs)
write("runs/fm/test200.csv", archs[:200])
write("runs/fm/train300.csv", archs[200:500])
print(len(archs), "random subnets;", "test200 / train300 written")
