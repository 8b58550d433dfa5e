"""Loading an exported subnet: seconds to load, to the first predict and to a second predict.

    python bench/load_export.py EXPORT_DIR [--ways before,nnx,stablehlo,onnx] [--images 1] [--repeat 1]

Each way runs in a fresh Python process of its own (what a deployed program pays), one after
another, with an empty JAX compilation cache (a new machine), in the order given; ``--repeat N``
runs the whole order N times (round-robin, so a neighbour's burst falls on every way alike):

* ``before``: the loader as it was before issue 34: the NNX model built with its initialisers run,
  its weights restored from ``model/``, ``predict`` run eagerly (each op compiled on first use);
* ``nnx``: ``load_subnet(DIR, program="nnx")``: the NNX model built without initialisers, ``predict``
  one jitted program;
* ``stablehlo``: ``load_subnet(DIR)``: ``model.stablehlo`` deserialized (``jax.export``), ``predict``
  one jitted program;
* ``onnx``: ``nas_cli.export.onnx_model.load_onnx(DIR)`` in onnxruntime.

Timed in the child: ``import_s`` (importing the loader's module, JAX included), ``load_s``,
``first_predict_s`` and ``second_predict_s`` (``--images`` validation-sized random uint8 images,
the same each time); ``total_s`` is the child's wall time from its start. The logits of every way
are compared with the first way's (``max_abs_diff``). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WAYS = ("before", "nnx", "stablehlo", "onnx")


def _before(path: Path):
    """The loader of main before issue 34 (nas_cli/export.py at dc7d994), kept here to time it."""
    import jax.numpy as jnp
    import orbax.checkpoint as ocp
    from flax import nnx

    from nas_cli.export.record import check_export_files, read_export_info
    from nas_cli.evaluation.subnet import preprocess_recorded
    from search_spaces import get_space

    info = read_export_info(path)
    check_export_files(path, info, "model")
    options = dict(info["space_options"])
    options["resolutions"] = tuple(options["resolutions"])
    space = get_space(info["space"], **options)
    model = space.static_model(space.decode(info["arch"]), nnx.Rngs(0))
    target = nnx.to_pure_dict(nnx.state(model))
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore((path / "model").absolute(), target)
    nnx.replace_by_pure_dict(state := nnx.state(model), restored)
    nnx.update(model, state)
    return lambda images: model(preprocess_recorded(jnp.asarray(images), info["input"]))


def child(way: str, path: Path, n_images: int, out: Path) -> None:
    """One way, timed in this process (a fresh interpreter); writes its figures and logits to ``out``."""
    t0 = time.perf_counter()
    import numpy as np

    if way == "onnx":
        from nas_cli.export.onnx_model import load_onnx as load
    else:
        from nas_cli.export import load_subnet as load
    t_import = time.perf_counter()
    if way == "before":
        predict = _before(path)
    elif way == "onnx":
        predict = load(path).predict
    else:
        predict = load(path, program=way).predict
    t_load = time.perf_counter()
    info = json.loads((path / "subnet.json").read_text())
    side, channels = info["input"]["image_size"], info["input"]["shape"][3]
    images = np.random.default_rng(0).integers(0, 256, (n_images, side, side, channels), dtype=np.uint8)
    first = np.asarray(predict(images))
    t_first = time.perf_counter()
    second = np.asarray(predict(images))
    t_second = time.perf_counter()
    np.save(out.with_suffix(".npy"), second)
    out.write_text(json.dumps({
        "way": way, "import_s": t_import - t0, "load_s": t_load - t_import, "first_predict_s": t_first - t_load,
        "second_predict_s": t_second - t_first, "same_twice": bool(np.array_equal(first, second))}))


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export")
    ap.add_argument("--ways", default=",".join(WAYS))
    ap.add_argument("--images", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    path = Path(args.export).resolve()
    if args.child:
        child(args.child, path, args.images, Path(args.child_out))
        return {}
    ways = args.ways.split(",")
    unknown = sorted(set(ways) - set(WAYS))
    if unknown:
        raise SystemExit(f"error: ways {unknown}: expected some of {', '.join(WAYS)}")
    import numpy as np

    result = {"command": "python bench/load_export.py " + shlex.join(argv if argv is not None else sys.argv[1:]),
              "export": str(path), "images": args.images, "load_before": os.getloadavg()[0], "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        reference = None
        for r in range(args.repeat):
            for way in ways:
                out = Path(tmp) / f"{way}-{r}.json"
                cache = Path(tmp) / f"cache-{way}-{r}"  # empty: a new machine compiles everything
                env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_COMPILATION_CACHE_DIR": str(cache),
                       "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "")}
                start = time.perf_counter()
                subprocess.run([sys.executable, __file__, str(path), "--images", str(args.images), "--child", way,
                                "--child-out", str(out)], env=env, check=True)
                row = {**json.loads(out.read_text()), "total_s": time.perf_counter() - start, "round": r}
                logits = np.load(out.with_suffix(".npy"))
                if reference is None:
                    reference = logits
                row["max_abs_diff"] = float(np.max(np.abs(logits - reference)))
                result["runs"].append(row)
    result["load_after"] = os.getloadavg()[0]
    result["median"] = {way: {k: float(np.median([r[k] for r in result["runs"] if r["way"] == way]))
                              for k in ("import_s", "load_s", "first_predict_s", "second_predict_s", "total_s")}
                        for way in ways}
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
    sys.path.insert(0, str(ROOT))
    main()
