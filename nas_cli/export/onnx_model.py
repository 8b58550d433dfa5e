"""The ONNX form of an exported subnet: ``model.onnx`` checked in onnxruntime, and reloading it.

The model takes the preprocessed images (float32 (batch, R, R, C), normalised and resized as
``subnet.json`` and the model's metadata say) and returns the logits; the batch is symbolic.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from nas_cli.errors import UserError
from predictors.files import atomic_write_bytes
from predictors.latency.ort import session, to_onnx

MODEL_ONNX = "model.onnx"
#: the metadata key holding the JSON preprocessing record (``subnet.json``'s "input")
PREPROCESS_KEY = "nas.preprocess"
#: the metadata key holding the JSON list of class names, one per logit
CLASS_NAMES_KEY = "nas.class_names"


def onnx_bytes(model, x: np.ndarray, preprocessing: dict, arch: str, class_names=None) -> bytes:
    """``model`` converted for inputs shaped like ``x`` (batch symbolic), its preprocessing,
    architecture and (when given) class names in the metadata."""
    metadata = {PREPROCESS_KEY: json.dumps(preprocessing), "nas.arch": arch}
    if class_names is not None:
        metadata[CLASS_NAMES_KEY] = json.dumps([str(c) for c in class_names])
    proto = to_onnx(model, tuple(x.shape), metadata=metadata)
    return proto.SerializeToString()


def onnx_logits(model_bytes: bytes, x: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """The model's logits in onnxruntime for preprocessed inputs ``x``."""
    sess, _ = session(model_bytes, threads=0)
    out = [sess.run(None, {"images": np.ascontiguousarray(x[i:i + batch_size], np.float32)})[0]
           for i in range(0, len(x), batch_size)]
    return np.concatenate(out)


def check_parity(model_bytes: bytes, x: np.ndarray, expected: np.ndarray, tolerance: float) -> float:
    """Max |logit diff| between onnxruntime and ``expected``.

    Raises:
      UserError: above ``tolerance`` (nothing is written).
    """
    got = onnx_logits(model_bytes, x)
    max_diff = float(np.max(np.abs(got - expected)))
    if not max_diff <= tolerance:
        raise UserError(f"model.onnx in onnxruntime differs from the supernet by {max_diff:.3e} > {tolerance:g}; "
                        "nothing was written")
    return max_diff


def write_onnx(out: Path, model_bytes: bytes) -> None:
    atomic_write_bytes(Path(out) / MODEL_ONNX, model_bytes)


@dataclasses.dataclass
class OnnxSubnet:
    """An exported ``model.onnx`` in an onnxruntime session, with its recorded preprocessing."""

    session: object
    preprocessing: dict
    arch: str
    #: the class of each logit: the model's metadata, else the export folder's subnet.json; None
    #: when neither records them (then ``predict(names=True)`` numbers the classes "0", "1", ...)
    recorded_class_names: list[str] | None = None

    def predict(self, images_uint8: np.ndarray, *, names: bool = False) -> np.ndarray | list[str]:
        """Logits (N, classes) for uint8 images (N, H, W, C), applying the preprocessing recorded in
        the model; with ``names``, the predicted class name of each image (as the JAX export's
        ``load_subnet(...).predict`` gives them)."""
        from nas_cli.evaluation.subnet import preprocess_recorded  # noqa: PLC0415

        x = np.asarray(preprocess_recorded(images_uint8, self.preprocessing))
        logits = self.session.run(None, {"images": x})[0]
        if names:
            classes = self.recorded_class_names or [str(i) for i in range(logits.shape[-1])]
            return [classes[i] for i in logits.argmax(-1)]
        return logits


