"""The held-out ranking of the fitted predictor overall and within each input resolution.

    python runs/fm5/by_resolution.py runs/fm5/pred-auto runs/fm5/test200.csv
"""
import json
import sys
from collections import defaultdict
import numpy as np
sys.path.insert(0, ".")
from predictors import kendall_tau
from predictors.data import read_csv
from predictors.tabular import load_table_model, targets

model_dir, csv_path = sys.argv[1:3]
model, table = load_table_model(model_dir), read_csv(csv_path)
y, p = np.asarray(targets(table, "accuracy")), np.asarray(model.predict_table(table))
archs = table.column("arch")
space = model.encoder.space  # the arch column's space, as the model was fitted
res = [space.decode(a).resolution for a in archs]
groups = defaultdict(list)
for i, r in enumerate(res):
    groups[r].append(i)
out = {"overall_tau": kendall_tau(y, p), "n": len(y),
       "by_resolution": {r: {"n": len(ix), "tau": kendall_tau(y[ix], p[ix]), "mean_acc": float(y[ix].mean())}
                         for r, ix in sorted(groups.items())}}
print(json.dumps(out, indent=1))
