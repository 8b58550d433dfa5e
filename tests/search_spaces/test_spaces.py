"""Conformance suite over every registered supernet space (STYLE habit 11).

Each space with ``init_supernet`` runs the same checks: valid samples, canonical strings that round
trip, invalid strings rejected with an error naming the field and its choices, the static subnet
computing the supernet's function, exact FLOPs/params (counted independently from the static model),
channel sorting preserving the largest network, and one compiled calib/eval program for all subnets.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from kernels.tests.compilations import count_compilations
from search_spaces import ArchError, SupernetSpace, get_space, space_names

import toy_space  # a space written only for these tests (tests/search_spaces/toy_space.py)

# Small options per space keep compiles and forwards fast; a space not listed runs with its defaults.
SPACE_OPTIONS = {
    "mobilenetv3": dict(width_mult=0.25, in_channels=1, num_classes=10, resolutions=(8, 12)),
    "mobilenetv3-tiny": dict(in_channels=1, num_classes=10, resolutions=(8, 12)),
    "mobilenetv3-imagenet": dict(width_mult=0.25, in_channels=1, num_classes=10, resolutions=(8, 12)),
    "vit": dict(width_mult=0.25, in_channels=1, num_classes=10, resolutions=(8, 12)),
    "vit-tiny": dict(in_channels=1, num_classes=10, resolutions=(8, 12)),
    "resnet": dict(width_mult=0.25, in_channels=1, num_classes=10, resolutions=(8, 12)),
    "resnet-tiny": dict(in_channels=1, num_classes=10, resolutions=(8, 12)),
    "resnet-imagenet": dict(width_mult=0.095, in_channels=1, num_classes=10, resolutions=(8, 12)),
}
MODEL_RES = 8  # every model check runs at this one resolution: one compile per jitted function
BATCH = 16  # BatchNorm over 1x1 maps of 4 images amplifies float-order noise past 1e-4


def _supernet_space_names() -> list[str]:
    names = []
    for name in space_names():
        space = get_space(name, **SPACE_OPTIONS.get(name, {}))
        if isinstance(space, SupernetSpace) and hasattr(space, "init_supernet"):
            names.append(name)
    return names


#: the registered supernet spaces and the tests' own small space (built, not registered)
NAMES = _supernet_space_names() + ["toy-tiny"]


def _make(name: str):
    if name == "toy-tiny":
        return toy_space.ToySpace(toy_space.ToyConfig(resolutions=(8, 12)), name)
    return get_space(name, **SPACE_OPTIONS.get(name, {}))


def test_registry_has_the_supernet_spaces():
    assert {"mobilenetv3", "mobilenetv3-tiny", "vit", "vit-tiny"} <= set(NAMES)


@pytest.fixture(scope="module", params=NAMES)
def bundle(request):
    """A space, perturbed supernet weights (so BN affine and kernel transforms are not identities),
    inputs, and the jitted calib/eval programs shared by every test of the module."""
    name = request.param
    space = _make(name)
    params = space.init_supernet(jax.random.key(0))

    # one normal draw carved into every leaf: a draw per leaf compiles a threefry per shape (~40 s)
    leaves, tree = jax.tree.flatten(params)
    noise = np.asarray(jax.random.normal(jax.random.key(1), (sum(a.size for a in leaves),), jnp.float32))
    offsets = np.cumsum([0] + [a.size for a in leaves])
    params = jax.tree.unflatten(tree, [a + 0.1 * noise[o : o + a.size].reshape(a.shape).astype(a.dtype)
                                       for a, o in zip(leaves, offsets)])
    channels = space.in_channels
    x = jax.random.normal(jax.random.key(2), (BATCH, MODEL_RES, MODEL_RES, channels), jnp.float32)
    calib = jax.jit(lambda p, x, arr: space.supernet_apply(p, None, x, arr, mode="calib")[1])
    evaluate = jax.jit(lambda p, s, x, arr: space.supernet_apply(p, s, x, arr, mode="eval"))
    return dict(name=name, space=space, params=params, x=x, calib=calib, evaluate=evaluate)


def _at_res(arch, res=MODEL_RES):
    return dataclasses.replace(arch, resolution=res)


def _model_archs(space, n: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    return [_at_res(space.sample(rng)) for _ in range(n)]


def _supernet_logits(b, params, arch):
    arr = jnp.asarray(b["space"].arch_arrays(arch))
    stats = b["calib"](params, b["x"], arr)
    return stats, np.asarray(b["evaluate"](params, stats, b["x"], arr))


# --- genome and strings ----------------------------------------------------------------------
def test_samples_are_valid(bundle):
    space = bundle["space"]
    rng = np.random.default_rng(0)
    for _ in range(50):
        arch = space.sample(rng)
        genome = space.to_genome(arch)
        assert len(genome) == len(space.genes)
        assert all(0 <= g < len(gene.choices) for g, gene in zip(genome, space.genes))
        assert arch.resolution in space.resolutions
        assert space.features(arch).shape == (len(space.feature_names()),)
        assert space.flops(arch) > 0 and space.params(arch) > 0


def test_canonical_strings_round_trip(bundle):
    space = bundle["space"]
    rng = np.random.default_rng(1)
    archs = [space.sample(rng) for _ in range(50)] + [space.smallest(), space.largest()]
    for arch in archs:
        text = space.encode(arch)
        assert space.decode(text) == arch
        assert space.encode(space.decode(text)) == text
        assert space.canonical(f"  {text} ") == text
        assert space.from_genome(space.to_genome(arch)) == arch
    assert len({space.encode(a) for a in archs}) == len(set(archs))


def _choices(values) -> list[str]:
    return [str(v) for v in values]


def _mobilenetv3_bad_strings(space):
    """(string, words the error must contain) for each kind of mistake."""
    cfg = space.config
    good = space.encode(space.smallest())
    res, *groups = good.split("-")
    k0, e0 = space.smallest().stages[0][0]
    bad_k = max(cfg.kernel_choices) + 2
    bad_e = max(cfg.expand_choices) + 1
    bad_r = max(cfg.resolutions) + 1
    too_deep = ".".join([f"k{k0}e{e0}"] * (max(cfg.depth_choices) + 1))
    return [
        ("-".join([res, groups[0].replace(f"k{k0}", f"k{bad_k}", 1), *groups[1:]]),
         ["kernel", str(bad_k), *_choices(cfg.kernel_choices)]),
        ("-".join([res, groups[0].replace(f"e{e0}", f"e{bad_e}", 1), *groups[1:]]),
         ["expand", str(bad_e), *_choices(cfg.expand_choices)]),
        ("-".join([res, too_deep, *groups[1:]]),
         ["depth", str(max(cfg.depth_choices) + 1), *_choices(cfg.depth_choices)]),
        ("-".join([f"r{bad_r}", *groups]), ["resolution", str(bad_r), *_choices(cfg.resolutions)]),
        ("hello", ["resolution", *_choices(cfg.resolutions)]),
        ("-".join([res, "k3x9", *groups[1:]]), ["kernel", "expand", *_choices(cfg.kernel_choices)]),
        ("-".join([res, *groups[:-1]]), ["stage", str(cfg.num_stages)]),
        ("", ["resolution"]),
    ]


def _resnet_bad_strings(space):
    """resnet strings: r<res>-w<stem width>-w<width>.e<expand>...; widths and expands in percent."""
    cfg = space.config
    good = space.encode(space.smallest())
    res, stem, first, *rest = good.split("-")
    w0, e0 = first.split(".")[:2]
    bad_w, bad_e, bad_r = max(cfg.width_choices) + 1, max(cfg.expand_choices) + 1, max(cfg.resolutions) + 1
    too_deep = ".".join([w0] + [e0] * (max(cfg.depth_choices(0)) + 1))
    return [
        ("-".join([res, stem, first.replace(e0, f"e{bad_e}", 1), *rest]),
         ["expand", str(bad_e), *_choices(cfg.expand_choices)]),
        ("-".join([res, stem, first.replace(w0, f"w{bad_w}", 1), *rest]),
         ["width", str(bad_w), *_choices(cfg.width_choices)]),
        ("-".join([res, f"w{bad_w}", first, *rest]), ["stem width", str(bad_w), *_choices(cfg.width_choices)]),
        ("-".join([res, stem, too_deep, *rest]),
         ["depth", str(max(cfg.depth_choices(0)) + 1), *_choices(cfg.depth_choices(0))]),
        ("-".join([f"r{bad_r}", stem, first, *rest]), ["resolution", str(bad_r), *_choices(cfg.resolutions)]),
        ("hello", ["resolution", *_choices(cfg.resolutions)]),
        ("-".join([res, stem, f"{w0}.k3", *rest]), ["expand", *_choices(cfg.expand_choices)]),
        ("-".join([res, stem, first, *rest[:-1]]), ["stage", str(cfg.num_stages)]),
        ("", ["resolution"]),
    ]


def _vit_bad_strings(space):
    """vit strings: r<res>-e<embed>-h<heads>m<mlp ratio>-... (one field per active layer)."""
    cfg = space.config
    res, embed, first, *rest = space.encode(space.smallest()).split("-")
    heads, mlp = first[1:].split("m")
    bad_h, bad_m, bad_e = max(cfg.heads_choices) + 1, max(cfg.mlp_choices) + 1, max(cfg.embed_choices) + 8
    too_deep = [first] * (max(cfg.depth_choices) + 1)
    ratios = [f"{m:g}" for m in cfg.mlp_choices]
    return [
        ("-".join([res, embed, f"h{bad_h}m{mlp}", *rest]), ["heads", str(bad_h), *_choices(cfg.heads_choices)]),
        ("-".join([res, embed, f"h{heads}m{bad_m:g}", *rest]), ["mlp", f"{bad_m:g}", *ratios]),
        ("-".join([res, f"e{bad_e}", first, *rest]), ["embed", str(bad_e), *_choices(cfg.embed_choices)]),
        ("-".join([res, embed, *too_deep]), ["depth", str(len(too_deep)), *_choices(cfg.depth_choices)]),
        ("-".join([res, embed]), ["depth", "0", *_choices(cfg.depth_choices)]),
        ("-".join([f"r{max(cfg.resolutions) + 1}", embed, first, *rest]), ["resolution", *_choices(cfg.resolutions)]),
        ("hello", ["resolution", *_choices(cfg.resolutions)]),
        ("-".join([res, "x9", first]), ["embed", *_choices(cfg.embed_choices)]),
        ("-".join([res, embed, "k3e4"]), ["heads", "mlp", *_choices(cfg.heads_choices), *ratios]),
        ("", ["resolution"]),
    ]


def _toy_bad_strings(space):
    return [("r8-w9", ["width", "9", "8", "16"]), ("r9-w8", ["resolution", "9", "8", "12"]),
            ("r8-" + ".".join(["w8"] * 4), ["depth", "4", "1", "2", "3"]), ("hello", ["r8-w8.w16"])]


def _resnet_imagenet_bad_strings(space):
    """resnet-imagenet strings: resnet's, the stem group m<middle width>.d<depth>.w<width>."""
    cfg = space.config
    res, stem, *stages = space.encode(space.smallest()).split("-")
    m, d, w = stem.split(".")
    bad_w = max(cfg.width_choices) + 1
    return [case for case in _resnet_bad_strings(space) if "stem width" not in case[1]] + [
        ("-".join([res, f"{m}.{d}.w{bad_w}", *stages]), ["stem width", str(bad_w), *_choices(cfg.width_choices)]),
        ("-".join([res, f"m{bad_w}.{d}.{w}", *stages]),
         ["stem middle width", str(bad_w), *_choices(cfg.stem_mid_choices())]),
        ("-".join([res, f"{m}.d2.{w}", *stages]), ["stem depth", "2", "0", "1"]),
        ("-".join([res, w, *stages]), ["stem group", "m<middle width>.d<depth>.w<width>"]),
    ]


