"""Exporting one subnet as a standalone static-shape NNX model with its own weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from nas_cli import runs
from nas_cli.errors import UserError
from search_spaces.errors import NasError
from nas_cli.export.record import SUBNET_JSON, check_export_files, export_checksums, read_export_info
from nas_cli.runs.identity import describe
from predictors.files import atomic_write_bytes, atomic_write_json, read_json
from nas_cli.evaluation.subnet import SubnetEvaluator, preprocess_recorded
from nas_cli.data import calibration_images
from search_spaces import get_space
from search_spaces.layers import preprocess

PARITY_TOLERANCE = 1e-4  # float32
MODEL_CKPT = "model"
#: the layout of ``model/``'s weights: 2 since the static model is derived from the space's block
#: function (search_spaces/planned.py); an export without it holds the per-space modules' layout
MODEL_LAYOUT = 2
STABLEHLO = "model.stablehlo"
#: what ``--format`` takes; "all" writes every format
FORMATS = ("onnx", "stablehlo", "all")


def read_front(run_dir: Path, rank: int, search_dir: Path | None) -> dict:
    """The ``rank``-th row of the search's pareto.json (checked before the run is loaded)."""
    pareto = Path(search_dir or Path(run_dir) / "search") / "pareto.json"
    if not pareto.is_file():
        raise UserError(f"--rank needs {pareto}; run `nas search {run_dir} --latency-budget ...` first, "
                        "or pass --arch")
    data = read_json(pareto, "search result", "run `nas search` again to rewrite it, or pass --arch")
    front = data.get("front") if isinstance(data, dict) else None
    if not isinstance(front, list) or not all(isinstance(r, dict) and isinstance(r.get("arch"), str) for r in front):
        raise UserError(f"search result {pareto} is damaged (no list of front rows); run `nas search` again "
                        "to rewrite it, or pass --arch")
    if not 1 <= rank <= len(front):
        raise UserError(f"--rank {rank} is out of range: {pareto} has ranks 1..{len(front)}")
    measurement = data.get("latency_measurement") or older_measurement(pareto.parent)
    return {"arch": front[rank - 1]["arch"], "weights": data.get("weights"), "file": pareto, "row": front[rank - 1],
            "latency_measurement": measurement, "latency_protocol": data.get("latency_protocol")}


def older_measurement(search_dir: Path) -> dict | None:
    """The protocol of a search written before pareto.json recorded it (``latency_measurement``):
    from its latency_calibration.json when it measured here at one level, else None."""
    from nas_cli.evaluation import SEARCH_REPEATS, SEARCH_ROUNDS  # noqa: PLC0415
    from nas_cli.evaluation.supernet import LATENCY_CALIBRATION  # noqa: PLC0415
    from predictors.latency import RUNTIMES, protocol_record  # noqa: PLC0415

    try:
        cal = read_json(search_dir / LATENCY_CALIBRATION, "latency calibration", "")
    except (NasError, OSError):
        return None
    if not isinstance(cal, dict) or cal.get("mode") != "measured" or cal.get("runtime", "jax") not in RUNTIMES.names():
        return None
    return protocol_record(cal.get("runtime", "jax"), rounds=SEARCH_ROUNDS, repeats=SEARCH_REPEATS,
                           references=cal.get("references"), level_ms=cal.get("level_ms"))


def latency_protocol(search: dict | None) -> dict:
    """The protocol the export measures its subnet's latency under: the search's that chose it
    (pareto.json's ``latency_measurement``: runtime, threads, batch, timing, put at the search's
    level; for a latency table's estimate, the table's, at the level its estimates were put at), else
    the search's default (jax, batch 1, interleaved beside the reference subnets, as timed)."""
    from nas_cli.evaluation import SEARCH_REPEATS, SEARCH_ROUNDS  # noqa: PLC0415
    from predictors.latency import RUNTIMES, protocol_record  # noqa: PLC0415

    if search and search.get("source") in ("measured", "table") and \
            (search.get("runtime") or {}).get("name", "jax") in RUNTIMES.names():
        return search
    return protocol_record("jax", rounds=SEARCH_ROUNDS, repeats=SEARCH_REPEATS)


