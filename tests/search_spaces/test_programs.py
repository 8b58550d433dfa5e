"""Compiled programs are bounded: every cache together stays under the memory-mapping budget, a
dropped program is made again when needed, and the CPU compile options are the ones measured."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from search_spaces import get_space, programs


def test_cpu_programs_compile_with_the_measured_options():
    assert jax.default_backend() == "cpu"
    assert programs.compile_options() == programs.CPU_COMPILE_OPTIONS
    f = programs.jit(lambda x: jnp.tanh(x) * 2)
    np.testing.assert_allclose(np.asarray(f(jnp.ones(3))), np.tanh(1.0) * 2, rtol=1e-6)


def test_a_program_called_inside_another_transformation_is_a_plain_jit():
    inner = programs.jit(lambda x: jnp.sin(x) * 3)
    outer = jax.jit(lambda x: inner(x) + 1)  # JAX refuses compiler options on a nested jit
    np.testing.assert_allclose(float(outer(1.0)), np.sin(1.0) * 3 + 1, rtol=1e-6)
    assert jax.eval_shape(inner, jax.ShapeDtypeStruct((2,), jnp.float32)).shape == (2,)
    np.testing.assert_allclose(float(inner(1.0)), np.sin(1.0) * 3, rtol=1e-6)  # and top-level again


@pytest.mark.skipif(programs.memory_mappings() is None, reason="no /proc/self/maps")
def test_the_options_cut_a_programs_memory_mappings():
    def f(x):  # a dozen kernels: each of the default's is mapped apart
        for i in range(6):
            x = jnp.tanh(x @ x.T + i)
            x = x / jnp.sum(x, axis=0, keepdims=True)
        return x

    x = jnp.ones((32, 32))
    m0 = programs.memory_mappings()
    default = jax.jit(f).lower(x).compile()
    m1 = programs.memory_mappings()
    ours = programs.jit(f).lower(x).compile()
    m2 = programs.memory_mappings()
    assert m2 - m1 < (m1 - m0) / 2, (m1 - m0, m2 - m1)  # measured: 23 against 6
    np.testing.assert_allclose(np.asarray(default(x)), np.asarray(ours(x)), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(programs.memory_mappings() is None, reason="no /proc/self/maps")
def test_caches_stay_under_the_mapping_budget(monkeypatch):
    base = programs.memory_mappings()
    budget = base + 60
    monkeypatch.setattr(programs, "mapping_budget", lambda: budget)
    cache = programs.ProgramCache()
    dropped = programs.program_stats()["dropped"]
    x = jnp.ones((8, 8))
    for i in range(80):  # ~3 mappings each: 240 without the bound
        f = cache.get(("f", i), lambda i=i: programs.jit(lambda x: jnp.sin(x @ x + i).sum()))
        f(x).block_until_ready()
    assert programs.program_stats()["dropped"] > dropped
    assert len(cache) < 80
    # the budget is checked before each new program, so the process ends within one program of it
    assert programs.memory_mappings() <= budget + 40
    again = cache.get(("f", 0), lambda: programs.jit(lambda x: jnp.sin(x @ x + 0).sum()))
    np.testing.assert_allclose(float(again(x)), float(jnp.sin(x @ x).sum()), rtol=1e-6)


@pytest.mark.skipif(programs.memory_mappings() is None, reason="no /proc/self/maps")
def test_a_trainer_whose_programs_are_dropped_computes_the_same_gradients(monkeypatch):
    space = get_space("mobilenetv3-tiny", in_channels=1, num_classes=10, resolutions=(8,))
    params = space.init_supernet(jax.random.key(0))
    arch = space.smallest()
    images = jnp.asarray(np.random.default_rng(0).integers(0, 255, (4, 8, 8, 1)), jnp.uint8)
    labels = jnp.arange(4) % 10

    def grads_of(trainer):
        zeros = jax.tree.map(jnp.zeros_like, params)
        loss, _, grads = trainer.accumulate_grad(params, zeros, arch, images, labels)
        return float(loss), grads

    free = space.make_trainer(0.5, 0.25, 0.0, "xla")
    loss0, g0 = grads_of(free)
    monkeypatch.setattr(programs, "mapping_budget", lambda: 1)  # every new program drops the older ones
    bounded = space.make_trainer(0.5, 0.25, 0.0, "xla")
    before = programs.program_stats()["dropped"]
    loss1, g1 = grads_of(bounded)
    loss2, g2 = grads_of(bounded)  # every program made again
    assert programs.program_stats()["dropped"] > before
    assert loss0 == loss1 == loss2
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_a_program_compiled_ahead_serves_its_calls_without_compiling_again():
    from kernels.tests.compilations import count_compilations

    def scaled(k, x, y):  # k static, as the optimiser is for nas_cli.training.supernet's update
        return jnp.tanh(x @ y) * k

    f = programs.jit(scaled, static_argnums=(0,))
    x = jnp.arange(16.0).reshape(4, 4) / 16
    lowered, install = f.ahead(3, jax.ShapeDtypeStruct((4, 4), jnp.float32), x)
    assert f.ahead(3, x, x) is None  # the same signature is not compiled twice
    install(lowered.compile())
    with count_compilations() as compiled:
        got = f(3, x, x)
    assert compiled.n == 0
    np.testing.assert_array_equal(np.asarray(got), np.asarray(jax.jit(scaled, static_argnums=(0,))(3, x, x)))
    with count_compilations() as compiled:  # another static argument is another program
        np.testing.assert_allclose(np.asarray(f(2, x, x)), np.asarray(got) * 2 / 3, rtol=1e-6)
    assert compiled.n == 1
