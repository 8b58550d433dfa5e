"""Static NNX subnets as ONNX models (jax2onnx) and ONNX Runtime sessions of them.

jax2onnx, onnx and onnxruntime are the optional extra ``onnx`` (``pip install 'nas[onnx]'``); every
function here raises :class:`OnnxUnavailable` naming it when they are missing.
"""

from __future__ import annotations

import contextlib
import platform
import re
import traceback
from typing import Any

import numpy as np
from flax import nnx

from predictors.latency.errors import LatencyError
from predictors.latency.runtime import RUNTIMES

EXTRA = "onnx"
#: the symbolic batch dimension of every exported model
BATCH_DIM = "batch"


class OnnxUnavailable(LatencyError):
    """jax2onnx, onnx or onnxruntime is not installed."""


class OnnxConversionError(LatencyError):
    """The converter cannot express the model in ONNX (the message names the op)."""


def require_onnx() -> tuple[Any, Any, Any]:
    """``(jax2onnx, onnx, onnxruntime)``, or an :class:`OnnxUnavailable` naming the extra to install."""
    try:
        import jax2onnx  # noqa: PLC0415
        import onnx  # noqa: PLC0415
        import onnxruntime  # noqa: PLC0415
    except ImportError as e:
        raise OnnxUnavailable(f"ONNX export and the onnxruntime runtime need jax2onnx, onnx and onnxruntime "
                              f"({e.name} is missing): pip install 'nas[{EXTRA}]'") from None
    return jax2onnx, onnx, onnxruntime


@contextlib.contextmanager
def _converter_workarounds(jax2onnx):
    """Two changes to jax2onnx 0.17.1 for the duration of one conversion (neither changes the
    model it writes for a graph that converts today; another jax2onnx version is left alone):

    * its ``remove_redundant_transpose_pairs`` pass drops the NHWC->NCHW transpose in front of a
      grouped Conv that follows an elementwise chain (mobilenetv3's depthwise convs: the model then
      fails to load, "Incompatible dimensions"). Without that pass the graph is correct;
      onnxruntime's own optimiser removes the redundant transposes when it loads the model.
    * after lowering each equation it checks that the outputs are connected to the graph by
      scanning every node built so far (quadratic: 5 of a full mobilenetv3 subnet's 9 s under a
      profiler). A value whose producing node is in the graph is connected without the scan; any
      other value still goes through the original check. Measured on three full mobilenetv3
      subnets (32 px, after a first conversion, load 11 on 2 cores): 1.9-3.6 s -> 1.5-1.6 s per
      conversion, byte-identical models.
    """
    try:
        from jax2onnx.converter import ir_optimizations as opt  # noqa: PLC0415
        from jax2onnx.converter import output_binding as binding  # noqa: PLC0415
        passes, connected = opt._OPTIMIZER_PASSES, binding._value_is_graph_connected
    except (ImportError, AttributeError):  # another jax2onnx: nothing to work around
        yield
        return

    def produced_in_graph(ctx, value) -> bool:
        producer = value.producer() if hasattr(value, "producer") else None
        if producer is not None and producer.graph is ctx.builder.nodes:
            return True
        return connected(ctx, value)

    opt._OPTIMIZER_PASSES = tuple(p for p in passes if getattr(p, "name", "") != "remove_redundant_transpose_pairs")
    binding._value_is_graph_connected = produced_in_graph
    try:
        yield
    finally:
        opt._OPTIMIZER_PASSES = passes
        binding._value_is_graph_connected = connected


def onnx_form(model: nnx.Module) -> nnx.Module:
    """A copy of ``model`` whose submodules compute with ONNX-friendly ops (each module's
    ``use_onnx_ops()``, e.g. a depthwise conv as one grouped Conv); ``model`` is unchanged."""
    model = nnx.clone(model)
    for _, module in nnx.iter_modules(model):
        if hasattr(module, "use_onnx_ops"):
            module.use_onnx_ops()
    return model


#: the ONNX opset written: 21 is what onnxruntime 1.20 (the declared floor, pyproject.toml) runs;
#: jax2onnx 0.17's default, 23, is refused by onnxruntime before 1.23 ("under development")
ONNX_OPSET = 21


