"""The vit spaces beyond the conformance suite: end to end through the CLI on vit-tiny, the
resolution/patch checks, position embeddings at the largest grid, and the composed trainer's cache."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from typer.testing import CliRunner

from nas_cli.main import app
from search_spaces import ArchError, get_space
from search_spaces.vit import ViTArch

runner = CliRunner()

TINY_TRAIN = ["--space", "vit-tiny", "--dataset", "digits", "--epochs", "1", "--batch-size", "32",
              "--limit-train", "128", "--calib-images", "64", "--num-random", "1", "--seed", "0"]


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vit") / "run"
    result = invoke("train-supernet", *TINY_TRAIN, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_train_search_export(run_dir: Path, tmp_path: Path):
    record = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert np.isfinite(record["loss"])
    final = json.loads((run_dir / "final.json").read_text())
    assert final["largest"] == "r8-e32-h2m4-h2m4-h2m4" and final["smallest"] == "r8-e16-h1m2"

    result = invoke("search", run_dir, "--latency-budget", "90%", "--population", "6", "--generations", "2",
                    "--seed", "0")
    assert result.exit_code == 0, result.output
    front = json.loads((run_dir / "search" / "pareto.json").read_text())["front"]
    assert front

    out = tmp_path / "export"
    result = invoke("export", "subnet", run_dir, "--rank", "1", "--out", out)
    assert result.exit_code == 0, result.output
    info = json.loads((out / "subnet.json").read_text())
    assert info["arch"] == front[0]["arch"] and info["space"] == "vit-tiny"
    assert info["parity_max_abs_diff"] <= 1e-4

    from nas_cli.export import load_subnet

    subnet = load_subnet(out)
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    assert subnet.predict(images).shape == (4, 10)


def test_bad_vit_arch_names_the_field(run_dir: Path, tmp_path: Path):
    result = runner.invoke(app, ["export", "subnet", str(run_dir), "--arch", "r8-e16-h3m2", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert "layer 1: heads 3 not in {1, 2}" in result.output


def test_resolution_must_be_a_multiple_of_the_patch(tmp_path: Path):
    with pytest.raises(ArchError, match=r"resolution\(s\) 30 are not multiples of the patch size 4"):
        get_space("vit", resolutions=(28, 30))
    with pytest.raises(ArchError, match="vit-tiny has fixed widths"):
        get_space("vit-tiny", width_mult=0.5)
    # through the CLI: a clean one-line error, no traceback (mnist is 28 px: 28 - 4 = 24 is fine,
    # so use a config file's resolutions)
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({"space": "vit-tiny", "resolutions": [7]}))
    result = runner.invoke(app, ["train-supernet", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2, result.output
    assert "not multiples of the patch size 2" in result.output


def test_width_mult_scales_the_embed_choices():
    assert get_space("vit").config.embed_choices == (96, 128, 160)
    assert get_space("vit", width_mult=0.5).config.embed_choices == (48, 64, 80)


def test_largest_grid_uses_the_stored_position_embeddings():
    """At the largest resolution (no resize) the static subnet equals the supernet too, and calib
    mode returns no statistics."""
    space = get_space("vit-tiny", resolutions=(8, 12))
    params = space.init_supernet(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (4, 12, 12, 1))
    arch = ViTArch(12, 24, ((2, 4.0), (1, 2.0)))
    arr = jnp.asarray(space.arch_arrays(arch))
    logits, stats = jax.jit(lambda p, x, a: space.supernet_apply(p, None, x, a, mode="calib"))(params, x, arr)
    assert stats == {}
    static = space.extract(params, stats, arch)
    assert static.stem.pos.shape == (37, 24)
    np.testing.assert_allclose(static(x), logits, rtol=0, atol=1e-4)


def test_composed_trainer_reuses_layer_variants():
    """Layers of equal (embed, heads, mlp) share one compiled variant, whatever their position."""
    space = get_space("vit-tiny")
    params = space.init_supernet(jax.random.key(0))
    trainer = space.make_trainer(0.4, 0.3, 0.0, "xla")
    images = jnp.zeros((4, 8, 8, 1), jnp.uint8)
    labels = jnp.zeros((4,), jnp.int32)
    grads = jax.tree.map(jnp.zeros_like, params)
    _, _, grads = trainer.accumulate_grad(params, grads, space.decode("r8-e16-h1m2-h2m4"), images, labels)
    seen = trainer.num_compiled()
    _, _, grads = trainer.accumulate_grad(params, grads, space.decode("r8-e16-h2m4-h1m2"), images, labels)
    assert trainer.num_compiled() == seen
    # depth 2: the third layer was never active: no gradient reaches it
    assert not np.any(np.asarray(grads["layers"]["fc1"]["w"][2]))
    with pytest.raises(ArchError, match="no Pallas formulation"):
        space.make_trainer(0.4, 0.3, 0.0, "pallas")


def test_static_model_is_plain_nnx():
    space = get_space("vit-tiny")
    model = space.static_model(space.largest(), nnx.Rngs(0))
    n = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nnx.state(model, nnx.Param)))
    assert n == space.params(space.largest())