def measure_export_latency(space, a, row: dict | None) -> dict:
    """subnet.json's latency fields: the subnet measured under :func:`latency_protocol`, and, for a
    subnet chosen from a search's front, the search's own figure and protocol beside it."""
    from predictors.latency import measure_as  # noqa: PLC0415

    search = (row or {}).get("latency_measurement")
    m = measure_as(space, [a], latency_protocol(search))[0]
    out = {"latency_ms": m["latency_ms"], "latency_iqr_ms": m["iqr_ms"],
           "latency_protocol": {**m["protocol"], "measured_ms": m["measured_ms"], "level_now_ms": m["level_now_ms"]}}
    if row is not None:
        same = bool(search and search.get("source") == "measured" and m["protocol"]["level_ms"] is not None
                    and m["protocol"]["level_ms"] == search.get("level_ms"))
        out["search_latency"] = {"latency_ms": row["row"].get("latency_ms"), "protocol": search,
                                 "label": row.get("latency_protocol"), "same_protocol": same}
        if "latency_measured_ms" in row["row"]:  # a table search's front, timed for real
            out["search_latency"]["latency_measured_ms"] = row["row"]["latency_measured_ms"]
    return out


def resolve_arch(run: runs.Run, arch: str | None, row: dict | None) -> str:
    """The canonical string named by ``--arch`` or by the pareto.json row of ``--rank``; the row must
    have been measured with the run's weights as they are now."""
    if arch is not None:
        return run.space.canonical(arch)
    if row["weights"] != run.weights:
        raise UserError(f"{row['file']} was searched on {describe(row['weights'])}, but {run.path} now holds "
                        f"{describe(run.weights)}; search again, or pass --arch")
    return run.space.canonical(row["arch"])


def space_options(run: runs.Run) -> dict:
    options = dict(run.space.options)
    options["resolutions"] = list(options["resolutions"])
    return options


