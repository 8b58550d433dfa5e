"""Pallas kernels for weight-shared (elastic) layers, each with a pure-jnp reference and an XLA path.

Every op takes its active sizes as run-time int32 scalars (no recompilation when they change) and
``implementation="xla" | "pallas" | "auto"``; "pallas" on CPU needs ``interpret=True``.

Where things go: a new weight-shared op is one folder ``kernels/<op>/`` with ``api.py`` (the
public function and its custom VJP), ``reference.py`` (pure jnp: the fallback and the test oracle),
``pallas.py`` and ``<op>_test.py`` (a subclass of ``kernels.tests.base.ElasticKernelTestBase``),
plus its import line below.
"""

from kernels.elastic_dwconv import elastic_dwconv, elastic_dwconv_reference, elastic_dwconv_xla
from kernels.elastic_matmul import elastic_matmul, elastic_matmul_reference, elastic_matmul_xla
from kernels.elastic_mlp import ACTIVATIONS, elastic_mlp, elastic_mlp_reference, elastic_mlp_xla

__all__ = [
    "ACTIVATIONS",
    "elastic_dwconv",
    "elastic_dwconv_reference",
    "elastic_dwconv_xla",
    "elastic_matmul",
    "elastic_matmul_reference",
    "elastic_matmul_xla",
    "elastic_mlp",
    "elastic_mlp_reference",
    "elastic_mlp_xla",
]
