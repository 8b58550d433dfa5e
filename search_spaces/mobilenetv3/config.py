"""The mobilenetv3 space's shape (:class:`MobileNetV3Config`, the full and tiny variants) and its
architecture value (:class:`MobileNetV3Arch`)."""

from __future__ import annotations

import dataclasses

from search_spaces.layers import make_divisible


@dataclasses.dataclass(frozen=True)
class MobileNetV3Config:
    """Shape of the supernet. All channel counts are after the width multiplier."""

    stem_channels: int
    first_channels: int
    stage_channels: tuple[int, ...]
    stage_strides: tuple[int, ...]
    stage_acts: tuple[str, ...]
    stage_se: tuple[bool, ...]
    head_channels: int
    feature_channels: int
    stem_stride: int = 1
    depth_choices: tuple[int, ...] = (2, 3, 4)
    expand_choices: tuple[int, ...] = (3, 4, 6)
    kernel_choices: tuple[int, ...] = (3, 5, 7)
    resolutions: tuple[int, ...] = (32,)
    in_channels: int = 3
    num_classes: int = 10
    #: "same" (XLA's 'SAME': on an even side, a stride-2 conv pads only below/right) or "symmetric"
    #: (k // 2 on every side, PyTorch's ``padding=k // 2``, as Once-for-All's pretrained weights expect)
    padding: str = "same"
    #: squeeze-excite middle width: hidden // 4, rounded to a multiple of this (OFA: 8; 1 = no rounding)
    se_divisor: int = 1
    #: the feature-mix layer's bias (OFA's has none)
    feature_bias: bool = True

    @property
    def symmetric(self) -> bool:
        return self.padding == "symmetric"

    def se_mid(self, hidden: int) -> int:
        return se_mid(hidden, self.se_divisor)

    @property
    def num_stages(self) -> int:
        return len(self.stage_channels)

    @property
    def max_depth(self) -> int:
        return max(self.depth_choices)

    @property
    def num_branches(self) -> int:
        """Width x kernel branches per block (the identity branch of a skipped block comes after)."""
        return len(self.kernel_choices) * len(self.expand_choices)

    def block_io(self, stage: int, block: int) -> tuple[int, int, int]:
        """(in channels, out channels, stride) of a block."""
        cin = self.first_channels if stage == 0 else self.stage_channels[stage - 1]
        if block > 0:
            return self.stage_channels[stage], self.stage_channels[stage], 1
        return cin, self.stage_channels[stage], self.stage_strides[stage]


def ofa_config(width_mult: float = 1.0, in_channels: int = 3, num_classes: int = 10,
               resolutions: tuple[int, ...] = (24, 28, 32)) -> MobileNetV3Config:
    """OFA-MobileNetV3's 5 stages, strides adapted to 28-32 px inputs (stem stride 1)."""
    w = lambda c: make_divisible(c * width_mult)  # noqa: E731
    return MobileNetV3Config(
        stem_channels=w(16),
        first_channels=w(16),
        stage_channels=tuple(w(c) for c in (24, 40, 80, 112, 160)),
        stage_strides=(2, 2, 2, 1, 2),
        stage_acts=("relu", "relu", "hswish", "hswish", "hswish"),
        stage_se=(False, True, False, True, True),
        head_channels=w(960),
        feature_channels=w(1280),
        resolutions=tuple(resolutions),
        in_channels=in_channels,
        num_classes=num_classes,
    )


#: Once-for-All's ImageNet resolutions (its elastic resolution: 128-224 px, step 4)
IMAGENET_RESOLUTIONS = tuple(range(128, 225, 4))


def imagenet_config(width_mult: float = 1.0, in_channels: int = 3, num_classes: int = 1000,
                    resolutions: tuple[int, ...] = IMAGENET_RESOLUTIONS) -> MobileNetV3Config:
    """OFA-MobileNetV3 exactly as Once-for-All builds it for ImageNet (``OFAMobileNetV3``): stride-2
    stem, its strides, PyTorch's symmetric padding, SE middle widths rounded to 8, a feature-mix
    layer without bias; channels rounded with its ``make_divisible`` (w1.2: 24, 32, 48, 96, 136,
    192, head 1152, feature 1536). Its pretrained supernets import into this (``nas import ofa``)."""
    return dataclasses.replace(ofa_config(width_mult, in_channels, num_classes, resolutions), stem_stride=2,
                               padding="symmetric", se_divisor=8, feature_bias=False)


def tiny_config(in_channels: int = 1, num_classes: int = 10,
                resolutions: tuple[int, ...] = (8,)) -> MobileNetV3Config:
    """Three small stages for 8x8 digits and the tests; same mechanisms as the full space."""
    return MobileNetV3Config(
        stem_channels=8,
        first_channels=8,
        stage_channels=(12, 16, 24),
        stage_strides=(1, 2, 2),
        stage_acts=("relu", "hswish", "hswish"),
        stage_se=(False, True, True),
        head_channels=64,
        feature_channels=64,
        depth_choices=(1, 2, 3),
        # Two kernel and two expand choices keep the per-variant compile cost of the tests and the
        # 8x8 demo small; kernel 7 on an 8x8 map would be mostly padding anyway.
        kernel_choices=(3, 5),
        expand_choices=(3, 6),
        resolutions=tuple(resolutions),
        in_channels=in_channels,
        num_classes=num_classes,
    )


@dataclasses.dataclass(frozen=True)
class MobileNetV3Arch:
    """One subnet: input resolution and, per stage, the (kernel, expand) of each active block."""

    resolution: int
    stages: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(s) for s in self.stages)


def se_mid(hidden: int, divisor: int = 1) -> int:
    """Middle width of a squeeze-excite layer over ``hidden`` channels: ``hidden // 4``, with
    ``divisor`` > 1 rounded as Once-for-All's ``SEModule`` rounds it (``make_divisible``)."""
    if divisor > 1:
        return make_divisible(hidden // 4, divisor)
    return max(1, hidden // 4)
