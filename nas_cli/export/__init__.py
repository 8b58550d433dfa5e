"""`nas export subnet`: one subnet as a standalone model (:mod:`.subnet`), its export record and
checksums (:mod:`.record`), and the ONNX model (:mod:`.onnx_model`, loaded only when used: it needs
the optional `onnx` extra).

Each public name of the modules is re-exported here."""

from __future__ import annotations

from nas_cli.export.record import (  # noqa: F401
    SUBNET_JSON,
    export_checksums,
    read_export_info,
    check_export_files,
)
from nas_cli.export.subnet import (  # noqa: F401
    PARITY_TOLERANCE,
    MODEL_CKPT,
    STABLEHLO,
    FORMATS,
    read_front,
    older_measurement,
    latency_protocol,
    measure_export_latency,
    resolve_arch,
    space_options,
    export_subnet,
    QUANTIZE,
    check_quantize,
    export_int8,
    PROGRAMS,
    PREDICT_CHUNK,
    ExportedSubnet,
    load_subnet,
)

#: names of modules that need an optional extra, imported on first use
_LAZY = {"MODEL_ONNX": "onnx_model", "PREPROCESS_KEY": "onnx_model", "CLASS_NAMES_KEY": "onnx_model", "onnx_bytes": "onnx_model", "onnx_logits": "onnx_model", "check_parity": "onnx_model", "write_onnx": "onnx_model", "OnnxSubnet": "onnx_model", "load_onnx": "onnx_model", "MODEL_INT8": "onnx_model", "INT8_MAX_DROP": "onnx_model", "int8_model": "onnx_model", "write_int8": "onnx_model"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ExportedSubnet",
    "FORMATS",
    "MODEL_CKPT",
    "PARITY_TOLERANCE",
    "PREDICT_CHUNK",
    "PROGRAMS",
    "QUANTIZE",
    "STABLEHLO",
    "SUBNET_JSON",
    "check_export_files",
    "check_quantize",
    "export_checksums",
    "export_int8",
    "export_subnet",
    "latency_protocol",
    "load_subnet",
    "measure_export_latency",
    "older_measurement",
    "read_export_info",
    "read_front",
    "resolve_arch",
    "space_options",
]
