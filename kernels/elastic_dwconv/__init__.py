"""Elastic depthwise conv (NHWC, SAME, stride 1/2) with run-time channels c and kernel size ks."""

from kernels.elastic_dwconv.api import elastic_dwconv
from kernels.elastic_dwconv.reference import elastic_dwconv_reference, elastic_dwconv_xla

__all__ = ["elastic_dwconv", "elastic_dwconv_reference", "elastic_dwconv_xla"]