def load_onnx(path: str | Path, *, threads: int = 0) -> OnnxSubnet:
    """``model.onnx`` of an export folder (or the file itself) ready to run in onnxruntime. Beside
    the export's ``subnet.json``, the file is checked against the checksum recorded there; a lone
    ``model.onnx`` (no ``subnet.json`` beside it) is only checked to parse.

    Raises:
      UserError: a missing, damaged or unparsable ``model.onnx`` or ``subnet.json``, naming it.
    """
    path = Path(path)
    file = path / MODEL_ONNX if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"{path} holds no {MODEL_ONNX}; export with `nas export subnet --format onnx`")
    if (file.parent / "subnet.json").exists():
        from nas_cli.export.record import check_export_files, read_export_info  # noqa: PLC0415

        check_export_files(file.parent, read_export_info(file.parent), file.name)
    from predictors.latency.ort import require_onnx  # noqa: PLC0415

    onnx = require_onnx()[1]
    try:
        meta = {p.key: p.value for p in onnx.load(str(file), load_external_data=False).metadata_props}
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and onnx's own, for a cut or foreign file
        raise UserError(f"{file} is not a readable ONNX model ({type(e).__name__}); export the subnet again") from None
    if PREPROCESS_KEY not in meta:
        raise UserError(f"{file} records no preprocessing ({PREPROCESS_KEY}); it was not written by `nas export`")
    sess, _ = session(file.read_bytes(), threads=threads)
    return OnnxSubnet(sess, json.loads(meta[PREPROCESS_KEY]), meta.get("nas.arch", ""), _class_names(meta, file))


def _class_names(meta: dict, file: Path) -> list[str] | None:
    """The class names in the model's metadata, else in the ``subnet.json`` beside it, else None."""
    if CLASS_NAMES_KEY in meta:
        return list(json.loads(meta[CLASS_NAMES_KEY]))
    beside = file.parent / "subnet.json"
    try:
        names = json.loads(beside.read_text()).get("class_names")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(n) for n in names] if names else None


# --- int8: onnxruntime's static quantization of model.onnx, with its accuracy measured ----------

MODEL_INT8 = "model.int8.onnx"
#: default largest accuracy drop (points) of the int8 model below the float one before the export warns
INT8_MAX_DROP = 1.0


def int8_model(model_bytes: bytes, calib_x: np.ndarray, splits: dict, float_accuracy: dict, *,
               max_drop: float = INT8_MAX_DROP) -> tuple[bytes, dict]:
    """``model_bytes`` quantized to int8 by onnxruntime (:func:`predictors.latency.ort.quantize_int8`,
    calibrated on ``calib_x``, preprocessed training images), and its record for subnet.json: the
    settings, the calibration size, its accuracy in onnxruntime on each of ``splits`` (name ->
    (preprocessed images, labels)) beside ``float_accuracy`` (name -> accuracy), the largest drop in
    points and whether it is within ``max_drop``. The float model's metadata is copied."""
    from predictors.latency.ort import INT8_SETTINGS, quantize_int8, require_onnx  # noqa: PLC0415

    onnx = require_onnx()[1]
    blob = quantize_int8(model_bytes, calib_x)
    quantized = onnx.load_from_string(blob)
    have = {p.key for p in quantized.metadata_props}
    for prop in onnx.load_from_string(model_bytes).metadata_props:
        if prop.key not in have:
            entry = quantized.metadata_props.add()
            entry.key, entry.value = prop.key, prop.value
    quantized.metadata_props.add(key="nas.quantization", value=json.dumps(INT8_SETTINGS))
    blob = quantized.SerializeToString()
    record = {"file": MODEL_INT8, "quantization": dict(INT8_SETTINGS), "calibration_images": int(len(calib_x))}
    drops = []
    for name, (x, labels) in splits.items():
        acc = float((onnx_logits(blob, x).argmax(-1) == np.asarray(labels)).mean())
        record[name] = acc
        drops.append((float(float_accuracy[name]) - acc) * 100.0)
    record["accuracy_drop_points"] = max(drops) if drops else 0.0
    record["max_drop_points"] = float(max_drop)
    record["within_limit"] = bool(record["accuracy_drop_points"] <= max_drop)
    return blob, record


def write_int8(out: Path, model_bytes: bytes) -> None:
    atomic_write_bytes(Path(out) / MODEL_INT8, model_bytes)
