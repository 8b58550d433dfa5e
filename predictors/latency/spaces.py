"""The spaces latency models are made for: any registered supernet space that supplies latency pieces."""

from __future__ import annotations

from typing import Sequence

from predictors.latency.errors import LatencyError
from search_spaces import SupernetSpace, get_space, supernet_space_names


def has_latency_pieces(space) -> bool:
    """Whether ``space`` lists the pieces a lookup table times (:meth:`SupernetSpace.latency_pieces`)."""
    return isinstance(space, SupernetSpace) and type(space).latency_pieces is not SupernetSpace.latency_pieces


def make_latency_space(name: str, *, resolutions: Sequence[int] | None = None, in_channels: int | None = None,
                       num_classes: int | None = None, width_mult: float | None = None,
                       defaults: dict | None = None):
    """(space, options) of the supernet space ``name``: the options given, then those in ``defaults``
    (a latency file's recorded options), then the space's own defaults (its factory's).

    ``options`` are what a latency file records to rebuild the space: its input channels, classes
    and resolutions, and the width multiplier where one was set.

    Raises:
      LatencyError: a space without static subnets or latency pieces, or a resolution below 1.
      ArchError: options the space does not take (e.g. a width multiplier for a -tiny space).
    """
    if name not in supernet_space_names():
        raise LatencyError(f"space {name!r} has no static subnets to time; latency spaces: "
                           f"{', '.join(supernet_space_names())}")
    given = {"resolutions": tuple(resolutions) if resolutions else None, "in_channels": in_channels,
             "num_classes": num_classes, "width_mult": width_mult}
    options = {k: v for k, v in given.items() if v is not None}
    for k, v in (defaults or {}).items():
        options.setdefault(k, tuple(v) if isinstance(v, list) else v)
    for r in options.get("resolutions", ()):
        if int(r) < 1:
            raise LatencyError(f"resolution {r}: resolutions must be positive integers")
    space = get_space(name, **options)
    if not has_latency_pieces(space):
        raise LatencyError(f"space {name!r} supplies no latency pieces; latency spaces: "
                           f"{', '.join(n for n in supernet_space_names() if has_latency_pieces(get_space(n)))}")
    cfg = space.config
    recorded = {"in_channels": cfg.in_channels, "num_classes": cfg.num_classes, "resolutions": list(cfg.resolutions)}
    if "width_mult" in options:
        recorded["width_mult"] = float(options["width_mult"])
    return space, recorded
