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
import importlib
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from search_spaces.errors import ArchError
from search_spaces.registry import Registry

Arch = Any  # each space defines its own frozen dataclass


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

    def check_genome(self, genome: Sequence[int]) -> list[int]:
        """``genome`` as a list of ints, or an ArchError naming the wrong length or the first gene
        whose index is not an integer in range (every space's ``from_genome`` starts here)."""
        genome = list(genome)
        if len(genome) != len(self.genes):
            raise ArchError(f"a {self.name} genome has {len(self.genes)} genes, got {len(genome)}")
        for gene, idx in zip(self.genes, genome):
            if not (0 <= idx < len(gene.choices)) or int(idx) != idx:
                raise ArchError(f"gene {gene.name} has index {idx!r}; allowed: 0..{len(gene.choices) - 1}")
        return [int(v) for v in genome]

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
        return one_hot_plus_ordinal(self.genes, genome, active=np.ones(len(genome), bool))

    def feature_names(self) -> list[str]:
        """Column names matching :meth:`features`."""
        names = [f"{g.name}={c}" for g in self.genes for c in g.choices]
        names += [g.name for g in self.genes if g.ordinal]
        return names

    def structure_features(self, arch: Arch) -> np.ndarray:
        """What the space knows of ``arch``'s structure, for predictors (deterministic, finite).

        Spaces override this with what their structure says (a cell space: the cell after pruning
        dead edges, connectivity, live-op counts, a path encoding); by default it is
        :meth:`features`."""
        return self.features(arch)

    def structure_feature_names(self) -> list[str]:
        """Column names matching :meth:`structure_features`."""
        return self.feature_names()


def log_count(x: float) -> float:
    """``log10(1 + x)``: FLOPs and parameter counts on a scale a predictor can use (finite, ~0-10)."""
    return float(np.log10(1.0 + float(x)))


def one_hot_plus_ordinal(genes: Sequence[Gene], genome: np.ndarray, active: np.ndarray) -> np.ndarray:
    """One-hot of every gene (all zero where ``active`` is False), then each numeric gene's value
    scaled to [0, 1]: the encoding of :meth:`SearchSpace.features`."""
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


class Trainer:
    """What `nas train-supernet` asks of a space's training formulation (``make_trainer``). The
    optional capabilities have do-nothing defaults; a formulation overrides those it has."""

    def accumulate_grad(self, params, grads, arch: Arch, images, labels, soft_targets=None):
        """Adds d(loss)/d(params) of ``arch`` on this batch into ``grads`` (donated) and returns
        (loss, logits, grads); ``soft_targets`` switches the loss to distillation."""
        raise NotImplementedError

    def num_compiled(self) -> int:
        """Programs compiled so far (reported in the training metrics)."""
        raise NotImplementedError

    def prepare(self, params, archs: Sequence, images, labels, distill: bool = True, workers: int | None = None,
                also=()) -> int:
        """Compiles a step's programs before it runs and returns how many (default: none; each
        compiles when the step first calls it)."""
        return 0

    def shard_over(self, mesh) -> None:
        """Adapts to a batch split over ``mesh`` where GSPMD cannot partition the programs itself
        (default: nothing to adapt)."""


@dataclasses.dataclass(frozen=True, eq=False)
class LatencyPiece:
    """One part of a static subnet that a latency table times on its own.

    ``build()`` returns the static model's own submodule (never a re-implementation of it) and
    ``input_shape`` is its input without the batch axis. A subnet's latency is predicted from the
    pieces that :meth:`SupernetSpace.latency_keys` lists for it.
    """

    key: str
    input_shape: tuple[int, ...]
    build: Callable[[], Any]


