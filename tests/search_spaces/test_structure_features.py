"""Structure-aware predictor features: dead-edge pruning on hand-checked NAS-Bench-201 cells, and the
features of every registered space deterministic, finite and named."""

from __future__ import annotations

import numpy as np
import pytest

from search_spaces import get_space, space_names

NB = get_space("nas-bench-201")


@pytest.mark.parametrize("text, live, connected", [
    # nothing computes
    ("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", (0, 0, 0, 0, 0, 0), False),
    # convolutions that never reach the output are dead
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|", (0, 0, 0, 0, 0, 0), False),
    # one chain 0 -> 1 -> 2 -> 3 through conv, pool and skip
    ("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|", (1, 0, 1, 0, 0, 1), True),
    # 0 -> 1 -> 3
    ("|nor_conv_3x3~0|+|none~0|none~1|+|none~0|nor_conv_1x1~1|none~2|", (1, 0, 0, 0, 1, 0), True),
    # node 1 is unreachable from the input, so 2<-1 and then 3<-2 are dead; only the skip 3<-0 lives
    ("|none~0|+|none~0|nor_conv_3x3~1|+|skip_connect~0|none~1|nor_conv_1x1~2|", (0, 0, 0, 1, 0, 0), True),
    # nodes 1 and 2 never reach the output: their input edges are dead
    ("|nor_conv_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|none~2|", (0, 0, 0, 1, 0, 0), True),
])
def test_dead_edges_are_pruned(text, live, connected):
    cell = NB.decode(text)
    assert NB.live_edges(cell) == tuple(bool(v) for v in live)
    assert NB.connected(cell) is connected
    pruned = NB.pruned(cell)
    assert all((op != "none") == bool(on) for op, on in zip(pruned.ops, live))
    # what dead edges hold does not change the features
    np.testing.assert_array_equal(NB.structure_features(cell), NB.structure_features(pruned))


def test_cells_equal_after_pruning_share_features_and_others_do_not():
    a = NB.decode("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|skip_connect~0|none~1|none~2|")
    b = NB.decode("|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|skip_connect~0|none~1|none~2|")
    c = NB.decode("|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|nor_conv_3x3~0|none~1|none~2|")
    fa, fb, fc = (NB.structure_features(x) for x in (a, b, c))
    np.testing.assert_array_equal(fa, fb)
    assert not np.array_equal(fa, fc)


def test_path_encoding_names_the_live_paths():
    cell = NB.decode("|nor_conv_3x3~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|skip_connect~2|")
    names = NB.structure_feature_names()
    on = {n for n, v in zip(names, NB.structure_features(cell)) if v and n.startswith("path.")}
    assert on == {"path.nor_conv_3x3>avg_pool_3x3>skip_connect"}
    values = dict(zip(names, NB.structure_features(cell)))
    assert values["connected"] == 1 and values["live_paths"] == 1 and values["longest_path"] == 3
    assert values["most_convs_on_a_path"] == 1 and values["count.nor_conv_3x3"] == 1


@pytest.mark.parametrize("name", space_names())
def test_structure_features_are_deterministic_finite_and_named(name):
    space = get_space(name)
    rng = np.random.default_rng(0)
    archs = [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(20)]
    first = np.stack([space.structure_features(a) for a in archs])
    again = np.stack([space.structure_features(space.decode(space.encode(a))) for a in archs])
    np.testing.assert_array_equal(first, again)
    assert first.dtype == np.float32 and np.isfinite(first).all()
    assert first.shape[1] == len(space.structure_feature_names())


@pytest.mark.parametrize("name", [n for n in space_names() if n != "nas-bench-201"])
def test_supernet_stage_costs_add_up_to_the_space_counters(name):
    space = get_space(name)
    rng = np.random.default_rng(1)
    for arch in [space.smallest(), space.largest(), space.sample(rng)]:
        values = dict(zip(space.structure_feature_names(), space.structure_features(arch)))
        np.testing.assert_allclose(values["log_macs"], np.log10(1 + space.flops(arch)), rtol=1e-6)
        np.testing.assert_allclose(values["log_params"], np.log10(1 + space.params(arch)), rtol=1e-6)
        parts = [v for n, v in values.items() if n.endswith(".log_macs") and not n.startswith(("attention", "mlp"))]
        # the stem, stages (or layers) and head share the total out between them
        assert sum(10 ** v - 1 for v in parts) <= space.flops(arch) * (1 + 1e-5)
        assert values["resolution"] == pytest.approx(arch.resolution / max(space.config.resolutions))
    small, large = (space.structure_features(a) for a in (space.smallest(), space.largest()))
    assert dict(zip(space.structure_feature_names(), small))["log_macs"] < \
        dict(zip(space.structure_feature_names(), large))["log_macs"]


@pytest.mark.parametrize("name", ["mobilenetv3-tiny", "resnet-tiny"])
def test_supernet_stage_depths_are_the_archs(name):
    space = get_space(name)
    arch = space.sample(np.random.default_rng(3))
    values = dict(zip(space.structure_feature_names(), space.structure_features(arch)))
    assert [values[f"stage{s + 1}.depth"] for s in range(len(arch.depths))] == list(arch.depths)
