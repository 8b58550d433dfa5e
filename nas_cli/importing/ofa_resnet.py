"""Once-for-All's ResNet-50 supernet (``OFAResNets``, ``--net ofa_resnet50``) onto the
``resnet-imagenet`` space (:func:`search_spaces.resnet.imagenet_config`, its own network).

The mapping (OFA -> nas), for every layer of ``OFAResNets``:

* ``input_stem.0`` / ``.1`` (the residual conv) / ``.2`` -> ``stem`` / ``stem_res`` / ``stem_out``;
* a block's ``conv1`` / ``conv2`` / ``conv3`` / ``downsample`` -> ``conv1`` / ``conv2`` / ``conv3`` /
  ``down`` with BatchNorms ``bn1`` / ``bn2`` / ``bn3`` / ``bn_down``; a stage's first block in
  ``first``, its later ones stacked in ``rest``;
* conv weights (O, I, 3, 3) -> (3, 3, I, O), 1x1 convs (O, I, 1, 1) -> (I, O), the classifier's
  ``nn.Linear`` (O, I) -> (I, O); BatchNorm as for MobileNetV3 (:mod:`nas_cli.importing.ofa`).
"""

from __future__ import annotations

import re

import numpy as np

from nas_cli.importing.ofa_keys import canonical_key

#: the space an OFA ResNet imports into
SPACE = "resnet-imagenet"
#: Once-for-All's published ResNet supernet (``ofa_resnet50_d0-1-2_e0.2-0.25-0.35_w0.65-0.8-1.0``)
PUBLISHED = "ofa_resnet50"
#: ``ofa_resnet50_w<m>``: the same network with OFA's width_mult_list [0.65 m, 0.8 m, m]
NET_RE = re.compile(r"^ofa_resnet50(?:_w(\d+(?:\.\d+)?))?$")


def expected(cfg) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Every OFA key (as :func:`nas_cli.importing.ofa_keys.canonical_key` spells it) of the network of
    ``cfg`` -> (where it goes: ``p:`` / ``s:`` and a ``/`` path, as the MobileNetV3 mapping, its OFA
    shape)."""

    e: dict[str, tuple[str, tuple[int, ...]]] = {}

    def conv_bn(prefix: str, where: str, conv: str, bn: str, shape: tuple[int, ...]):
        """OFA's ``{prefix}.conv.conv.weight`` and ``{prefix}.bn.bn.*`` -> ``where/conv``, ``where/bn``."""
        e[canonical_key(f"{prefix}.conv.conv.weight")] = (f"p:{where}/{conv}", shape)
        for leaf, target in (("weight", "p:{}/scale"), ("bias", "p:{}/bias"), ("running_mean", "s:{}/mean"),
                             ("running_var", "s:{}/var")):
            e[canonical_key(f"{prefix}.bn.bn.{leaf}")] = (target.format(f"{where}/{bn}"), shape[:1])

    m, c0 = cfg.stem_mid(100), cfg.stem_channels
    conv_bn("input_stem.0", "stem", "w", "bn", (m, cfg.in_channels, 3, 3))
    conv_bn("input_stem.1.conv", "stem_res", "w", "bn", (m, m, 3, 3))  # a ResidualBlock's conv
    conv_bn("input_stem.2", "stem_out", "w", "bn", (c0, m, 3, 3))
    index = 0
    for s in range(cfg.num_stages):
        cout, mid = cfg.stage_channels[s], cfg.max_mid(s)
        for b in range(max(cfg.depth_choices(s))):
            cin = cfg.in_channels_of(s) if b == 0 else cout
            where = f"stages/{s}/first" if b == 0 else f"stages/{s}/rest/{b - 1}"
            conv_bn(f"blocks.{index}.conv1", where, "conv1", "bn1", (mid, cin, 1, 1))
            conv_bn(f"blocks.{index}.conv2", where, "conv2", "bn2", (mid, mid, 3, 3))
            conv_bn(f"blocks.{index}.conv3", where, "conv3", "bn3", (cout, mid, 1, 1))
            if b == 0:  # a stage's first block changes width (and maybe side): OFA's avgpool_conv shortcut
                conv_bn(f"blocks.{index}.downsample", where, "down", "bn_down", (cout, cin, 1, 1))
            index += 1
    e["classifier.linear.weight"] = ("p:classifier/w", (cfg.num_classes, cfg.stage_channels[-1]))
    e["classifier.linear.bias"] = ("p:classifier/b", (cfg.num_classes,))
    return e


def to_nas(where: str, a: np.ndarray) -> np.ndarray:
    """An OFA tensor in the layout ``where`` holds it (the module docstring)."""
    if a.ndim == 4 and a.shape[2:] == (1, 1):
        return a[:, :, 0, 0].T  # 1x1 conv (O, I, 1, 1) -> (I, O)
    if a.ndim == 4:
        return a.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
    if a.ndim == 2:
        return a.T  # nn.Linear (O, I) -> (I, O)
    return a
