"""Search spaces, found by name: ``get_space("mobilenetv3-tiny", in_channels=1, num_classes=10)``.

Where things go:

* a new space: one new package ``search_spaces/<name>/`` (or one module, for a space without a
  supernet) that calls :func:`register_space` / :func:`register_supernet_family`, plus one import
  line below. The contract a supernet space fulfils is :class:`SupernetSpace`; its trainer follows
  :class:`Trainer`, and its latency pieces :class:`LatencyPieces`.
* layers that several spaces share: :mod:`search_spaces.layers`; the space-independent training
  engine: :mod:`search_spaces.engine`.
"""

from search_spaces.base import (
    SPACES,
    Arch,
    Gene,
    SearchSpace,
    SupernetSpace,
    get_space,
    one_hot_plus_ordinal,
    register_space,
    register_supernet_family,
    space_names,
    supernet_space_names,
)
from search_spaces.errors import ArchError, NasError, UnknownNameError
from search_spaces.registry import Registry

# Each import registers its spaces.
from search_spaces import mobilenetv3  # noqa: E402,F401  mobilenetv3, mobilenetv3-tiny
from search_spaces import nasbench201  # noqa: E402,F401  nas-bench-201
from search_spaces import resnet  # noqa: E402,F401  resnet, resnet-tiny
from search_spaces import vit  # noqa: E402,F401  vit, vit-tiny

__all__ = [
    "SPACES",
    "Arch",
    "ArchError",
    "Gene",
    "NasError",
    "Registry",
    "SearchSpace",
    "SupernetSpace",
    "UnknownNameError",
    "get_space",
    "one_hot_plus_ordinal",
    "register_space",
    "register_supernet_family",
    "space_names",
    "supernet_space_names",
]