def export_subnet(run_dir: Path, out: Path, *, arch: str | None = None, rank: int | None = None,
                  search_dir: Path | None = None, force: bool = False, parity_images: int = 512,
                  format: str = "all", log=print, quantize: str = "none", int8_calib_images: int = 256,
                  int8_max_drop: float = 1.0) -> dict:
    """Extracts a subnet, checks it against the supernet, and writes it to ``out``.

    Writes ``model/`` (orbax checkpoint of the NNX state) and ``subnet.json``, with ``format``
    "stablehlo" ``model.stablehlo`` (a serialized ``jax.export`` with a symbolic batch size,
    runnable without this package), with "onnx" ``model.onnx`` (symbolic batch, preprocessing in its
    metadata, checked in onnxruntime against the supernet), with "all" both.

    With ``quantize="int8"`` also ``model.int8.onnx`` (:func:`export_int8`), its accuracy recorded in
    subnet.json's ``int8``.

    Raises:
      UserError: unknown rank/arch/format, existing output without ``force``, or a parity failure.
      OnnxUnavailable, OnnxConversionError: ONNX asked for without the extra, or an op it lacks.
    """
    if format not in FORMATS:
        raise UserError(f"format {format!r}: expected one of {', '.join(FORMATS)}")
    check_quantize(quantize, format, int8_calib_images, int8_max_drop)
    out = Path(out)
    if (arch is None) == (rank is None):  # the cheap checks first, before the run is loaded
        raise UserError("give exactly one of --arch ARCH or --rank K")
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder to export into")
    if (out / SUBNET_JSON).exists() and not force:
        raise UserError(f"{out} already holds an exported subnet; pass --force to replace it")
    runs.read_config(run_dir)  # a folder that is no run says so first
    row = read_front(run_dir, rank, search_dir) if rank is not None else None
    run = runs.open_run(run_dir, check=(lambda sp: sp.canonical(arch)) if arch is not None else None,
                        without_data=True)
    space, ds = run.space, run.dataset
    arch_str = resolve_arch(run, arch, row)
    a = space.decode(arch_str)
    # an imported run without data (`nas import ofa`): BatchNorm keeps the imported running statistics
    # and the parity check runs on synthetic images; no accuracy is measured
    synthetic = ds.name == "synthetic"
    if synthetic and quantize != "none":
        raise UserError(f"--quantize {quantize} needs data to calibrate and measure; {run_dir} was imported without "
                        "any (import it again with --data-dir), or pass --quantize none")

    evaluator = SubnetEvaluator(space, ds.mean, ds.std)
    if synthetic:
        from nas_cli.importing import stored_stats  # noqa: PLC0415

        stats = stored_stats(run)
        log(f"{run_dir} has no data: BatchNorm uses its imported running statistics, and the parity checks "
            f"run on {len(ds.val)} synthetic (random) images")
    else:
        stats = evaluator.calibrate(run.params, a, calibration_images(ds, run.config.calib_images, run.config.seed))
    model = space.extract(run.params, stats, a)

    # Parity: the standalone model must compute what the supernet computes for this arch.
    # the supernet's validation logits serve both the parity check and the reported accuracy
    val_logits = evaluator.logits(run.params, stats, a, ds.val.images)
    images = ds.val.images[:parity_images]
    expected = val_logits[:parity_images]
    graphdef, state = nnx.split(model)
    forward = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))
    x = preprocess(jnp.asarray(images), a.resolution, jnp.asarray(ds.mean), jnp.asarray(ds.std))
    got = np.asarray(forward(state, x))
    max_diff = float(np.max(np.abs(got - expected)))
    log(f"parity with the supernet on {len(images)} {'synthetic' if synthetic else 'validation'} images: "
        f"max |logit diff| = {max_diff:.3e}")
    if not max_diff <= PARITY_TOLERANCE:
        raise UserError(f"exported model differs from the supernet by {max_diff:.3e} > {PARITY_TOLERANCE:g}; "
                        "nothing was written")

    # one record of the preprocessing: subnet.json's "input" and model.onnx's metadata
    preprocessing = {"shape": ["batch", a.resolution, a.resolution, space.in_channels], "resolution": a.resolution,
                     "preprocess": "x = (uint8 / 255 - mean) / std per channel, resized bilinearly to resolution",
                     "mean": [float(m) for m in ds.mean], "std": [float(v) for v in ds.std],
                     "image_size": ds.image_shape[0]}
    onnx_model, onnx_diff = None, None
    if format in ("onnx", "all"):
        from nas_cli.export import onnx_model as onnx_export  # noqa: PLC0415  (needs the optional extra)

        onnx_model = onnx_export.onnx_bytes(model, np.asarray(x), preprocessing, arch_str,
                                             class_names=list(ds.class_names))
        onnx_diff = onnx_export.check_parity(onnx_model, np.asarray(x), expected, PARITY_TOLERANCE)

    val_acc = None if synthetic else float((val_logits.argmax(-1) == ds.val.labels).mean())
    test_acc = None if synthetic else evaluator.accuracy(run.params, stats, a, ds.test)
    int8 = None
    if quantize == "int8":
        int8 = export_int8(onnx_model, ds, a, run.config.seed, {"accuracy": val_acc, "test_accuracy": test_acc},
                           calib_images=int8_calib_images, max_drop=int8_max_drop, log=log)
    latency = measure_export_latency(space, a, row)
    info = {
        "arch": arch_str,
        "space": space.name,
        "space_options": space_options(run),
        "model_layout": MODEL_LAYOUT,
        "resolution": a.resolution,
        "input": preprocessing,
        "formats": [f for f in ("onnx", "stablehlo") if format in (f, "all")],
        "class_names": list(ds.class_names),
        "accuracy": val_acc,
        "test_accuracy": test_acc,
        **latency,
        "latency_device": jax.devices()[0].device_kind,
        "flops": space.flops(a),
        "params": space.params(a),
        "parity_max_abs_diff": max_diff,
        "parity_inputs": "synthetic" if synthetic else "validation",
        "onnx_parity_max_abs_diff": onnx_diff,
        "run": str(Path(run_dir).resolve()),
        "weights": run.weights,
        "dataset": run.config.dataset,
    }
    if int8 is not None:
        info["int8"] = int8[1]

    out.mkdir(parents=True, exist_ok=True)
    _save_model_state(out / MODEL_CKPT, state)
    if format in ("stablehlo", "all"):
        exported = jax.export.export(jax.jit(lambda x: forward(state, x)))(
            jax.ShapeDtypeStruct(jax.export.symbolic_shape("b") + x.shape[1:], jnp.float32))
        atomic_write_bytes(out / STABLEHLO, exported.serialize())
    if onnx_model is not None:
        from nas_cli.export.onnx_model import write_onnx  # noqa: PLC0415

        write_onnx(out, onnx_model)
    if int8 is not None:
        from nas_cli.export.onnx_model import write_int8  # noqa: PLC0415

        write_int8(out, int8[0])
    written = [MODEL_CKPT] + [name for name, fmt in ((STABLEHLO, "stablehlo"), ("model.onnx", "onnx"))
                              if format in (fmt, "all")]
    if int8 is not None:
        written.append("model.int8.onnx")
    info["files"] = export_checksums(out, written)  # the loaders check what they read against these
    atomic_write_json(out / SUBNET_JSON, info)  # last: its presence marks a complete export
    return info


