"""ONNX export: every -tiny space converts, runs in onnxruntime like the JAX static model, reloads;
an op the converter lacks and a missing extra are one clear error each."""

from __future__ import annotations

import builtins
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from typer.testing import CliRunner

from nas_cli.main import app
from search_spaces import get_space
from search_spaces.layers import preprocess

pytest.importorskip("onnxruntime")

# mobilenetv3-tiny (the default space) is exported with its trained weights by test_cli_export_writes_checked_onnx
TINY_SPACES = ["resnet-tiny", "vit-tiny"]


@pytest.mark.parametrize("name", TINY_SPACES)
def test_tiny_space_exports_to_onnx_with_parity_and_reloads(name: str, tmp_path: Path):
    from nas_cli.export.onnx_model import check_parity, load_onnx, onnx_bytes, write_onnx

    space = get_space(name)
    arch = space.largest()
    model = space.static_model(arch, nnx.Rngs(0))
    r = arch.resolution
    images = np.random.default_rng(0).integers(0, 256, (5, r + 2, r + 2, space.in_channels), dtype=np.uint8)
    x = np.asarray(preprocess(jnp.asarray(images), r, 0.3, 0.4))
    expected = np.asarray(model(jnp.asarray(x)))
    prep = {"resolution": r, "mean": 0.3, "std": 0.4}
    blob = onnx_bytes(model, x, prep, space.encode(arch))
    assert check_parity(blob, x, expected, 1e-4) <= 1e-4
    write_onnx(tmp_path, blob)
    loaded = load_onnx(tmp_path)
    assert loaded.arch == space.encode(arch) and loaded.preprocessing == prep
    np.testing.assert_allclose(loaded.predict(images), expected, atol=1e-4)
    # the batch dimension is symbolic
    assert loaded.session.get_inputs()[0].shape[0] == "batch"
    assert loaded.predict(images[:1]).shape == (1, expected.shape[1])
    # no class names recorded anywhere: numbered, as the JAX export's predict numbers them
    assert loaded.predict(images, names=True) == [str(i) for i in expected.argmax(-1)]
    classes = [f"class-{i}" for i in range(expected.shape[1])]
    write_onnx(tmp_path, onnx_bytes(model, x, prep, space.encode(arch), class_names=classes))
    assert load_onnx(tmp_path).predict(images, names=True) == [classes[i] for i in expected.argmax(-1)]


def test_parity_failure_writes_nothing(tmp_path: Path):
    from nas_cli.errors import UserError
    from nas_cli.export.onnx_model import check_parity, onnx_bytes

    space = get_space("resnet-tiny")
    arch = space.smallest()
    model = space.static_model(arch, nnx.Rngs(0))
    x = np.zeros((2, arch.resolution, arch.resolution, space.in_channels), np.float32)
    blob = onnx_bytes(model, x, {}, space.encode(arch))
    with pytest.raises(UserError, match="differs from the supernet by"):
        check_parity(blob, x, np.asarray(model(jnp.asarray(x))) + 1.0, 1e-4)


class _ThreeWaySwitch(nnx.Module):
    def __call__(self, x):
        return jax.lax.switch(jnp.int32(1), [lambda v: v, lambda v: v * 2.0, lambda v: v - 1.0], x)


def test_an_op_the_converter_lacks_is_named():
    from predictors.latency.ort import OnnxConversionError, to_onnx

    # jax2onnx 0.17.1 has no 3+-branch lax.switch (its cond plugin fails on it)
    with pytest.raises(OnnxConversionError, match="cannot convert op 'cond' of _ThreeWaySwitch"):
        to_onnx(_ThreeWaySwitch(), (1, 4))


