"""int8 export: float vs int8 accuracy and onnxruntime batch-1 latency of exported subnets.

    python bench/int8_export.py RUN [RUN ...] --out-root DIR [--which largest,smallest] [--calib-images 256]
        [--repeats 20] [--rounds 10] [--threads 1]

For each training run and each subnet (the space's largest and smallest), ``nas export subnet
--quantize int8`` (nas_cli.export.export_subnet) writes model.onnx and model.int8.onnx; the
accuracies are the ones it records in subnet.json (validation and test, float and int8, both in
onnxruntime for int8). Both models are then timed at batch 1 in one onnxruntime CPU session each
(``--threads`` intra-op threads), interleaved round by round (predictors.latency.timing.time_calls),
so the ratio is measured side by side. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

import numpy as np  # noqa: E402

from nas_cli import runs  # noqa: E402
from nas_cli.export import export_subnet  # noqa: E402
from predictors.latency.ort import session  # noqa: E402
from predictors.latency.timing import time_calls  # noqa: E402


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out-root", required=True)
    ap.add_argument("--which", default="largest,smallest")
    ap.add_argument("--calib-images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    out = {"command": "python bench/int8_export.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
           "subnets": []}
    for run_dir in args.runs:
        space = runs.open_run(run_dir).space
        for which in args.which.split(","):
            arch = space.encode(getattr(space, which)())
            dest = Path(args.out_root) / f"{Path(run_dir).name}-{which}"
            info = export_subnet(Path(run_dir), dest, arch=arch, force=True, format="onnx", quantize="int8",
                                 int8_calib_images=args.calib_images, log=lambda m: print(m, file=sys.stderr))
            shape = (1, *info["input"]["shape"][1:])
            x = np.zeros(shape, np.float32)
            calls = []
            for name in ("model.onnx", "model.int8.onnx"):
                sess, _ = session((dest / name).read_bytes(), threads=args.threads)
                calls.append(lambda s=sess: s.run(None, {"images": x}))
            timed = time_calls(calls, repeats=args.repeats, warmup=3, rounds=args.rounds)
            out["subnets"].append({
                "run": str(run_dir), "space": space.name, "which": which, "arch": arch,
                "float": {"val": info["accuracy"], "test": info["test_accuracy"],
                          "latency_ms": timed[0]["latency_ms"], "size_bytes": (dest / "model.onnx").stat().st_size},
                "int8": {"val": info["int8"]["accuracy"], "test": info["int8"]["test_accuracy"],
                         "latency_ms": timed[1]["latency_ms"],
                         "size_bytes": (dest / "model.int8.onnx").stat().st_size},
                "drop_points": info["int8"]["accuracy_drop_points"],
                "int8_over_float_latency": timed[1]["latency_ms"] / timed[0]["latency_ms"],
            })
            print(json.dumps(out["subnets"][-1]), file=sys.stderr)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