# each family's string syntax differs, so each says how to break it
BAD_STRINGS = {"mobilenetv3": _mobilenetv3_bad_strings, "mobilenetv3-imagenet": _mobilenetv3_bad_strings,
               "resnet": _resnet_bad_strings,
               "resnet-imagenet": _resnet_imagenet_bad_strings, "vit": _vit_bad_strings, "toy": _toy_bad_strings}


def test_invalid_strings_name_the_field_and_choices(bundle):
    space = bundle["space"]
    family = space.name.removesuffix("-tiny")
    if family not in BAD_STRINGS:
        pytest.fail(f"add {family!r}'s invalid strings to BAD_STRINGS in tests/search_spaces/test_spaces.py")
    for text, words in BAD_STRINGS[family](space):
        with pytest.raises(ArchError) as err:
            space.decode(text)
        msg = str(err.value)
        for word in words:
            assert word in msg, (text, word, msg)


# --- models ----------------------------------------------------------------------------------
def test_static_subnet_equals_supernet(bundle):
    space, params = bundle["space"], bundle["params"]
    archs = _model_archs(space, 3, seed=2) + [_at_res(space.largest()), _at_res(space.smallest())]
    for arch in archs:
        stats, sup = _supernet_logits(bundle, params, arch)
        static = space.extract(params, stats, arch)
        graphdef, state = nnx.split(static)
        # jitted like the supernet (and like export's parity check): eager op-by-op execution
        # rounds differently from fused code
        out = np.asarray(jax.jit(lambda s, x: nnx.merge(graphdef, s)(x))(state, bundle["x"]))
        assert np.all(np.isfinite(sup))
        np.testing.assert_allclose(out, sup, rtol=0, atol=1e-4, err_msg=space.encode(arch))