def to_onnx(model: nnx.Module, input_shape: tuple[int, ...], *, name: str = "subnet",
            metadata: dict[str, str] | None = None):
    """``model`` (a static NNX module) as an ``onnx.ModelProto`` with input ``images`` of
    ``input_shape`` (its first axis becomes the symbolic dimension ``batch``) and output ``logits``.

    Raises:
      OnnxUnavailable: the ``onnx`` extra is not installed.
      OnnxConversionError: an op the converter cannot handle (named).
    """
    jax2onnx, onnx, _ = require_onnx()
    spec = [(BATCH_DIM, *input_shape[1:])]
    try:
        with _converter_workarounds(jax2onnx):
            proto = jax2onnx.to_onnx(onnx_form(model), spec, model_name=name, input_names=["images"],
                                     output_names=["logits"], opset=ONNX_OPSET)
    except Exception as e:  # noqa: BLE001  the converter's failures come in many types
        op = _failed_op(e)
        if op is None:
            raise
        raise OnnxConversionError(f"jax2onnx cannot convert op {op!r} of {type(model).__name__}; the static "
                                  "model must avoid it (e.g. lax.switch with 3+ branches, nnx.avg_pool, "
                                  f"antialiased jax.image.resize): {type(e).__name__}: "
                                  f"{(str(e).splitlines() or [''])[0][:200]}") from None
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    return proto


def _failed_op(error: Exception) -> str | None:
    """The op a jax2onnx failure is about: the primitive it has no plugin for, else the plugin
    that raised (``jax2onnx/plugins/jax/lax/cond.py`` -> ``cond``); None for an error of ours."""
    found = re.search(r"primitive '([^']+)'", str(error))
    if found:
        return found.group(1)
    plugin = None
    for frame, _ in traceback.walk_tb(error.__traceback__):
        match = re.search(r"jax2onnx[/\\]plugins[/\\].*?([A-Za-z0-9_]+)\.py$", frame.f_code.co_filename)
        if match:
            plugin = match.group(1)
    return plugin


def session(model_bytes: bytes, *, threads: int = 1):
    """An onnxruntime CPU session of a serialized model: ``threads`` intra-op threads, one inter-op
    thread, sequential execution, every graph optimisation. Returns ``(session, options)`` where
    ``options`` is the JSON record of those settings."""
    _, _, ort = require_onnx()
    if threads < 0:
        raise LatencyError(f"threads {threads}: must be 0 (onnxruntime's default) or more")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # its shape-merge warnings about jax2onnx's annotations are harmless
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1, "execution_mode": "sequential",
               "graph_optimization_level": "all", "providers": ["CPUExecutionProvider"],
               "onnxruntime_version": ort.__version__}
    return sess, options


class OrtRuntime:
    """The ``onnxruntime`` :class:`~predictors.latency.runtime.LatencyRuntime`: each static module
    converted as :func:`to_onnx` exports it (symbolic batch) and run in an onnxruntime CPU session
    (:func:`session`), timed with the interleaved protocol of :mod:`predictors.latency.timing`."""

    name = "onnxruntime"

    def __init__(self, threads: int = 1):
        if threads < 0:
            raise LatencyError(f"threads {threads}: must be 0 (onnxruntime's default) or more")
        self.threads = threads

    def configure(self, *, threads: int | None = None) -> "OrtRuntime":
        return self if threads is None else OrtRuntime(threads)

    def compile(self, model: nnx.Module, input_shape: tuple[int, ...]):
        sess, _ = session(to_onnx(model, input_shape).SerializeToString(), threads=self.threads)
        x = np.zeros(input_shape, np.float32)
        return lambda: sess.run(None, {"images": x})

    def time(self, programs, *, repeats: int, warmup: int, rounds: int) -> list[dict]:
        from predictors.latency.timing import time_calls  # noqa: PLC0415  (timing imports this package's registry)

        return time_calls(programs, repeats=repeats, warmup=warmup, rounds=rounds)

    def dispatch(self, *, batch: int, repeats: int, warmup: int, rounds: int) -> dict:
        _, onnx, _ = require_onnx()
        h = onnx.helper
        graph = h.make_graph([h.make_node("Identity", ["images"], ["logits"])], "dispatch",
                             [h.make_tensor_value_info("images", onnx.TensorProto.FLOAT, [batch, 1])],
                             [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, [batch, 1])])
        sess, _ = session(h.make_model(graph).SerializeToString(), threads=self.threads)
        x = np.zeros((batch, 1), np.float32)
        return self.time([lambda: sess.run(None, {"images": x})], repeats=repeats, warmup=warmup, rounds=rounds)[0]

    def device(self) -> dict:
        return {"platform": "cpu", "kind": f"{platform.machine()} {platform.processor() or ''}".strip()}

    def describe(self) -> dict:
        """What a latency file records of the runtime: its name, version and session options."""
        _, _, ort = require_onnx()
        return {"name": self.name, "version": ort.__version__,
                "session_options": {"intra_op_num_threads": self.threads, "inter_op_num_threads": 1,
                                    "execution_mode": "sequential", "graph_optimization_level": "all",
                                    "providers": ["CPUExecutionProvider"]}}


RUNTIMES.register(OrtRuntime.name, OrtRuntime())


# --- int8 ------------------------------------------------------------------------------------------

