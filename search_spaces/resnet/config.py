"""The resnet space's shape (:class:`ResNetConfig`, its full and tiny instances) and one subnet
(:class:`ResNetArch`), with the static widths and sides of a subnet's blocks (:class:`BlockShape`)."""

from __future__ import annotations

import dataclasses
from typing import Iterator, NamedTuple

from search_spaces.errors import ArchError
from search_spaces.layers import conv_padding, make_divisible, same_padding


@dataclasses.dataclass(frozen=True)
class ResNetArch:
    """One subnet: input resolution, stem width (percent) and, per stage, (width, expand of each
    active block), all in percent."""

    resolution: int
    stem_width: int
    stages: tuple[tuple[int, tuple[int, ...]], ...]

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(e) for _, e in self.stages)


class BlockShape(NamedTuple):
    """One active bottleneck block of a subnet at static shapes."""

    stage: int
    index: int  # within its stage; 0 is the stage's first block (strided, with a shortcut conv)
    cin: int
    cout: int
    mid: int
    stride: int
    side: int  # input height and width


@dataclasses.dataclass(frozen=True)
class ResNetConfig:
    """Shape of the supernet. Channel counts are after the constructor's width multiplier.

    Widths and expand ratios are integer percentages (65 means 0.65).
    """

    stem_channels: int  # at width 100%
    stage_channels: tuple[int, ...]  # block output channels at width 100%
    stage_strides: tuple[int, ...]
    base_depths: tuple[int, ...]
    extra_depth_choices: tuple[int, ...] = (0, 1, 2)
    expand_choices: tuple[int, ...] = (20, 25, 35)
    width_choices: tuple[int, ...] = (65, 80, 100)
    stem_stride: int = 1
    divisor: int = 8
    resolutions: tuple[int, ...] = (32,)
    in_channels: int = 3
    num_classes: int = 10
    #: Once-for-All's ImageNet network (``OFAResNets``), all off by default (the 28-32 px space):
    #: its input stem (3x3 stride-2 conv to half the stem width, a residual 3x3 conv that elastic depth
    #: may skip, a 3x3 conv to the stem width, then a 3x3 stride-2 max-pool); PyTorch's symmetric
    #: padding; a strided block's shortcut as a ceil-mode average pool then a 1x1 conv (OFA's
    #: ``downsample_mode="avgpool_conv"``) ...
    ofa_imagenet: bool = False
    #: ... and OFA's channel arithmetic: the unscaled widths (stem, then each stage) and the network's
    #: width multiplier, a choice of ``w`` percent giving ``make_divisible(base * (mult * w / 100))``
    #: channels, as ``OFAResNets(width_mult_list=[0.65 mult, 0.8 mult, mult])`` computes them
    ofa_bases: tuple[int, ...] = ()
    ofa_mult: float = 1.0

    def __post_init__(self):
        # the supernet stacks blocks after a stage's first for lax.scan; at least one must exist
        assert all(max(self.depth_choices(s)) >= 2 for s in range(self.num_stages)), self
        assert max(self.width_choices) == 100, self.width_choices
        clash = self.first_clash()
        if clash:
            raise ArchError(f"{clash}: two choices would build one network under two strings; "
                            "use a larger width multiplier")

    def first_clash(self) -> str | None:
        """The first layer where two width (or expand) choices round to the same channel count."""
        def first_dup(values: dict) -> str | None:
            seen: dict[int, object] = {}
            for choice, channels in values.items():
                if channels in seen:
                    return f"{seen[channels]}% and {choice}% both give {channels} channels"
                seen[channels] = choice
            return None

        # (OFA's stem middle width is not checked: two choices that round to one width are one gene
        # value there, :meth:`stem_mid_choices`)
        layers = [("stem width", {w: self.stem_width(w) for w in self.width_choices})]
        for s in range(self.num_stages):
            layers.append((f"stage {s + 1} width", {w: self.stage_width(s, w) for w in self.width_choices}))
            for w in self.width_choices:
                cout = self.stage_width(s, w)
                layers.append((f"stage {s + 1} expand at width {w}%",
                               {e: self.mid(cout, e) for e in self.expand_choices}))
        for name, values in layers:
            dup = first_dup(values)
            if dup:
                return f"{name}: {dup}"
        return None

    @property
    def num_stages(self) -> int:
        return len(self.stage_channels)

    def depth_choices(self, stage: int) -> tuple[int, ...]:
        return tuple(self.base_depths[stage] + d for d in self.extra_depth_choices)

    @property
    def max_depth(self) -> int:
        """Deepest stage's maximum depth (the width of ``ResNetSpace.arch_arrays``)."""
        return max(max(self.depth_choices(s)) for s in range(self.num_stages))

    def _scaled(self, channels: int, width: int) -> int:
        return channels if width == 100 else make_divisible(channels * width / 100, self.divisor)

    def _ofa_scaled(self, base: int, width: int) -> int:
        return make_divisible(base * (self.ofa_mult * width / 100), self.divisor)

    def stem_width(self, width: int) -> int:
        if self.ofa_bases:
            return self._ofa_scaled(self.ofa_bases[0], width)
        return self._scaled(self.stem_channels, width)

    def stage_width(self, stage: int, width: int) -> int:
        if self.ofa_bases:
            return self._ofa_scaled(self.ofa_bases[stage + 1], width)
        return self._scaled(self.stage_channels[stage], width)

    def stem_mid(self, width: int) -> int:
        """OFA's input stem: the middle width (its first two convs) at stem width ``width``."""
        return make_divisible(self.stem_width(width) // 2, self.divisor)

    def stem_mid_choices(self) -> tuple[int, ...]:
        """The stem middle width's distinct choices (percent): the first width choice of each channel
        count (OFA-ResNet50's 65% and 80% both give 24 channels, one network)."""
        seen: dict[int, int] = {}
        for w in self.width_choices:
            seen.setdefault(self.stem_mid(w), w)
        return tuple(seen.values())

    def mid(self, cout: int, expand: int) -> int:
        """Bottleneck middle channels of a block with ``cout`` active output channels (OFA)."""
        if self.ofa_bases:  # OFA's own order: round first, then to the divisor
            return make_divisible(round(cout * (expand / 100)), self.divisor)
        return make_divisible(cout * expand / 100, self.divisor)

    def max_mid(self, stage: int) -> int:
        return max(self.mid(self.stage_width(stage, w), e) for w in self.width_choices for e in self.expand_choices)

    def in_channels_of(self, stage: int) -> int:
        """Largest input channels of a stage's first block."""
        return self.stem_channels if stage == 0 else self.stage_channels[stage - 1]

    def branches(self, stage: int) -> tuple[tuple[int, int], ...]:
        """The distinct (out channels, middle channels) of a stage's blocks: one switch branch each."""
        seen = dict.fromkeys((self.stage_width(stage, w), self.mid(self.stage_width(stage, w), e))
                             for w in self.width_choices for e in self.expand_choices)
        return tuple(seen)

    def stem_side(self, resolution: int) -> int:
        """Height and width after the stem (the first block's input side)."""
        if self.ofa_imagenet:  # the stride-2 conv, then the 3x3 stride-2 max-pool (padding 1)
            side = conv_padding(resolution, 3, 2, True)[2]
            return (side + 2 - 3) // 2 + 1
        return same_padding(resolution, 3, self.stem_stride)[2]

    def block_shapes(self, arch: ResNetArch) -> Iterator[BlockShape]:
        """Every active block of ``arch``, in forward order."""
        cin, side = self.stem_width(arch.stem_width), self.stem_side(arch.resolution)
        for s, (width, expands) in enumerate(arch.stages):
            cout = self.stage_width(s, width)
            for b, e in enumerate(expands):
                stride = self.stage_strides[s] if b == 0 else 1
                yield BlockShape(s, b, cin, cout, self.mid(cout, e), stride, side)
                # the 3x3 conv and the strided shortcut give the same 'SAME' output side (and the
                # same symmetric one: ceil(side / stride), as the ceil-mode average pool)
                cin, side = cout, same_padding(side, 3, stride)[2]

    def head_side(self, resolution: int) -> int:
        """Height and width the head receives."""
        side = self.stem_side(resolution)
        for stride in self.stage_strides:
            side = same_padding(side, 3, stride)[2]
        return side

    def head_width(self, arch: ResNetArch) -> int:
        """Channels the classifier reads: the last stage's active width."""
        return self.stage_width(self.num_stages - 1, arch.stages[-1][0])


def ofa_config(width_mult: float = 1.0, in_channels: int = 3, num_classes: int = 10,
               resolutions: tuple[int, ...] = (24, 28, 32)) -> ResNetConfig:
    """OFA-ResNet50's 4 stages (base depths 2, 2, 4, 2 plus 0-2 blocks), for 28-32 px inputs:
    a stride-1 3x3 stem and no max-pool, so stage 1 runs at the input resolution."""
    w = lambda c: make_divisible(c * width_mult)  # noqa: E731
    common = dict(stem_channels=w(64), stage_channels=tuple(w(c) for c in (256, 512, 1024, 2048)),
                  stage_strides=(1, 2, 2, 2), base_depths=(2, 2, 4, 2), resolutions=tuple(resolutions),
                  in_channels=in_channels, num_classes=num_classes)
    # Channels round to multiples of 8 (OFA); a narrow network rounds to 4, 2 or 1 instead where 8
    # would make two choices the same network (65% and 80% of 32 channels are both 24).
    for divisor in (8, 4, 2):
        try:
            return ResNetConfig(divisor=divisor, **common)
        except ArchError:
            continue
    try:
        return ResNetConfig(divisor=1, **common)
    except ArchError as e:
        raise ArchError(f"width multiplier {width_mult} is too narrow for resnet: {e}") from None


def tiny_config(in_channels: int = 1, num_classes: int = 10,
                resolutions: tuple[int, ...] = (8,)) -> ResNetConfig:
    """Three small stages for 8x8 digits and the tests; same mechanisms as the full space."""
    return ResNetConfig(
        stem_channels=16,
        stage_channels=(32, 48, 64),
        stage_strides=(1, 2, 2),
        base_depths=(1, 1, 1),
        extra_depth_choices=(0, 1),
        # two choices per gene keep the number of compiled variants (and the tests) small
        expand_choices=(25, 50),
        width_choices=(50, 100),
        divisor=4,
        resolutions=tuple(resolutions),
        in_channels=in_channels,
        num_classes=num_classes,
    )


#: Once-for-All's ImageNet resolutions (its elastic resolution: 128-224 px, step 4)
IMAGENET_RESOLUTIONS = tuple(range(128, 225, 4))
#: OFAResNets' unscaled widths: its input stem's (64), then each stage's output (``STAGE_WIDTH_LIST``)
OFA_BASES = (64, 256, 512, 1024, 2048)


def imagenet_config(width_mult: float = 1.0, in_channels: int = 3, num_classes: int = 1000,
                    resolutions: tuple[int, ...] = IMAGENET_RESOLUTIONS) -> ResNetConfig:
    """OFA-ResNet50 exactly as Once-for-All builds it for ImageNet (``OFAResNets(depth_list=[0, 1, 2],
    expand_ratio_list=[0.2, 0.25, 0.35], width_mult_list=[0.65, 0.8, 1.0])``, ``ofa_resnet50``): its
    input stem and max-pool, base depths 2, 2, 4, 2 plus 0-2, the avg-pool shortcut, symmetric
    padding, channels rounded to 8 as its ``make_divisible`` rounds them. ``width_mult`` scales every
    width choice (OFA's ``width_mult_list`` times it); where 8 would make two choices one network
    (narrow networks: the tests' fixture), channels round to 4, 2 or 1 instead, and an OFA network
    built with that ``CHANNEL_DIVISIBLE`` is this one."""
    def make(divisor: int) -> ResNetConfig:
        def width(base: int) -> int:
            return make_divisible(base * (width_mult * 100 / 100), divisor)

        return ResNetConfig(stem_channels=width(OFA_BASES[0]), stage_channels=tuple(map(width, OFA_BASES[1:])),
                            stage_strides=(1, 2, 2, 2), base_depths=(2, 2, 4, 2), stem_stride=2, divisor=divisor,
                            resolutions=tuple(resolutions), in_channels=in_channels, num_classes=num_classes,
                            ofa_imagenet=True, ofa_bases=OFA_BASES, ofa_mult=float(width_mult))

    for divisor in (8, 4, 2):
        try:
            return make(divisor)
        except ArchError:
            continue
    try:
        return make(1)
    except ArchError as e:
        raise ArchError(f"width multiplier {width_mult} is too narrow for resnet-imagenet: {e}") from None


@dataclasses.dataclass(frozen=True)
class ResNetImageNetArch:
    """One subnet of OFA-ResNet50 (:func:`imagenet_config`): resolution; its input stem's middle
    width (percent), whether its residual conv runs (``stem_depth`` 1) or elastic depth skips it (0),
    its output width; per stage (width, expand of each active block), in percent."""

    resolution: int
    stem_mid: int
    stem_depth: int
    stem_width: int
    stages: tuple[tuple[int, tuple[int, ...]], ...]

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(e) for _, e in self.stages)