def _count_macs(jaxpr, in_depthwise: bool = False) -> int:
    """MACs of conv_general_dilated and dot_general equations, and of the multiplies of the
    shifted-sum depthwise convs (named scope "depthwise_conv"), recursing into sub-jaxprs.

    A sub-jaxpr (the depthwise conv is checkpointed, so its body is a remat sub-jaxpr) does not carry
    its caller's name stack, so the scope is passed down."""
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        depthwise = in_depthwise or "depthwise_conv" in str(eqn.source_info.name_stack)
        if name == "mul" and depthwise:
            total += math.prod(eqn.outvars[0].aval.shape)  # one multiply-add per tap and output
        elif name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            _, rhs_spec, _ = eqn.params["dimension_numbers"]
            # rhs_spec: (out feature dim, in feature dim, *spatial dims); in features are per group
            per_output = rhs[rhs_spec[1]] * math.prod(rhs[d] for d in rhs_spec[2:])
            total += math.prod(eqn.outvars[0].aval.shape) * per_output
        elif name == "dot_general":
            lhs = eqn.invars[0].aval.shape
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            total += math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[d] for d in lhs_contract)
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns"):
                    total += _count_macs(sub, depthwise)
                elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    total += _count_macs(sub.jaxpr, depthwise)
    return total


