"""One spelling of Once-for-All's state-dict keys, shared by the MobileNetV3 (:mod:`.ofa`) and
ResNet-50 (:mod:`.ofa_resnet`) mappings."""

from __future__ import annotations


def canonical_key(key: str) -> str:
    """One spelling of an OFA state-dict key: older checkpoints say ``mobile_inverted_conv`` and
    ``bn.bn`` / ``conv.conv`` / ``linear.linear`` where newer ones nest once (OFA's load_state_dict
    accepts both)."""
    key = key.replace(".mobile_inverted_conv.", ".conv.")
    for double, single in ((".bn.bn.", ".bn."), (".conv.conv.", ".conv."), (".linear.linear.", ".linear.")):
        while double in key:
            key = key.replace(double, single)
    return key
