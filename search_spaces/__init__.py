"""Search spaces, found by name: ``get_space("mobilenetv3-tiny", in_channels=1, num_classes=10)``."""

from search_spaces.base import (
    Arch,
    ArchError,
    Gene,
    SearchSpace,
    SupernetSpace,
    get_space,
    register_space,
    space_names,
    supernet_space_names,
)
from search_spaces import mobilenetv3  # noqa: F401  (registers mobilenetv3, mobilenetv3-tiny)
from search_spaces import vit  # noqa: F401  (registers vit, vit-tiny)

__all__ = [
    "Arch",
    "ArchError",
    "Gene",
    "SearchSpace",
    "SupernetSpace",
    "get_space",
    "register_space",
    "space_names",
    "supernet_space_names",
]
from search_spaces import nasbench201  # noqa: E402,F401  (registers nas-bench-201)
from search_spaces import resnet  # noqa: E402,F401  (registers resnet, resnet-tiny)