def test_flops_and_params_match_the_static_model(bundle):
    space = bundle["space"]
    archs = _model_archs(space, 3, seed=3) + [space.largest(), space.smallest()]
    for arch in archs:
        model = space.static_model(arch, nnx.Rngs(0))
        n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(nnx.state(model, nnx.Param)))
        assert space.params(arch) == n_params, space.encode(arch)
        graphdef, state = nnx.split(model)
        x1 = jnp.zeros((1, arch.resolution, arch.resolution, space.in_channels), jnp.float32)
        jaxpr = jax.make_jaxpr(lambda st, x: nnx.merge(graphdef, st)(x))(state, x1)
        assert space.flops(arch) == _count_macs(jaxpr.jaxpr), space.encode(arch)


def test_sort_channels_keeps_the_largest_network(bundle):
    space, params = bundle["space"], bundle["params"]
    largest = _at_res(space.largest())
    _, before = _supernet_logits(bundle, params, largest)
    _, after = _supernet_logits(bundle, space.sort_channels(params), largest)
    # relative to the logits' scale: reordered sums through BatchNorm over 1x1 maps (mobilenetv3-imagenet's
    # stride-2 stem at 8 px) differed by 1.2e-4 on logits of ~1.6 (7.5e-5 relative)
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-4 * max(1.0, float(np.max(np.abs(before)))))


