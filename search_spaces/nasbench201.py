"""The NAS-Bench-201 cell space: 6 edges of a 4-node DAG, each one of 5 operations (5**6 = 15625 cells).

Canonical strings are NAS-Bench-201's own (``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``) so that a
benchmark table's ``arch_str`` column is usable as is. The space is purely tabular: no supernet, no
FLOPs counter; its truth comes from a table (see ``nas_cli.table_eval``).
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from search_spaces.base import ArchError, Gene, SearchSpace, register_space

#: NAS-Bench-201's operations, in the benchmark's own index order
OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")

#: the 6 edges as (to_node, from_node), in the order of the canonical string
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


@dataclasses.dataclass(frozen=True)
class Cell:
    """One NAS-Bench-201 cell: the operation on each edge, in :data:`EDGES` order."""

    ops: tuple[str, ...]


class NASBench201Space(SearchSpace):
    """The 15625 cells of NAS-Bench-201 as a 6-gene categorical genome."""

    name = "nas-bench-201"

    def __init__(self):
        self._genes = tuple(Gene(f"edge{dst}<-{src}", OPS) for dst, src in EDGES)

    @property
    def genes(self) -> tuple[Gene, ...]:
        return self._genes

    def from_genome(self, genome: Sequence[int]) -> Cell:
        return Cell(tuple(OPS[idx] for idx in self.check_genome(genome)))

    def to_genome(self, arch: Cell) -> np.ndarray:
        return np.asarray([OPS.index(op) for op in arch.ops], np.int64)

    def encode(self, arch: Cell) -> str:
        o = arch.ops
        return f"|{o[0]}~0|+|{o[1]}~0|{o[2]}~1|+|{o[3]}~0|{o[4]}~1|{o[5]}~2|"

    def decode(self, text: str) -> Cell:
        if not isinstance(text, str):
            raise ArchError(f"a nas-bench-201 architecture is a string, got {type(text).__name__}")
        example = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
        nodes = text.strip().split("+")
        if len(nodes) != 3:
            raise ArchError(
                f"nas-bench-201 string {text!r} has {len(nodes)} node groups separated by '+'; "
                f"expected 3, e.g. {example}"
            )
        ops = []
        for dst, group in enumerate(nodes, start=1):
            if not (group.startswith("|") and group.endswith("|")):
                raise ArchError(f"node {dst} group {group!r} of {text!r} must start and end with '|'")
            fields = group[1:-1].split("|")
            if len(fields) != dst:
                raise ArchError(f"node {dst} group {group!r} of {text!r} has {len(fields)} edges; expected {dst}")
            for src, field in enumerate(fields):
                op, sep, inp = field.partition("~")
                if op not in OPS:
                    raise ArchError(
                        f"edge {dst}<-{src} of {text!r} has operation {op!r}; allowed: {', '.join(OPS)}"
                    )
                if not sep or inp != str(src):
                    raise ArchError(
                        f"edge field {field!r} of {text!r} must read '{op}~{src}' (node {dst} input {src})"
                    )
                ops.append(op)
        return Cell(tuple(ops))

    # The genome order is the benchmark's op order, whose last op (avg_pool) is not the most
    # expensive one; "largest"/"smallest" mean compute, so they are the all-3x3 and all-none cells.
    def largest(self) -> Cell:
        """The most expensive cell: a 3x3 convolution on every edge."""
        return Cell(("nor_conv_3x3",) * len(EDGES))

    def smallest(self) -> Cell:
        """The cheapest cell: every edge ``none``."""
        return Cell(("none",) * len(EDGES))

    def all_archs(self) -> list[Cell]:
        """Every cell of the space (15625), in genome (mixed-radix) order."""
        grid = np.stack(np.meshgrid(*[range(len(OPS))] * len(EDGES), indexing="ij"), -1).reshape(-1, len(EDGES))
        return [self.from_genome(g) for g in grid]


register_space("nas-bench-201", NASBench201Space)