# --- int8 (issue 33): model.int8.onnx, onnxruntime's static quantization, its accuracy checked ----

#: what ``--quantize`` takes
QUANTIZE = ("none", "int8")


def check_quantize(quantize: str, format: str, calib_images: int, max_drop: float) -> None:
    """Raises a UserError for a quantization the export cannot do (before anything is loaded)."""
    if quantize not in QUANTIZE:
        raise UserError(f"quantize {quantize!r}: expected one of {', '.join(QUANTIZE)}")
    if quantize == "int8" and format not in ("onnx", "all"):
        raise UserError(f"int8 quantization writes model.int8.onnx from model.onnx; format {format!r} writes no "
                        "ONNX model: use format onnx or all")
    if quantize == "int8" and calib_images < 1:
        raise UserError(f"int8 calibration images {calib_images}: need at least 1")
    if not np.isfinite(max_drop) or max_drop < 0:
        raise UserError(f"int8 max accuracy drop {max_drop}: must be a number of points >= 0")


def _preprocessed(images: np.ndarray, a, ds, batch: int = 256) -> np.ndarray:
    """``images`` (uint8) as the model takes them, a batch at a time."""
    mean, std = jnp.asarray(ds.mean), jnp.asarray(ds.std)
    return np.concatenate([np.asarray(preprocess(jnp.asarray(images[i:i + batch]), a.resolution, mean, std))
                           for i in range(0, len(images), batch)])


def export_int8(onnx_model: bytes, ds, a, seed: int, float_accuracy: dict, *, calib_images: int,
                max_drop: float, log=print) -> tuple[bytes, dict]:
    """(model.int8.onnx's bytes, its subnet.json record): ``onnx_model`` quantized by onnxruntime,
    calibrated on ``calib_images`` training images drawn by ``seed``, its accuracy measured in
    onnxruntime on the validation and test splits beside the float model's; a drop of more than
    ``max_drop`` points is said on one line (the export still writes it)."""
    from nas_cli.export.onnx_model import int8_model  # noqa: PLC0415

    calib = _preprocessed(calibration_images(ds, calib_images, seed + 33), a, ds)
    splits = {"accuracy": (_preprocessed(ds.val.images, a, ds), ds.val.labels),
              "test_accuracy": (_preprocessed(ds.test.images, a, ds), ds.test.labels)}
    blob, record = int8_model(onnx_model, calib, splits, float_accuracy, max_drop=max_drop)
    log(f"int8 (onnxruntime, {len(calib)} calibration images): val accuracy {record['accuracy']:.4f} "
        f"(float {float_accuracy['accuracy']:.4f}), test {record['test_accuracy']:.4f} "
        f"(float {float_accuracy['test_accuracy']:.4f})")
    if not record["within_limit"]:
        log(f"warning: int8 accuracy is {record['accuracy_drop_points']:.2f} points below float (limit "
            f"{max_drop:g}); model.int8.onnx is written anyway: export with --quantize none to keep the float "
            "model only")
    return blob, record


