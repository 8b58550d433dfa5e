"""Every supernet space's latency pieces are its static model's own submodules, in forward order.

The contract (search_spaces.base.LatencyPiece): ``latency_keys(arch)`` names the stem, each block and
the head of ``static_model(arch)`` in order, and each key's piece builds a module of the same type
taking an input of the shape that part of the forward pass receives.
"""

import jax
import numpy as np
import pytest
from flax import nnx

from search_spaces import get_space, supernet_space_names

SPACES = [n for n in supernet_space_names() if n.endswith("-tiny")]


def parts(model):
    return [model.stem, *model.blocks, model.head]


@pytest.mark.parametrize("name", SPACES)
def test_pieces_are_the_static_models_parts(name):
    space = get_space(name, resolutions=(8, 6) if name.startswith(("mobilenetv3", "vit")) else (8,))
    pieces = {p.key: p for p in space.latency_pieces()}
    assert len(pieces) == len(space.latency_pieces()), "piece keys must be unique"
    rng = np.random.default_rng(0)
    archs = [space.smallest(), space.largest(), space.sample(rng)]
    for arch in archs:
        keys = space.latency_keys(arch)
        assert set(keys) <= set(pieces), f"{space.encode(arch)} names pieces the table does not time"
        model = space.static_model(arch, nnx.Rngs(0))
        modules = parts(model)
        assert len(keys) == len(modules)
        x = jax.random.normal(jax.random.key(1), (2, arch.resolution, arch.resolution, space.in_channels))
        z = x
        for key, module in zip(keys, modules):
            piece = pieces[key]
            assert z.shape[1:] == piece.input_shape, (key, z.shape, piece.input_shape)
            assert type(nnx.eval_shape(piece.build)) is type(module), key
            z = module(z)
        np.testing.assert_array_equal(np.asarray(z), np.asarray(model(x)))
        assert z.shape == (2, 10)