class SupernetSpace(SearchSpace):
    """A space with a weight-sharing supernet, static subnets and exact cost counts.

    This is everything `nas train-supernet`, `nas search` and `nas export` ask of a space; the
    conformance suite (tests/search_spaces/test_spaces.py) checks every registered one. Architectures carry a
    ``resolution`` (input side in pixels). Parameters are a pytree of arrays; BatchNorm statistics
    (``stats``) are a pytree that "calib" mode returns and "eval" mode consumes.
    """

    #: resolutions (input side in pixels) this space can run at
    resolutions: tuple[int, ...]
    #: channels of the input images
    in_channels: int
    #: keyword options that rebuild this space with ``get_space(name, **options)``
    options: dict
    #: OFA progressive shrinking after the largest-only phase: (phase name, gene-name tags that
    #: may vary in it), in order; entering a phase named "width" sorts channels by importance
    progressive_phases: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __init__(self, config: Any, name: str, options: dict | None, genes: Sequence[Gene]):
        """Args:
          config: the space's frozen config (with ``resolutions`` and ``in_channels``).
          name: the registered name this space was built under.
          options: the keyword options that rebuild it with ``get_space(name, **options)``.
          genes: the genome, in order.
        """
        self.config = config
        self.name = name
        self.resolutions = config.resolutions
        self.in_channels = config.in_channels
        self.options = dict(options or {})
        self._genes = tuple(genes)

    @property
    def genes(self) -> tuple[Gene, ...]:
        return self._genes

    @abc.abstractmethod
    def flops(self, arch: Arch) -> int:
        """Multiply-accumulates of one forward pass at batch 1 (the usual 'FLOPs' of NAS papers)."""

    @abc.abstractmethod
    def params(self, arch: Arch) -> int:
        """Number of trainable parameters of the static subnet."""

    @abc.abstractmethod
    def init_supernet(self, key) -> Any:
        """Parameters of the largest network, from which every subnet slices its weights."""

    @abc.abstractmethod
    def arch_arrays(self, arch: Arch) -> np.ndarray:
        """Integer arrays that select ``arch`` inside ``supernet_apply`` at run time (one fixed
        shape for the whole space, so one compiled program serves every subnet)."""

    @abc.abstractmethod
    def supernet_apply(self, params, stats, x, arch_arr, *, mode: str):
        """The subnet selected by ``arch_arr`` on preprocessed images ``x`` (B, R, R, C).

        mode "eval": logits with the given BN ``stats``; "calib": (logits, batch BN statistics),
        ``stats`` is None; "train": logits with batch statistics, differentiable (the reference the
        trainer's gradients are tested against)."""

    @abc.abstractmethod
    def static_model(self, arch: Arch, rngs) -> Any:
        """The subnet as a standalone flax.nnx module with fresh weights (inference mode)."""

    @abc.abstractmethod
    def extract(self, params, stats, arch: Arch) -> Any:
        """``static_model(arch)`` holding the supernet's weights for ``arch`` and the given BN
        statistics; its forward must equal ``supernet_apply(..., mode="eval")``."""

    @abc.abstractmethod
    def make_trainer(self, mean: float, std: float, label_smoothing: float, kernels: str) -> Any:
        """The :class:`Trainer` for ``kernels`` ("xla" or "pallas"). A space without a Pallas
        formulation raises ArchError."""

    def has_pallas(self) -> bool:
        """Whether ``make_trainer(..., kernels="pallas")`` exists for this space."""
        return False

    def at_resolution(self, arch: Arch, resolution: int) -> Arch:
        """``arch`` with its input resolution replaced (every supernet space has a "resolution" gene)."""
        names = [g.name for g in self.genes]
        genome = list(self.to_genome(arch))
        i = names.index("resolution")
        genome[i] = self.genes[i].choices.index(resolution)
        return self.from_genome(genome)

    def middle(self) -> Arch:
        """The architecture with the middle choice of every gene."""
        return self.from_genome([len(g.choices) // 2 for g in self.genes])

    def latency_pieces(self) -> list[LatencyPiece]:
        """Every piece any subnet of this space contains, each once, in a deterministic order (what
        a latency lookup table times)."""
        raise NotImplementedError(f"space {self.name!r} defines no latency pieces")

    def latency_keys(self, arch: Arch) -> list[str]:
        """The :class:`LatencyPiece` keys that ``arch``'s static subnet runs, in order."""
        raise NotImplementedError(f"space {self.name!r} defines no latency pieces")

    def sort_channels(self, params) -> Any:
        """Reorders channels by importance so that narrower subnets keep the most important ones
        (OFA); must not change the largest network's function. Default: no elastic width."""
        return params


class SpaceEntry(NamedTuple):
    """A registered space: its factory (keyword options -> space), whether it has a supernet, and
    (supernet spaces) the resolutions it trains at by default, as pixels below the image side."""

    factory: Callable[..., SearchSpace]
    supernet: bool = False
    below_image_side: tuple[int, ...] = (0,)


#: every search space, by name
#: the modules whose import registers the built-in spaces: a new space adds its package's name here
BUILTIN_SPACES = ("mobilenetv3", "nasbench201", "resnet", "vit")


def _register_builtin_spaces() -> None:
    for name in BUILTIN_SPACES:
        importlib.import_module(f"search_spaces.{name}")


SPACES: Registry[SpaceEntry] = Registry("search space", load=_register_builtin_spaces)


def register_space(name: str, factory: Callable[..., SearchSpace], *, supernet: bool = False,
                   below_image_side: tuple[int, ...] = (0,)) -> None:
    """Adds a space factory under ``name`` (a taken name is an error). Factories take keyword
    options; a ``supernet`` space's factory takes ``in_channels``, ``num_classes``, ``resolutions``
    and ``width_mult`` and builds a :class:`SupernetSpace`, whose default resolutions are the image
    side less each of ``below_image_side`` (see :func:`default_resolutions`)."""
    SPACES.register(name, SpaceEntry(factory, supernet, tuple(below_image_side)))


def register_supernet_family(name: str, make: Callable[..., SupernetSpace], full_config: Callable[..., Any],
                             tiny_config: Callable[..., Any]) -> None:
    """Registers ``name`` (its config scaled by ``width_mult``) and ``name-tiny`` (fixed widths, for
    8x8 digits and the tests); ``make(config, name, options)`` builds either space."""

    def full(**options):
        kw = dict(options)
        width = kw.pop("width_mult", 1.0)
        return make(full_config(width_mult=width, **kw), name, options)

    def tiny(**options):
        kw = dict(options)
        if kw.pop("width_mult", 1.0) != 1.0:
            raise ArchError(f"{name}-tiny has fixed widths (width_mult 1.0); a width multiplier applies to {name}")
        return make(tiny_config(**kw), f"{name}-tiny", options)

    # the full space also trains 8 and 4 px below the image side (elastic resolution); the tiny one,
    # for 8x8 digits and the tests, at the image side only
    register_space(name, full, supernet=True, below_image_side=(8, 4, 0))
    register_space(f"{name}-tiny", tiny, supernet=True)


def default_resolutions(name: str, image_side: int, smallest: int = 8) -> tuple[int, ...]:
    """The resolutions the supernet space ``name`` trains at on images of ``image_side`` pixels when
    none are given: those its registration names, at least ``smallest`` pixels."""
    sides = sorted({image_side - d for d in SPACES.get(name).below_image_side})
    return tuple(r for r in sides if r >= smallest) or (image_side,)


def space_names() -> list[str]:
    return sorted(SPACES.names())


def supernet_space_names() -> list[str]:
    """The spaces `nas train-supernet` can train."""
    return sorted(n for n in SPACES.names() if SPACES.get(n).supernet)


def get_space(name: str, **options) -> SearchSpace:
    """Builds the space registered as ``name``; unknown names list the known ones."""
    return SPACES.get(name).factory(**options)