def _save_model_state(path: Path, state) -> None:
    """Orbax writes into a temporary folder and renames it on completion; a previous export is only
    removed once the new one is complete."""
    import orbax.checkpoint as ocp

    tmp = path.with_name(path.name + ".new")
    shutil.rmtree(tmp, ignore_errors=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp.absolute(), nnx.to_pure_dict(state))
        ckptr.wait_until_finished()
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


#: what ``load_subnet(program=...)`` takes: "auto" runs model.stablehlo where it was exported for
#: this platform, else the NNX model rebuilt from model/
PROGRAMS = ("auto", "stablehlo", "nnx")
#: ``predict`` pads a batch to the next power of two up to this (and splits larger ones), so that
#: any number of images runs in at most a handful of compiled programs
PREDICT_CHUNK = 256


class ExportedSubnet:
    """An exported subnet ready to predict.

    It runs the serialized program of ``model.stablehlo`` (``jax.export``: deserializing it is
    instant, and its first call compiles one XLA program, preprocessing included) or, for an export
    without one or made for another platform, the NNX model rebuilt from ``model/`` (each
    first call of a layer compiles: a minute on a loaded 2-core CPU, bench/RESULTS.md issue 34).
    Both compute the same logits (parity recorded at export). ``model`` is the NNX model, rebuilt
    from ``model/`` when first asked for.
    """

    def __init__(self, path: Path, info: dict, *, exported=None, model: nnx.Module | None = None):
        self.path, self.info = Path(path), info
        self.exported = exported  # a jax.export.Exported, or None: the NNX model runs
        self._model = model
        self._forward = None

    @property
    def program(self) -> str:
        """What runs: "stablehlo" or "nnx"."""
        return "stablehlo" if self.exported is not None else "nnx"

    @property
    def model(self) -> nnx.Module:
        """The NNX model with its weights (rebuilt from ``model/`` on first use)."""
        if self._model is None:
            self._model = _restore_model(self.path, self.info)
        return self._model

    @property
    def class_names(self) -> list[str]:
        """The class of each logit (exports older than class names: "0", "1", ...)."""
        names = self.info.get("class_names")
        return list(names) if names else [str(i) for i in range(self.info["space_options"]["num_classes"])]

    def _compiled(self):
        """One jitted function of uint8 images -> logits, the recorded preprocessing inside."""
        if self._forward is None:
            record = self.info["input"]
            if self.exported is not None:
                run = self.exported.call
            else:
                graphdef, state = nnx.split(self.model)
                run = lambda x: nnx.merge(graphdef, state)(x)  # noqa: E731
            self._forward = jax.jit(lambda images: run(preprocess_recorded(images, record)))
        return self._forward

    def predict(self, images_uint8: np.ndarray, *, names: bool = False) -> np.ndarray | list[str]:
        """Logits (N, classes) for uint8 images (N, H, W, C), applying the recorded preprocessing
        (per-channel mean/std, resize); with ``names``, the predicted class name of each image."""
        images = np.asarray(images_uint8)
        if images.ndim != 4:
            raise UserError(f"images of shape {images.shape}: expected (N, H, W, C) uint8")
        forward, out = self._compiled(), []
        for start in range(0, len(images), PREDICT_CHUNK):
            chunk = images[start:start + PREDICT_CHUNK]
            n = len(chunk)
            padded = 1 << max(n - 1, 0).bit_length()  # the next power of two: few programs for any N
            if padded > n:
                chunk = np.concatenate([chunk, np.zeros((padded - n, *chunk.shape[1:]), chunk.dtype)])
            out.append(np.asarray(forward(chunk))[:n])
        logits = np.concatenate(out) if out else np.zeros((0, len(self.class_names)), np.float32)
        if names:
            return [self.class_names[i] for i in logits.argmax(-1)]
        return logits