def test_missing_extra_names_it(monkeypatch):
    from predictors.latency.ort import OnnxUnavailable, require_onnx

    real = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name == "onnxruntime":
            raise ImportError("No module named 'onnxruntime'", name="onnxruntime")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    with pytest.raises(OnnxUnavailable, match=r"onnxruntime is missing.*pip install 'nas\[onnx\]'"):
        require_onnx()


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx_run") / "digits"
    train = CliRunner().invoke(app, ["train-supernet", "--dataset", "digits", "--epochs", "1", "--batch-size", "32",
                                     "--limit-train", "128", "--calib-images", "32", "--seed", "0", "--out", str(out)],
                               catch_exceptions=False)
    assert train.exit_code == 0, train.output
    return out


def test_cli_export_writes_checked_onnx(run: Path, tmp_path: Path):
    runner = CliRunner()
    from nas_cli import runs

    space = runs.open_run(run).space
    arch = space.encode(space.largest())
    out = tmp_path / "export"
    result = runner.invoke(app, ["export", "subnet", str(run), "--arch", arch, "--out", str(out), "--format", "onnx"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "subnet.json").read_text())
    assert info["formats"] == ["onnx"] and not (out / "model.stablehlo").exists()
    assert info["onnx_parity_max_abs_diff"] <= 1e-4 and "model.onnx parity" in result.output
    from nas_cli.data import load_dataset
    from nas_cli.export.onnx_model import load_onnx

    test = load_dataset("digits").test
    acc = float((load_onnx(out).predict(test.images).argmax(-1) == test.labels).mean())
    assert acc == pytest.approx(info["test_accuracy"], abs=0.01)
    # class names in model.onnx's own metadata (a model.onnx copied alone keeps them), the same as the
    # JAX export's predict gives
    import onnx

    from nas_cli.export import load_subnet
    from nas_cli.export.onnx_model import CLASS_NAMES_KEY

    meta = {p.key: p.value for p in onnx.load(out / "model.onnx").metadata_props}
    assert json.loads(meta[CLASS_NAMES_KEY]) == info["class_names"]
    names = load_onnx(out).predict(test.images[:8], names=True)
    assert names == load_subnet(out).predict(test.images[:8], names=True)
    assert set(names) <= set(info["class_names"])
    bad = runner.invoke(app, ["export", "subnet", str(run), "--arch", arch, "--out", str(tmp_path / "e2"),
                              "--format", "tflite"])
    assert bad.exit_code == 2 and "format 'tflite'" in bad.output


def _latency(*args):
    return CliRunner().invoke(app, ["latency", *map(str, args)])


FAST_TIMING = ["--repeats", "1", "--rounds", "2", "--calib-samples", "0"]


