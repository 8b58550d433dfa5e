"""The fused training-mode BatchNorm (search_spaces.layers.batch_norm_train): the gradient of the
textbook formula, and one cross-device reduction forward and one backward under a sharded batch.

The reduction count needs fake devices, which XLA_FLAGS must ask for before JAX starts: that case
runs this file as a script in a fresh 4-device process and reads its JSON answer.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from search_spaces.layers import batch_norm, batch_norm_reference

ROOT = Path(__file__).resolve().parents[2]
_COLLECTIVE = re.compile(r" (all-reduce|all-gather|reduce-scatter|collective-permute|all-to-all)(?:-start)?\(")
C, FULL = 12, 16  # active channels of full-size parameters


def _inputs(dtype, shift: float = 1.5):
    k = jax.random.split(jax.random.key(0), 4)
    x = jax.random.normal(k[0], (6, 5, 5, C), dtype) * 2.0 + shift  # (B, H, W, C)
    p = {"scale": jax.random.normal(k[1], (FULL,), dtype), "bias": jax.random.normal(k[2], (FULL,), dtype)}
    w = jax.random.normal(k[3], x.shape, dtype)
    return p, x, w


def _loss(bn, mode: str, w):
    """A scalar of the output and (calibration) of the statistics, so every cotangent is non-zero."""

    def loss(p, x):
        y, stats = bn(x, p, None, C, mode)
        out = jnp.sum(jnp.sin(y) * w)
        if stats is not None:
            out = out + jnp.sum(jnp.cos(stats["mean"])) + jnp.sum(jnp.square(stats["var"]))
        return out

    return loss


@pytest.mark.parametrize("mode", ["train", "calib"])
def test_gradient_is_the_plain_formulas_float64(mode):
    with jax.enable_x64(True):
        p, x, w = _inputs(jnp.float64)
        got = jax.grad(_loss(batch_norm, mode, w), (0, 1))(p, x)
        want = jax.grad(_loss(batch_norm_reference, mode, w), (0, 1))(p, x)
        for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
            np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-10, atol=1e-12)
        np.testing.assert_array_equal(np.asarray(got[0]["scale"][C:]), 0.0)  # inactive channels


def test_float32_forward_and_gradient_close_to_the_plain_formula():
    p, x, w = _inputs(jnp.float32)
    y, stats = batch_norm(x, p, None, C, "calib")
    y_ref, stats_ref = batch_norm_reference(x, p, None, C, "calib")
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats["var"]), np.asarray(stats_ref["var"]), rtol=1e-5)
    got = jax.grad(_loss(batch_norm, "train", w), (0, 1))(p, x)
    want = jax.grad(_loss(batch_norm_reference, "train", w), (0, 1))(p, x)
    for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=0, atol=1e-4 * float(jnp.max(jnp.abs(r))))


@pytest.mark.parametrize("shift", [0.0, 3.0, 10.0])
def test_one_pass_variance_conditioning(shift):
    """E[x^2] - E[x]^2 in float32 loses ~eps * mean^2 / var of relative accuracy (the price of
    one reduction); bounded here for |mean| up to 5 standard deviations."""
    _, x, _ = _inputs(jnp.float32, shift)
    _, stats = batch_norm(x, {"scale": jnp.ones(FULL), "bias": jnp.zeros(FULL)}, None, C, "calib")
    x64 = np.asarray(x, np.float64)
    var64 = x64.reshape(-1, C).var(0)
    mean64 = x64.reshape(-1, C).mean(0)
    err = np.abs(np.asarray(stats["var"][:C], np.float64) - var64)
    assert np.all(err <= 1e-6 * (var64 + mean64**2)), (err / var64).max()


def test_one_all_reduce_forward_and_backward_per_batch_norm():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, __file__], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["devices"] == 4
    assert res["fused"] == {"forward": 1, "backward": 1}, res
    assert res["plain"]["forward"] == 2, res  # the contrast: mean, then the variance around it


def _count_collectives() -> dict:
    """Collectives in the compiled forward and backward of one BatchNorm, batch sharded over 4 devices."""
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()), ("data",))
    p, x, _ = _inputs(jnp.float32)
    x = jax.device_put(jnp.concatenate([x, x[:2]]), NamedSharding(mesh, P("data")))  # batch 8

    def count(fn, *args):
        return len(_COLLECTIVE.findall(jax.jit(fn).lower(*args).compile().as_text()))

    out = {"devices": len(jax.devices())}
    for name, bn in (("fused", batch_norm), ("plain", batch_norm_reference)):
        def f(p, x):
            return bn(x, p, None, C, "train")[0]

        y, pullback = jax.vjp(f, p, x)  # the composed trainer's split: forward and backward programs
        out[name] = {"forward": count(f, p, x), "backward": count(lambda pb, g: pb(g), pullback, y)}
    return out


if __name__ == "__main__":
    print(json.dumps(_count_collectives()))
