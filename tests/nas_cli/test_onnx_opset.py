"""The exported ONNX model's opset is one the declared onnxruntime floor (pyproject.toml) runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from flax import nnx

from search_spaces import get_space

pytest.importorskip("onnxruntime")


def test_export_writes_the_opset_of_the_declared_onnxruntime_floor():
    from predictors.latency.ort import ONNX_OPSET, to_onnx

    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    floor = re.search(r'"onnxruntime>=(\d+)\.(\d+)', pyproject)
    assert floor is not None
    # onnxruntime 1.20 runs opsets up to 21 (1.20.1 and 1.22.1 refuse 23, measured: bench/RESULTS.md)
    assert (int(floor.group(1)), int(floor.group(2))) >= (1, 20) and ONNX_OPSET <= 21
    space = get_space("resnet-tiny")
    arch = space.smallest()
    proto = to_onnx(space.static_model(arch, nnx.Rngs(0)), (1, arch.resolution, arch.resolution, space.in_channels))
    assert {o.domain: o.version for o in proto.opset_import}[""] == ONNX_OPSET
