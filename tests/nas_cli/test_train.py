"""Training recipes: sampler bounds, progressive-shrinking phases, determinism per seed."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import optax
import pytest

from nas_cli.config import TrainConfig
from nas_cli.errors import UserError
from nas_cli.training.supernet import TrainState, init_sampler, sample_subnet, train_step, training_phase, train_supernet
from search_spaces import get_space


def _space():
    return get_space("mobilenetv3-tiny", in_channels=1, num_classes=10)


def _samples(space, state, rng, n):
    archs = []
    for _ in range(n):
        arch, state = sample_subnet(space, state, rng)
        archs.append(arch)
    return archs


def test_complexity_sampler_bounds_the_flops_jump():
    space = _space()
    lo, hi = space.flops(space.smallest()), space.flops(space.largest())
    sampler = init_sampler(space, "complexity", max_jump=0.2)
    flops = [space.flops(a) for a in _samples(space, sampler, np.random.default_rng(0), 200)]
    jumps = np.abs(np.diff(flops)) / (hi - lo)
    assert np.mean(jumps <= 0.2) > 0.95  # up to 50 redraws per sample; rare misses allowed
    uniform = init_sampler(space, "uniform", max_jump=0.2)
    u = [space.flops(a) for a in _samples(space, uniform, np.random.default_rng(0), 200)]
    assert np.mean(np.abs(np.diff(u)) / (hi - lo)) > np.mean(jumps)


def test_sampler_is_a_pure_function_of_state_and_rng():
    space = _space()
    state = init_sampler(space, "complexity", max_jump=0.2)
    first = _samples(space, state, np.random.default_rng(5), 30)
    assert _samples(space, state, np.random.default_rng(5), 30) == first  # the state was not changed


def test_progressive_phases_free_genes_in_ofa_order():
    cfg = TrainConfig(recipe="progressive", epochs=8)
    assert [training_phase(cfg, e, _space()) for e in range(8)] == \
        ["largest"] * 2 + ["kernel"] * 2 + ["depth"] * 2 + ["width"] * 2
    space = _space()
    sampler = init_sampler(space, "uniform", 1.0)._replace(genes_free=("kernel",))
    for arch in _samples(space, sampler, np.random.default_rng(0), 20):
        assert arch.depths == space.largest().depths
        assert all(e == max(space.config.expand_choices) for stage in arch.stages for _, e in stage)
    assert training_phase(TrainConfig(recipe="sandwich", epochs=8), 3, _space()) == "all"


def test_train_step_is_the_subnet_loss_and_one_update():
    space = _space()
    trainer = space.make_trainer(0.5, 0.25, 0.1, "xla")
    params = space.init_supernet(jax.random.key(0))
    rng = np.random.default_rng(0)
    side = space.largest().resolution
    images = rng.integers(0, 256, (8, side, side, 1), dtype=np.uint8)
    labels = rng.integers(0, 10, 8).astype(np.int32)
    zeros = jax.tree.map(np.zeros_like, params)
    alone, _, _ = trainer.accumulate_grad(params, zeros, space.largest(), images, labels)
    state = TrainState.create(jax.tree.map(np.array, params), optax.sgd(0.1))
    after, metrics = train_step(state, trainer, [space.largest()], (images, labels))
    assert float(metrics["loss"]) == float(alone)  # one arch: exactly its loss, no distillation
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(after.params))]
    assert any(moved) and jax.tree.structure(after.params) == jax.tree.structure(params)
    assert after.tx is state.tx


def test_training_is_deterministic_per_seed(tmp_path):
    cfg = TrainConfig(epochs=1, batch_size=32, limit_train=96, calib_images=64, seed=3)
    a = train_supernet(cfg, tmp_path / "a", log=lambda m: None)
    b = train_supernet(cfg, tmp_path / "b", log=lambda m: None)
    assert a == b
    la = json.loads((tmp_path / "a" / "metrics.jsonl").read_text())
    lb = json.loads((tmp_path / "b" / "metrics.jsonl").read_text())
    for key in ("loss", "val_acc_largest", "val_acc_smallest"):
        assert la[key] == lb[key]


@pytest.mark.slow  # four epochs of training
def test_progressive_recipe_runs_and_sorts_channels(tmp_path):
    cfg = TrainConfig(epochs=4, batch_size=32, limit_train=64, calib_images=64, recipe="progressive",
                      sampler="complexity")
    train_supernet(cfg, tmp_path / "p", log=lambda m: None)
    phases = [json.loads(line)["phase"] for line in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert phases == ["largest", "kernel", "depth", "width"]


class _Interrupt(Exception):
    pass


def test_resume_after_interruption_ends_where_an_uninterrupted_run_does(tmp_path):
    cfg = TrainConfig(epochs=2, batch_size=32, limit_train=96, calib_images=64, seed=1)
    whole = train_supernet(cfg, tmp_path / "whole", log=lambda m: None)

    def stop_in_second_epoch(done, total):
        if done > total // 2:
            raise _Interrupt

    with pytest.raises(_Interrupt):
        train_supernet(cfg, tmp_path / "cut", progress=stop_in_second_epoch, log=lambda m: None)
    assert not (tmp_path / "cut" / "final.json").exists()
    with pytest.raises(UserError, match="--resume"):  # never silently overwrites a run
        train_supernet(cfg, tmp_path / "cut", log=lambda m: None)
    with pytest.raises(UserError, match="seed: 1 in the run, 2 now"):
        train_supernet(dataclasses.replace(cfg, seed=2), tmp_path / "cut", log=lambda m: None, resume=True)
    with open(tmp_path / "cut" / "metrics.jsonl", "a") as f:  # a line cut by a crash mid-write
        f.write('{"epoch": 2, "phase": "al')
    resumed = train_supernet(cfg, tmp_path / "cut", log=lambda m: None, resume=True)
    assert resumed == whole
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]
    with pytest.raises(UserError, match="already finished"):
        train_supernet(cfg, tmp_path / "cut", log=lambda m: None, resume=True)
