"""The composed trainer (a planned space's pieces): its per-block composed gradients equal the monolithic supernet's, and a seen
subnet (or any subnet made of seen block variants) compiles nothing new."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from search_spaces import get_space
from search_spaces.engine import subnet_loss
from search_spaces.layers import preprocess
from search_spaces.mobilenetv3 import MobileNetV3Arch

RES, BATCH, MEAN, STD = 8, 8, 0.45, 0.25


@pytest.fixture(scope="module")
def setup():
    space = get_space("mobilenetv3-tiny", in_channels=1, num_classes=10, resolutions=(RES,))
    params = space.init_supernet(jax.random.key(0))
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(tree, [a + 0.05 * jax.random.normal(k, a.shape, a.dtype) for a, k in zip(leaves, keys)])
    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.integers(0, 256, (BATCH, RES, RES, 1), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, (BATCH,)).astype(np.int32))
    soft = jax.nn.softmax(jax.random.normal(jax.random.key(3), (BATCH, 10)))
    cfg = space.config
    # Two subnets that differ in every stage and skip blocks (depth below the maximum).
    archs = [
        MobileNetV3Arch(RES, (((3, 6), (5, 3)), ((5, 6),), ((3, 3), (5, 6), (3, 6)))),
        MobileNetV3Arch(RES, (((5, 3),), ((3, 3), (3, 6), (5, 6)), ((5, 3), (3, 3)))),
    ]
    for a in archs:
        space.encode(a)  # valid in the tiny space
    net = space.make_trainer(MEAN, STD, 0.0, "xla")
    return dict(space=space, cfg=cfg, params=params, images=images, labels=labels, soft=soft, archs=archs, net=net)


def _zeros(params):
    return jax.tree.map(jnp.zeros_like, params)


def _reference(s, arch, soft):
    """jax.grad of supernet_apply(mode="train", train_vjp=False): the plain lax.switch supernet.

    Run eagerly (disable_jit): the switch then takes its concrete branch and the scan unrolls, so
    this is the same function without the monolithic program's minute-long compile.
    """
    arr = jnp.asarray(s["space"].arch_arrays(arch))
    kd = soft is not None

    def loss_fn(p):
        x = preprocess(s["images"], RES, MEAN, STD)
        logits = s["space"].supernet_apply(p, None, x, arr, mode="train", train_vjp=False)
        return subnet_loss(logits, s["labels"], soft, kd), logits

    with jax.disable_jit():
        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(s["params"])
    return loss, logits, grads


def _assert_grads_close(got, want):
    flat_got, _ = jax.tree.flatten_with_path(got)
    flat_want = jax.tree.leaves(want)
    num = den = 0.0
    for (path, g), w in zip(flat_got, flat_want):
        g, w = np.asarray(g), np.asarray(w)
        name = jax.tree_util.keystr(path)
        # Slices the subnet does not use get zero gradient in both formulations (up to rounding: a
        # used BN bias before a following BN can get an exact 0 in one and 2e-9 in the other).
        np.testing.assert_allclose(g[w == 0], 0, rtol=0, atol=1e-6, err_msg=name)
        scale = np.max(np.abs(w)) if w.size else 0.0
        if scale > 0:
            assert np.max(np.abs(g - w)) <= 1e-3 * scale + 1e-6, (name, np.max(np.abs(g - w)), scale)
        num += float(np.sum((g - w) ** 2))
        den += float(np.sum(w**2))
    assert np.sqrt(num / den) <= 1e-4, np.sqrt(num / den)


@pytest.mark.parametrize("distill", [False, True], ids=["labels", "soft-targets"])
@pytest.mark.parametrize("which", [0, 1])
def test_composed_gradients_equal_the_supernet(setup, which, distill):
    s = setup
    arch = s["archs"][which]
    soft = s["soft"] if distill else None
    loss, logits, grads = s["net"].accumulate_grad(s["params"], _zeros(s["params"]), arch, s["images"],
                                                   s["labels"], soft)
    ref_loss, ref_logits, ref_grads = _reference(s, arch, soft)
    np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5)
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref_logits), rtol=0, atol=1e-4)
    _assert_grads_close(grads, ref_grads)


def test_gradients_accumulate_over_subnets(setup):
    s = setup
    net, p = s["net"], s["params"]
    a, b = s["archs"]
    _, _, ga = net.accumulate_grad(p, _zeros(p), a, s["images"], s["labels"])
    _, _, gb = net.accumulate_grad(p, _zeros(p), b, s["images"], s["labels"])
    _, _, both = net.accumulate_grad(p, _zeros(p), a, s["images"], s["labels"])
    _, _, both = net.accumulate_grad(p, both, b, s["images"], s["labels"])
    for x, y, z in zip(jax.tree.leaves(both), jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y) + np.asarray(z), rtol=1e-5, atol=1e-6)


def test_no_new_compiles_for_seen_variants(setup):
    s = setup
    net, p = s["net"], s["params"]
    a, b = s["archs"]
    for arch in (a, b):
        for soft in (None, s["soft"]):
            net.accumulate_grad(p, _zeros(p), arch, s["images"], s["labels"], soft)
    seen = net.num_compiled()
    assert seen > 0
    # A repeated subnet, and a new subnet built only from (stage, first/rest, kernel, expand) variants
    # the two have used, compile nothing.
    mixed = MobileNetV3Arch(RES, (((3, 6),), ((5, 6), (3, 6)), ((3, 3), (5, 6))))
    for arch in (a, b, a, mixed):
        for soft in (None, s["soft"]):
            net.accumulate_grad(p, _zeros(p), arch, s["images"], s["labels"], soft)
    assert net.num_compiled() == seen


def test_a_prepared_step_compiles_ahead_and_computes_the_same(setup):
    """prepare() compiles, on two threads, exactly the programs the lazy path compiles when the step
    calls them; the step then compiles nothing and its results are bit for bit the lazy path's."""
    from kernels.tests.compilations import count_compilations

    s = setup
    p, images, labels = s["params"], s["images"], s["labels"]
    a, b = s["archs"]

    def step(net):
        loss_a, logits, grads = net.accumulate_grad(p, _zeros(p), a, images, labels)
        soft = jax.nn.softmax(logits)
        with count_compilations() as compiled:
            loss_b, _, grads = net.accumulate_grad(p, grads, b, images, labels, soft)
        return [loss_a, loss_b] + jax.tree.leaves(grads), compiled.n

    lazy = s["space"].make_trainer(MEAN, STD, 0.0, "xla")
    want, lazy_compiled = step(lazy)
    assert lazy_compiled > 0
    ahead = s["space"].make_trainer(MEAN, STD, 0.0, "xla")
    assert ahead.prepare(p, [a, b], images, labels, distill=True, workers=2) == lazy.num_compiled()
    zeros = _zeros(p)
    with count_compilations() as compiled:
        ahead.accumulate_grad(p, zeros, a, images, labels)
    assert compiled.n == 0
    got, ahead_compiled = step(ahead)
    assert ahead_compiled == 0
    for x, y in zip(got, want):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert ahead.prepare(p, [a, b], images, labels) == 0  # nothing left to compile
