"""How close `nas import ofa` computes to Once-for-All's own code (issue 32): the relative max |logit
difference| for each subnet of the stored fixture (or a fresh one from the ofa package).

    python bench/ofa_parity.py [--family resnet50] [--fresh WIDTH]

Without ``--fresh``: tests/fixtures/ofa/ (MobileNetV3 width 0.1, or with ``--family resnet50``
OFA-ResNet50 width 0.095; OFA's logits stored). With it: the fixture is written anew by
tests/fixtures/make_ofa_fixture.py (make_ofa_resnet_fixture.py) at that width (needs torch and ofa). Prints one
JSON object: per subnet its arch, how it was compared (eval with OFA's statistics, through the
supernet and the standalone model; or after recalibration) and max |diff| / max |OFA logit|.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from nas_cli import runs  # noqa: E402
from nas_cli.importing import import_ofa, stored_stats  # noqa: E402
from nas_cli.evaluation import SubnetEvaluator  # noqa: E402
from search_spaces.layers import preprocess  # noqa: E402

MEAN, STD = np.float32([0.485, 0.456, 0.406]), np.float32([0.229, 0.224, 0.225])


def rel(got, want) -> float:
    return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", type=float, default=None)
    parser.add_argument("--family", choices=("mbv3", "resnet50"), default="mbv3")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp())
    resnet = args.family == "resnet50"
    resolutions = (32, 36) if resnet else (32, 36, 40)
    if args.fresh is not None:
        sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
        if resnet:
            import make_ofa_resnet_fixture as make
        else:
            import make_ofa_fixture as make

        pth, npz, net = make.write(tmp / "fixture", width=args.fresh, seed=11)
    else:
        net = "ofa_resnet50_w0.095" if resnet else "ofa_mbv3_d234_e346_k357_w0.1"
        pth, npz = (ROOT / "tests" / "fixtures" / "ofa" / f"{net}.{ext}" for ext in ("pth", "npz"))
    exp = np.load(npz)
    t0 = time.perf_counter()
    import_ofa(pth, net, tmp / "run", resolutions=resolutions, log=lambda m: None)
    run = runs.open_run(tmp / "run", without_data=True)
    space, params, stats = run.space, run.params, stored_stats(run)
    ev = SubnetEvaluator(space, MEAN, STD, batch_size=4)
    rows = []
    for arch_str, want in zip(exp["archs"], exp["logits"]):
        arch = space.decode(str(arch_str))
        images = exp[f"images_r{arch.resolution}"]
        model = space.extract(params, stats, arch)
        static = jax.jit(lambda x, m=model: m(x))(preprocess(images, arch.resolution, MEAN, STD))
        rows.append({"arch": str(arch_str), "compared": "eval, OFA's BN statistics",
                     "supernet": rel(ev.logits(params, stats, arch, images), want), "standalone": rel(static, want)})
    for i, (arch_str, want) in enumerate(zip(exp["calib_archs"], exp["calib_logits"])):
        arch = space.decode(str(arch_str))
        new = ev.calibrate(params, arch, exp[f"calib_{i}"])
        rows.append({"arch": str(arch_str), "compared": "after recalibration (nas vs set_running_statistics)",
                     "supernet": rel(ev.logits(params, new, arch, exp[f"images_r{arch.resolution}"]), want)})
    worst = max(max(r["supernet"], r.get("standalone", 0.0)) for r in rows)
    print(json.dumps({"net": net, "subnets": len(rows), "max_relative_diff": worst,
                      "seconds": round(time.perf_counter() - t0, 1), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
