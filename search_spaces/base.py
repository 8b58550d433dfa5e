"""The interface every search space implements, and the registry that finds spaces by name.

A space is two things:

* a *genome*: a fixed-length vector of categorical genes (one index per gene into that gene's
  choices). This is what search algorithms mutate and what predictors encode.
* an *architecture* (``Arch``): the space's own frozen value, with exactly one canonical string.
  ``decode(encode(a)) == a`` always holds, and two genomes that build the same network (they differ
  only in genes a shallower depth switches off) map to the same architecture and string.

Spaces that can train a weight-sharing supernet subclass :class:`SupernetSpace`; purely tabular
spaces (NAS-Bench-201) only implement :class:`SearchSpace`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

Arch = Any  # each space defines its own frozen dataclass


class ArchError(ValueError):
    """An architecture string or genome that is not valid in a space (the message says why)."""


@dataclasses.dataclass(frozen=True)
class Gene:
    """One categorical decision: its name (used in error messages and CSV headers) and its choices."""

    name: str
    choices: tuple

    @property
    def ordinal(self) -> bool:
        """True when the choices are numbers, so their order means something to a predictor."""
        return all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in self.choices)


class SearchSpace(abc.ABC):
    """Genome, canonical strings, sampling and predictor features of one space."""

    name: str

    # --- the genome -------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def genes(self) -> tuple[Gene, ...]:
        """The categorical genes, in genome order."""

    @abc.abstractmethod
    def from_genome(self, genome: Sequence[int]) -> Arch:
        """Builds the architecture of a vector of choice indices (one per gene)."""

    @abc.abstractmethod
    def to_genome(self, arch: Arch) -> np.ndarray:
        """The canonical genome of an architecture (genes a shallower depth switches off are 0)."""

    # --- canonical strings ---------------------------------------------------------------
    @abc.abstractmethod
    def encode(self, arch: Arch) -> str:
        """The one canonical string of ``arch``."""

    @abc.abstractmethod
    def decode(self, text: str) -> Arch:
        """Parses a canonical string; raises :class:`ArchError` naming the bad field and its choices."""

    # --- convenience built on the above -----------------------------------------------------
    def sample(self, rng: np.random.Generator) -> Arch:
        """A uniformly random genome's architecture."""
        return self.from_genome([rng.integers(len(g.choices)) for g in self.genes])

    def largest(self) -> Arch:
        """The architecture with the last (largest) choice of every gene."""
        return self.from_genome([len(g.choices) - 1 for g in self.genes])

    def smallest(self) -> Arch:
        """The architecture with the first (smallest) choice of every gene."""
        return self.from_genome([0] * len(self.genes))

    def canonical(self, text: str) -> str:
        """Normalises a user-supplied string to the canonical one (validating it)."""
        return self.encode(self.decode(text))

    def features(self, arch: Arch) -> np.ndarray:
        """Predictor encoding: one-hot per gene, then the ordinal value of every numeric gene.

        Spaces with dependent genes (depth switching blocks off) override this so that inactive genes
        encode as all-zero, making equal architectures encode equally.
        """
        genome = self.to_genome(arch)
        return _one_hot_plus_ordinal(self.genes, genome, active=np.ones(len(genome), bool))

    def feature_names(self) -> list[str]:
        """Column names matching :meth:`features`."""
        names = [f"{g.name}={c}" for g in self.genes for c in g.choices]
        names += [g.name for g in self.genes if g.ordinal]
        return names


def _one_hot_plus_ordinal(genes: Sequence[Gene], genome: np.ndarray, active: np.ndarray) -> np.ndarray:
    one_hot = []
    ordinal = []
    for gene, idx, on in zip(genes, genome, active):
        row = np.zeros(len(gene.choices), np.float32)
        if on:
            row[int(idx)] = 1.0
        one_hot.append(row)
        if gene.ordinal:
            lo, hi = min(gene.choices), max(gene.choices)
            value = (gene.choices[int(idx)] - lo) / (hi - lo) if (on and hi > lo) else 0.0
            ordinal.append(np.float32(value))
    return np.concatenate(one_hot + [np.asarray(ordinal, np.float32)])


class SupernetSpace(SearchSpace):
    """A space with a weight-sharing supernet, static subnets and exact cost counts."""

    #: resolutions (input side in pixels) this space can run at
    resolutions: tuple[int, ...]

    @abc.abstractmethod
    def flops(self, arch: Arch) -> int:
        """Multiply-accumulates of one forward pass at batch 1 (the usual 'FLOPs' of NAS papers)."""

    @abc.abstractmethod
    def params(self, arch: Arch) -> int:
        """Number of trainable parameters of the static subnet."""


_REGISTRY: dict[str, Callable[..., SearchSpace]] = {}


def register_space(name: str, factory: Callable[..., SearchSpace]) -> None:
    """Adds a space factory under ``name`` (factories take keyword options like ``num_classes``)."""
    _REGISTRY[name] = factory


def space_names() -> list[str]:
    return sorted(_REGISTRY)


def get_space(name: str, **options) -> SearchSpace:
    """Builds the space registered as ``name``; unknown names list the known ones."""
    if name not in _REGISTRY:
        raise ArchError(f"unknown search space {name!r}; known spaces: {', '.join(space_names())}")
    return _REGISTRY[name](**options)