def test_latency_profile_and_validate_in_onnxruntime(tmp_path: Path):
    lut = tmp_path / "ort.json"
    result = _latency("profile", "--space", "vit-tiny", "--out", lut, "--runtime", "onnxruntime", "--threads", "1",
                      *FAST_TIMING)
    assert result.exit_code == 0, result.output
    data = json.loads(lut.read_text())
    assert data["runtime"]["name"] == "onnxruntime"
    assert data["runtime"]["session_options"]["intra_op_num_threads"] == 1
    assert all(e["median_ms"] > 0 for e in data["entries"].values())
    result = _latency("validate", lut, "--space", "vit-tiny", "--runtime", "onnxruntime", "--samples", "3",
                      "--repeats", "1", "--rounds", "2", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["runtime"]["name"] == "onnxruntime" and np.isfinite(report["mape"])


def test_latency_file_of_another_runtime_is_refused(tmp_path: Path):
    lut = tmp_path / "jax.json"
    result = _latency("profile", "--space", "vit-tiny", "--out", lut, *FAST_TIMING)
    assert result.exit_code == 0, result.output
    assert json.loads(lut.read_text())["runtime"]["name"] == "jax"
    bad = _latency("validate", lut, "--space", "vit-tiny", "--runtime", "onnxruntime", "--samples", "2")
    assert bad.exit_code == 2
    assert "measured with runtime 'jax'; it cannot stand for runtime 'onnxruntime'" in bad.output
    threads = _latency("profile", "--space", "vit-tiny", "--out", tmp_path / "x.json", "--threads", "2")
    assert threads.exit_code == 2 and "takes no thread count" in threads.output


@pytest.mark.slow
def test_search_measures_latency_in_onnxruntime(run: Path, tmp_path: Path):
    out = tmp_path / "search"
    result = CliRunner().invoke(app, ["search", str(run), "--latency-budget", "100%", "--population", "2",
                                      "--generations", "1", "--latency-runtime", "onnxruntime", "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((out / "latency_calibration.json").read_text())["runtime"] == "onnxruntime"


def test_search_refuses_a_table_of_another_runtime(run: Path, tmp_path: Path):
    lut = tmp_path / "jax.json"
    assert _latency("profile", "--space", "mobilenetv3-tiny", "--out", lut, *FAST_TIMING).exit_code == 0
    bad = CliRunner().invoke(app, ["search", str(run), "--latency-budget", "100%", "--population", "2",
                                   "--generations", "1", "--latency-runtime", "onnxruntime", "--latency-table", str(lut),
                                   "--out", str(tmp_path / "s")])
    assert bad.exit_code == 2 and "measured with runtime 'jax'" in bad.output


# --- int8 export (issue 33) ------------------------------------------------------------------------

@pytest.fixture(scope="module", params=["mobilenetv3-tiny", "resnet-tiny", "vit-tiny"])
def tiny_run(request, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8_run") / request.param
    train = CliRunner().invoke(app, ["train-supernet", "--dataset", "digits", "--space", request.param, "--epochs", "1",
                                     "--batch-size", "32", "--limit-train", "256", "--calib-images", "32", "--seed",
                                     "0", "--out", str(out)], catch_exceptions=False)
    assert train.exit_code == 0, train.output
    return out


def test_int8_export_of_every_tiny_space_records_its_accuracy(tiny_run: Path, tmp_path: Path):
    from nas_cli import runs
    from nas_cli.data import load_dataset
    from nas_cli.export.onnx_model import load_onnx

    space = runs.open_run(tiny_run).space
    arch = space.encode(space.largest())
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["export", "subnet", str(tiny_run), "--arch", arch, "--out", str(out), "--format",
                                      "onnx", "--quantize", "int8", "--int8-calib-images", "64"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "subnet.json").read_text())
    int8 = info["int8"]
    assert int8["file"] == "model.int8.onnx" and (out / "model.int8.onnx").is_file() and (out / "model.onnx").is_file()
    assert int8["calibration_images"] == 64 and int8["quantization"]["quant_format"] == "QDQ"
    assert "int8 (onnxruntime, 64 calibration images)" in result.output
    # the recorded accuracy is the int8 model's own, in onnxruntime, on the test split
    test = load_dataset("digits").test
    loaded = load_onnx(out / "model.int8.onnx")
    acc = float((loaded.predict(test.images).argmax(-1) == test.labels).mean())
    assert acc == pytest.approx(int8["test_accuracy"], abs=1e-6)
    drop = 100 * max(info["accuracy"] - int8["accuracy"], info["test_accuracy"] - int8["test_accuracy"])
    assert int8["accuracy_drop_points"] == pytest.approx(drop)
    assert int8["within_limit"] == (drop <= 1.0)
    assert ("--quantize none to keep the float model only" in result.output) == (not int8["within_limit"])
    # QDQ: the graph holds onnxruntime's quantize/dequantize pairs, not our own arithmetic
    import onnx

    ops = {n.op_type for n in onnx.load(out / "model.int8.onnx").graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_int8_needs_an_onnx_model_and_a_known_quantization(run: Path, tmp_path: Path):
    runner = CliRunner()
    bad = runner.invoke(app, ["export", "subnet", str(run), "--rank", "1", "--out", str(tmp_path / "e"),
                              "--format", "stablehlo", "--quantize", "int8"])
    assert bad.exit_code == 2 and "writes no ONNX model" in bad.output
    bad = runner.invoke(app, ["export", "subnet", str(run), "--rank", "1", "--out", str(tmp_path / "e"),
                              "--quantize", "int4"])
    assert bad.exit_code == 2 and "quantize 'int4'" in bad.output
