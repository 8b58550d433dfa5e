"""Elastic matmul ``x[:, :k] @ W[:k, :n]`` with run-time k, n."""

from kernels.elastic_matmul.api import elastic_matmul
from kernels.elastic_matmul.reference import elastic_matmul_reference, elastic_matmul_xla

__all__ = ["elastic_matmul", "elastic_matmul_reference", "elastic_matmul_xla"]
