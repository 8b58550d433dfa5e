"""The mobilenetv3 space's latency pieces: the stem (per resolution), every block (stage, first or
later block, kernel, expand, input side) and the head (per final side), each built as
:class:`StaticMobileNetV3`'s own submodule, and the keys that name a subnet's pieces in order."""

from __future__ import annotations

from functools import partial

from flax import nnx

from search_spaces.base import LatencyPiece, SupernetSpace
from search_spaces.layers import same_padding
from search_spaces.mobilenetv3.config import MobileNetV3Arch, MobileNetV3Config
from search_spaces.mobilenetv3.static import StaticBlock


def block_key(stage: int, first: bool, k: int, e: int, side: int) -> str:
    """The latency key of a block: ``block/s{stage}/{first|rest}/k{kernel}e{expand}/h{input side}``."""
    return f"block/s{stage + 1}/{'first' if first else 'rest'}/k{k}e{e}/h{side}"


def sides(cfg: MobileNetV3Config, resolution: int) -> tuple[list[int], list[int], int]:
    """(input side of each stage's first block, of its later blocks, side at the head)."""
    h = same_padding(resolution, 3, cfg.stem_stride)[2]
    first, rest = [], []
    for s in range(cfg.num_stages):
        first.append(h)
        # The output side of a 'SAME' conv does not depend on the kernel size.
        h = same_padding(h, 3, cfg.stage_strides[s])[2]
        rest.append(h)
    return first, rest, h


def latency_keys(cfg: MobileNetV3Config, arch: MobileNetV3Arch) -> list[str]:
    """The keys of ``arch``'s stem, active blocks and head, in forward order."""
    first, rest, last = sides(cfg, arch.resolution)
    keys = [f"stem/r{arch.resolution}"]
    for s, blocks in enumerate(arch.stages):
        for b, (k, e) in enumerate(blocks):
            keys.append(block_key(s, b == 0, k, e, first[s] if b == 0 else rest[s]))
    keys.append(f"head/h{last}")
    return keys


def latency_pieces(space: SupernetSpace) -> list[LatencyPiece]:
    """Every piece any subnet of ``space`` (a :class:`MobileNetV3Space`) uses, each key once."""
    cfg = space.config
    pieces: dict[str, LatencyPiece] = {}

    def model(resolution: int):
        return space.static_model(space.at_resolution(space.smallest(), resolution), nnx.Rngs(0))

    for r in cfg.resolutions:
        pieces.setdefault(f"stem/r{r}", LatencyPiece(f"stem/r{r}", (r, r, cfg.in_channels),
                                                     lambda r=r: model(r).stem))
    for r in cfg.resolutions:
        first, rest, _ = sides(cfg, r)
        for s in range(cfg.num_stages):
            positions = [(True, first[s])] + ([(False, rest[s])] if cfg.max_depth > 1 else [])
            for is_first, side in positions:
                cin, cout, stride = cfg.block_io(s, 0 if is_first else 1)
                for k in cfg.kernel_choices:
                    for e in cfg.expand_choices:
                        key = block_key(s, is_first, k, e, side)
                        act, se = cfg.stage_acts[s], cfg.stage_se[s]
                        build = partial(lambda *a: StaticBlock(*a, nnx.Rngs(0), symmetric=cfg.symmetric,
                                                               se_divisor=cfg.se_divisor),
                                        cin, cout, stride, k, e, act, se)
                        pieces.setdefault(key, LatencyPiece(key, (side, side, cin), build))
    for r in cfg.resolutions:
        side = sides(cfg, r)[2]
        pieces.setdefault(f"head/h{side}", LatencyPiece(f"head/h{side}", (side, side, cfg.stage_channels[-1]),
                                                        lambda r=r: model(r).head))
    return list(pieces.values())