def _restore_model(path: Path, info: dict) -> nnx.Module:
    """The NNX model of an export, its weights restored from ``model/`` (files checked by the caller)."""
    import orbax.checkpoint as ocp

    if info.get("model_layout", 1) != MODEL_LAYOUT:
        formats = [f"model.{f}" for f in info.get("formats", [])]
        other = f" ({' and '.join(formats)} load as before)" if formats else ""
        raise UserError(f"{Path(path) / MODEL_CKPT} holds weights in layout {info.get('model_layout', 1)} of an "
                        f"older version; this one reads layout {MODEL_LAYOUT}: export the subnet again{other}")
    options = dict(info["space_options"])
    options["resolutions"] = tuple(options["resolutions"])
    space = get_space(info["space"], **options)
    from predictors.latency.timing import zeros_like_built  # noqa: PLC0415  (no initialisers run)

    model = zeros_like_built(lambda: space.static_model(space.decode(info["arch"]), nnx.Rngs(0)))
    target = nnx.to_pure_dict(nnx.state(model))
    with ocp.StandardCheckpointer() as ckptr:
        restored = ckptr.restore((Path(path) / MODEL_CKPT).absolute(), target)
    nnx.replace_by_pure_dict(state := nnx.state(model), restored)
    nnx.update(model, state)
    return model


def load_subnet(path: str | Path, *, program: str = "auto") -> ExportedSubnet:
    """An exported subnet from ``nas export subnet``'s folder, its files checked against the
    checksums ``subnet.json`` records.

    ``program``: "auto" (default) deserializes ``model.stablehlo`` when the export has one for this
    JAX platform (loads in well under a second; the first ``predict`` compiles one program), else
    rebuilds the NNX model from ``model/``; "stablehlo" or "nnx" asks for one.

    Raises:
      UserError: a missing or damaged ``subnet.json``, ``model/`` or ``model.stablehlo`` file, naming
        it; an unknown ``program``; "stablehlo" for an export without it or for another platform.
    """
    if program not in PROGRAMS:
        raise UserError(f"program {program!r}: expected one of {', '.join(PROGRAMS)}")
    path = Path(path)
    info = read_export_info(path)
    check_export_files(path, info, MODEL_CKPT)  # the weights, whichever program runs
    has_hlo = STABLEHLO in info["files"]
    if program == "nnx" or (program == "auto" and not has_hlo):
        return ExportedSubnet(path, info, model=_restore_model(path, info))
    if not has_hlo:
        raise UserError(f"{path / SUBNET_JSON} records no {STABLEHLO}; export with --format stablehlo or all")
    check_export_files(path, info, STABLEHLO)
    try:
        exported = jax.export.deserialize(bytearray((path / STABLEHLO).read_bytes()))
    except Exception as e:  # noqa: BLE001 - flatbuffers' and jax's own errors for a foreign file
        raise UserError(f"{path / STABLEHLO} cannot be read by jax {jax.__version__} ({type(e).__name__}: {e}); "
                        "export the subnet again") from None
    platform = jax.devices()[0].platform
    if platform not in exported.platforms:
        if program == "stablehlo":
            raise UserError(f"{path / STABLEHLO} was exported for {', '.join(exported.platforms)}, not for this "
                            f"{platform} device; load it with program='nnx'")
        return ExportedSubnet(path, info, model=_restore_model(path, info))
    return ExportedSubnet(path, info, exported=exported)