def test_trainer_gradients_equal_the_supernet(bundle):
    """The space's CPU training formulation computes jax.grad of supernet_apply(mode="train") (run
    eagerly: conditionals take their concrete branch), and zero outside the subnet's slices.

    Run on the tiny variants only: a full space is the same code with a larger config, and its
    eager reference plus per-piece compiles cost minutes on a 2-core CPU."""
    from search_spaces.engine import subnet_loss
    from search_spaces.layers import preprocess

    if not bundle["name"].endswith("-tiny"):
        pytest.skip("checked on the space's -tiny variant (same code, smaller config)")
    space, params = bundle["space"], bundle["params"]
    mean, std = 0.4, 0.3
    rng = np.random.default_rng(5)
    images = jnp.asarray(rng.integers(0, 256, (BATCH, MODEL_RES, MODEL_RES, space.in_channels), dtype=np.uint8))
    labels = jnp.asarray(rng.integers(0, 10, (BATCH,)).astype(np.int32))
    trainer = space.make_trainer(mean, std, 0.0, "xla")
    for arch in _model_archs(space, 1, seed=6):
        zeros = jax.tree.map(jnp.zeros_like, params)
        loss, _, grads = trainer.accumulate_grad(params, zeros, arch, images, labels, None)
        arr = jnp.asarray(space.arch_arrays(arch))

        def loss_fn(p):
            x = preprocess(images, MODEL_RES, mean, std)
            return subnet_loss(space.supernet_apply(p, None, x, arr, mode="train"), labels, None, False)

        with jax.disable_jit():
            ref_loss, ref = jax.value_and_grad(loss_fn)(params)
        np.testing.assert_allclose(float(loss), float(ref_loss), rtol=1e-5, err_msg=space.encode(arch))
        overall = max(float(np.max(np.abs(w), initial=0.0)) for w in jax.tree.leaves(ref))
        for (path, g), w in zip(jax.tree.flatten_with_path(grads)[0], jax.tree.leaves(ref)):
            g, w = np.asarray(g), np.asarray(w)
            where = f"{space.encode(arch)} {jax.tree_util.keystr(path)}"
            np.testing.assert_allclose(g[w == 0], 0, rtol=0, atol=1e-6, err_msg=where)
            # per leaf relative to its own scale, with a floor relative to the whole gradient (a
            # BN bias feeding another BN has an analytically zero gradient, ~1e-6 in float32)
            scale = float(np.max(np.abs(w), initial=0.0))
            assert np.max(np.abs(g - w), initial=0.0) <= 1e-3 * scale + 1e-5 * overall, where


def test_calib_and_eval_compile_once_for_all_subnets(bundle):
    space, params = bundle["space"], bundle["params"]
    first, *others = _model_archs(space, 4, seed=4)
    _supernet_logits(bundle, params, first)
    with count_compilations() as compiled:
        for arch in others:
            _supernet_logits(bundle, params, arch)
    assert compiled.n == 0


def test_default_resolutions_come_from_the_registration(monkeypatch):
    """A space's default resolutions are what its registration says (no guess from its name)."""
    from search_spaces.base import SPACES, default_resolutions, register_space

    assert default_resolutions("mobilenetv3", 32) == (24, 28, 32)
    assert default_resolutions("mobilenetv3-tiny", 32) == (32,)
    monkeypatch.setattr(SPACES, "_entries", dict(SPACES._entries))  # the registration ends with the test
    register_space("test-imagenet-like", SPACES.get("mobilenetv3").factory, supernet=True,
                   below_image_side=(96, 48, 0))
    assert default_resolutions("test-imagenet-like", 224) == (128, 176, 224)
    assert default_resolutions("test-imagenet-like", 8) == (8,)  # never below 8 px, never empty
