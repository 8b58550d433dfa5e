"""Loading an export fast (issue 34): ``load_subnet`` runs the serialized model.stablehlo, not a
rebuilt NNX model, with the same logits and the same integrity checks; exports without it (or for
another platform) fall back to the NNX model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from nas_cli.errors import UserError


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    from nas_cli.config import TrainConfig
    from nas_cli.export import export_subnet
    from nas_cli.training.supernet import train_supernet

    root = tmp_path_factory.mktemp("export_load")
    cfg = TrainConfig(space="mobilenetv3-tiny", dataset="digits", epochs=1, batch_size=32, limit_train=256)
    train_supernet(cfg, root / "run", log=lambda m: None)
    from nas_cli import runs

    space = runs.open_run(root / "run").space
    export_subnet(root / "run", root / "export", arch=space.encode(space.middle()), format="stablehlo",
                  log=lambda m: None)
    return root / "export"


def _images(n: int, seed: int = 0) -> np.ndarray:
    from nas_cli.data import load_dataset

    return load_dataset("digits").test.images[seed:seed + n]


def test_load_subnet_runs_the_stablehlo_program_with_the_nnx_models_logits(exported: Path):
    from nas_cli.export import load_subnet
    from nas_cli.evaluation.subnet import preprocess_recorded

    fast, slow = load_subnet(exported), load_subnet(exported, program="nnx")
    assert fast.program == "stablehlo" and slow.program == "nnx"
    images = _images(37)
    got = fast.predict(images)
    # the NNX model run as the loader of old ran it: eagerly, on the recorded preprocessing
    eager = np.asarray(slow.model(preprocess_recorded(jnp.asarray(images), slow.info["input"])))
    assert got.shape == (37, 10)
    np.testing.assert_allclose(got, eager, atol=1e-5)
    np.testing.assert_allclose(slow.predict(images), eager, atol=1e-5)
    # batches of any size (padded to a power of two inside) give each image's own logits
    np.testing.assert_allclose(fast.predict(images[:1]), eager[:1], atol=1e-5)
    np.testing.assert_allclose(fast.predict(images[5:8]), eager[5:8], atol=1e-5)
    assert fast.predict(images, names=True) == [fast.class_names[i] for i in eager.argmax(-1)]
    # the NNX model stays reachable from the fast loader (rebuilt from model/ when asked for)
    np.testing.assert_allclose(np.asarray(fast.model(preprocess_recorded(jnp.asarray(images[:4]), fast.info["input"]))),
                               eager[:4], atol=1e-5)


def test_a_damaged_or_missing_stablehlo_file_is_named(exported: Path, tmp_path: Path):
    from nas_cli.export import load_subnet

    exp = tmp_path / "exp"
    shutil.copytree(exported, exp)
    hlo = exp / "model.stablehlo"
    data = bytearray(hlo.read_bytes())
    data[len(data) // 2] ^= 0x01
    hlo.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"model\.stablehlo is damaged"):
        load_subnet(exp)
    hlo.unlink()
    with pytest.raises(UserError, match=r"model\.stablehlo is missing"):
        load_subnet(exp)
    load_subnet(exp, program="nnx")  # the NNX model's files are intact
    with pytest.raises(UserError, match="program 'tflite': expected one of auto, stablehlo, nnx"):
        load_subnet(exp, program="tflite")


def test_an_export_without_stablehlo_loads_the_nnx_model(exported: Path, tmp_path: Path):
    from nas_cli.export import load_subnet

    exp = tmp_path / "exp"
    shutil.copytree(exported, exp)
    (exp / "model.stablehlo").unlink()
    info = json.loads((exp / "subnet.json").read_text())
    del info["files"]["model.stablehlo"]  # what --format onnx records
    (exp / "subnet.json").write_text(json.dumps(info))
    subnet = load_subnet(exp)
    assert subnet.program == "nnx"
    np.testing.assert_allclose(subnet.predict(_images(4)), load_subnet(exported).predict(_images(4)), atol=1e-5)
    with pytest.raises(UserError, match=r"records no model\.stablehlo"):
        load_subnet(exp, program="stablehlo")


def test_a_stablehlo_program_of_another_platform_falls_back_or_is_refused(exported: Path, monkeypatch):
    import jax

    from nas_cli import export

    real = jax.export.deserialize

    class OtherPlatform:
        def __init__(self, exp):
            self._exp = exp
            self.platforms = ("tpu",)

    monkeypatch.setattr(jax.export, "deserialize", lambda blob: OtherPlatform(real(blob)))
    assert export.load_subnet(exported).program == "nnx"
    with pytest.raises(UserError, match=r"exported for tpu, not for this cpu device; load it with program='nnx'"):
        export.load_subnet(exported, program="stablehlo")


def test_an_export_of_the_older_weight_layout_is_refused_in_one_line(exported: Path, tmp_path: Path):
    """Exports written before the static model was derived from the block function hold its weights
    in another pytree: loading them as an NNX model says so instead of failing inside orbax."""
    from nas_cli.export import load_subnet

    exp = tmp_path / "exp"
    shutil.copytree(exported, exp)
    info = json.loads((exp / "subnet.json").read_text())
    assert info["model_layout"] == 2
    del info["model_layout"]
    (exp / "subnet.json").write_text(json.dumps(info))
    with pytest.raises(UserError, match=r"layout 1 of an older version; this one reads layout 2: export the subnet again"):
        load_subnet(exp, program="nnx")
    assert load_subnet(exp).program == "stablehlo"  # the serialized program still loads