#: what :func:`quantize_int8` asks of onnxruntime (recorded beside every int8 model and file)
INT8_SETTINGS = {"method": "onnxruntime.quantization.quantize_static", "quant_format": "QDQ",
                 "activation_type": "QUInt8", "weight_type": "QInt8", "per_channel": True,
                 "calibrate_method": "MinMax"}


class _Batches:
    """onnxruntime's CalibrationDataReader over ``images`` (N, H, W, C) float32, one image at a time."""

    def __init__(self, images: np.ndarray):
        self._it = iter(np.asarray(images, np.float32)[:, None])

    def get_next(self):
        x = next(self._it, None)
        return None if x is None else {"images": x}


def quantize_int8(model_bytes: bytes, images: np.ndarray) -> bytes:
    """``model_bytes`` (a float ONNX model with input ``images``) statically quantized to int8 by
    onnxruntime's own ``quantize_static``: QDQ format, per-channel int8 weights, uint8 activations
    (the x86-64 choice onnxruntime's documentation recommends) whose ranges are calibrated (min/max)
    on ``images`` (preprocessed float32, (N, H, W, C)). No quantization code of ours: this chooses
    the settings (:data:`INT8_SETTINGS`) and runs onnxruntime's shape-inference pre-processing first.

    Raises:
      OnnxUnavailable: the ``onnx`` extra is not installed.
      LatencyError: no calibration images.
    """
    _, onnx, _ = require_onnx()
    import tempfile  # noqa: PLC0415
    from pathlib import Path  # noqa: PLC0415

    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_static  # noqa: PLC0415

    if len(images) < 1:
        raise LatencyError("int8 calibration needs at least 1 image")
    with tempfile.TemporaryDirectory(prefix="nas-int8-") as tmp:
        src, pre, dst = (Path(tmp) / n for n in ("float.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(model_bytes)
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001  the pre-processing is an optimisation; quantize without it
            pre = src
        quantize_static(str(pre), str(dst), _Batches(images), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        model = onnx.load(str(dst))
    return model.SerializeToString()


def random_weights(space, arch, seed: int) -> nnx.Module:
    """``arch``'s static subnet with seeded random weights (:func:`nonzero`), built without running
    initialisers (:func:`predictors.latency.timing.zeros_like_built`)."""
    from predictors.latency.timing import zeros_like_built  # noqa: PLC0415  (timing imports the registry)

    return nonzero(zeros_like_built(lambda: space.static_model(arch, nnx.Rngs(0))), seed)


class OrtInt8Runtime(OrtRuntime):
    """The ``onnxruntime-int8`` runtime: each static module exported as :func:`to_onnx` does, with
    seeded random weights, statically quantized by :func:`quantize_int8` (calibrated on
    :data:`CALIB_IMAGES` seeded random images: latency does not depend on the values), run in the
    same onnxruntime CPU session as ``onnxruntime``."""

    name = "onnxruntime-int8"
    #: calibration images per quantized program (their values only set the ranges)
    CALIB_IMAGES = 4

    def configure(self, *, threads: int | None = None) -> "OrtInt8Runtime":
        return self if threads is None else OrtInt8Runtime(threads)

    def compile(self, model: nnx.Module, input_shape: tuple[int, ...]):
        model = nonzero(model)
        images = np.random.default_rng(0x1A78).normal(size=(self.CALIB_IMAGES, *input_shape[1:])).astype(np.float32)
        blob = quantize_int8(to_onnx(model, input_shape).SerializeToString(), images)
        sess, _ = session(blob, threads=self.threads)
        x = np.zeros(input_shape, np.float32)
        return lambda: sess.run(None, {"images": x})

    def describe(self) -> dict:
        return {**super().describe(), "name": self.name, "quantization": dict(INT8_SETTINGS)}


def nonzero(model: nnx.Module, seed: int = 0) -> nnx.Module:
    """``model`` with its all-zero float arrays (latency measurement builds zero weights) replaced
    by seeded values: uniform in +-0.1, BatchNorm scales and variances in [0.5, 1.5]. Latency does
    not depend on the values; an int8 model's calibration needs real ranges. Other arrays are kept."""
    import jax  # noqa: PLC0415

    graphdef, state = nnx.split(model)
    rng = np.random.default_rng([seed, 0x2E70])

    def fill(path, a):
        a = np.asarray(a)
        if not np.issubdtype(a.dtype, np.floating) or np.any(a):
            return jax.device_put(a)
        keys = [str(k.key) for k in path if hasattr(k, "key")]  # the Variable's own .value is a GetAttrKey
        name = keys[-1] if keys else ""
        lo, hi = (0.5, 1.5) if name in ("scale", "var") else (-0.1, 0.1)
        return jax.device_put(rng.uniform(lo, hi, a.shape).astype(a.dtype))

    return nnx.merge(graphdef, jax.tree_util.tree_map_with_path(fill, state))


RUNTIMES.register(OrtInt8Runtime.name, OrtInt8Runtime())
