"""The vit space's shape: its config (the choices of every elastic dimension) and one subnet's arch."""

from __future__ import annotations

import dataclasses

from search_spaces.errors import ArchError
from search_spaces.layers import make_divisible


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    """Shape of the supernet: the choices of every elastic dimension."""

    embed_choices: tuple[int, ...]
    heads_choices: tuple[int, ...]
    mlp_choices: tuple[float, ...]
    depth_choices: tuple[int, ...]
    head_dim: int
    patch: int
    resolutions: tuple[int, ...] = (32,)
    in_channels: int = 3
    num_classes: int = 10

    @property
    def max_embed(self) -> int:
        return max(self.embed_choices)

    @property
    def max_heads(self) -> int:
        return max(self.heads_choices)

    @property
    def max_depth(self) -> int:
        return max(self.depth_choices)

    @property
    def max_hidden(self) -> int:
        return max(hidden_units(r, d) for r in self.mlp_choices for d in self.embed_choices)

    @property
    def max_grid(self) -> int:
        return max(self.resolutions) // self.patch


def hidden_units(ratio: float, embed: int) -> int:
    """MLP hidden units of a layer: ``ratio * embed``, rounded."""
    return int(round(ratio * embed))


def tokens(cfg: ViTConfig, resolution: int) -> int:
    """Tokens a layer sees at ``resolution``: the patch grid's and the class token."""
    grid = resolution // cfg.patch
    return grid * grid + 1


def check_config(cfg: ViTConfig, name: str) -> ViTConfig:
    """Returns ``cfg`` if every resolution is a positive multiple of the patch size.

    Raises:
      ArchError: naming the bad resolutions and the allowed ones.
    """
    bad = [r for r in cfg.resolutions if r % cfg.patch or r < cfg.patch]
    if bad:
        raise ArchError(f"{name}: resolution(s) {', '.join(map(str, bad))} are not multiples of the patch "
                        f"size {cfg.patch}; choose resolutions in {{{cfg.patch}, {2 * cfg.patch}, "
                        f"{3 * cfg.patch}, ...}}")
    return cfg


def vit_config(width_mult: float = 1.0, in_channels: int = 3, num_classes: int = 10,
               resolutions: tuple[int, ...] = (24, 28, 32)) -> ViTConfig:
    """AutoFormer-like choices sized for 28-32 px inputs: patch 4 (a 6x6 to 8x8 grid)."""
    return ViTConfig(
        embed_choices=tuple(make_divisible(e * width_mult) for e in (96, 128, 160)),
        heads_choices=(2, 3, 4),
        mlp_choices=(3.0, 3.5, 4.0),
        depth_choices=(4, 5, 6),
        head_dim=32,
        patch=4,
        resolutions=tuple(resolutions),
        in_channels=in_channels,
        num_classes=num_classes,
    )


# A config literal like vit_config's with the tiny choices: the same keyword shape by design.
def tiny_config(in_channels: int = 1, num_classes: int = 10, resolutions: tuple[int, ...] = (8,)) -> ViTConfig:
    """A few small layers for 8x8 digits and the tests: patch 2 (a 4x4 grid at 8 px)."""
    return ViTConfig(
        embed_choices=(16, 24, 32),
        heads_choices=(1, 2),
        mlp_choices=(2.0, 4.0),
        depth_choices=(1, 2, 3),
        head_dim=8,
        patch=2,
        resolutions=tuple(resolutions),
        in_channels=in_channels,
        num_classes=num_classes,
    )


@dataclasses.dataclass(frozen=True)
class ViTArch:
    """One subnet: resolution, embed dim, and (heads, mlp ratio) of each active layer."""

    resolution: int
    embed: int
    layers: tuple[tuple[int, float], ...]

    @property
    def depth(self) -> int:
        return len(self.layers)
