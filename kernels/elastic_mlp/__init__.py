"""Fused elastic MLP ``act(x @ W1[:, :h]) @ W2[:h, :]`` with run-time h."""

from kernels.elastic_mlp.api import elastic_mlp
from kernels.elastic_mlp.reference import ACTIVATIONS, elastic_mlp_reference, elastic_mlp_xla

__all__ = ["ACTIVATIONS", "elastic_mlp", "elastic_mlp_reference", "elastic_mlp_xla"]
