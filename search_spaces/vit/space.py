"""The vit space: genes, canonical strings, exact costs, run-time selection arrays, latency pieces,
and the supernet contract delegated to the modules beside it.

Canonical string: ``r{resolution}-e{embed}`` then one ``-``-separated field per active layer,
``h{heads}m{mlp ratio}`` (the ratio written with ``%g``: ``m4``, ``m3.5``). Example (depth 3):
``r28-e128-h4m4-h2m3.5-h3m3``. Only active layers are written, so the depth is the number of layer
fields.
"""

from __future__ import annotations

import re
from functools import partial
from typing import Sequence

import jax
import numpy as np
from flax import nnx

from search_spaces.base import Gene, LatencyPiece, SupernetSpace, log_count, one_hot_plus_ordinal
from search_spaces.errors import ArchError
from search_spaces.vit.config import ViTArch, ViTConfig, check_config, hidden_units, tokens
from search_spaces.vit.static import StaticHead, StaticLayer, StaticStem, StaticViT, load_static_weights
from search_spaces.vit.supernet import init_supernet, sort_channels, supernet_apply
from search_spaces.vit.trainer import ComposedViT

_LAYER_RE = re.compile(r"^h(\d+)m(\d+(?:\.\d+)?)$")


def _set(values) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


# Latency keys name everything that changes a piece's shape or cost: the stem's input side and
# embed dim; a layer's tokens, embed dim, heads and mlp ratio; the head's tokens and embed dim.
def _stem_key(resolution: int, d: int) -> str:
    return f"stem/r{resolution}/e{d}"


def _layer_key(n: int, d: int, heads: int, ratio: float) -> str:
    return f"layer/n{n}/e{d}/h{heads}/m{ratio:g}"


def _head_key(n: int, d: int) -> str:
    return f"head/n{n}/e{d}"


class ViTSpace(SupernetSpace):
    """AutoFormer-style ViT space over a :class:`ViTConfig`."""

    progressive_phases = (("depth", ("depth",)), ("width", ("depth", "heads", "mlp", "embed", "resolution")))

    def __init__(self, config: ViTConfig, name: str = "vit", options: dict | None = None):
        genes = [Gene("resolution", config.resolutions), Gene("embed", config.embed_choices),
                 Gene("depth", config.depth_choices)]
        for i in range(config.max_depth):
            genes += [Gene(f"l{i + 1}.heads", config.heads_choices), Gene(f"l{i + 1}.mlp", config.mlp_choices)]
        super().__init__(check_config(config, name), name, options, genes)

    # --- genome ------------------------------------------------------------------------
    def from_genome(self, genome: Sequence[int]) -> ViTArch:
        cfg = self.config
        g = self.check_genome(genome)
        depth = cfg.depth_choices[g[2]]
        layers = tuple((cfg.heads_choices[g[3 + 2 * i]], cfg.mlp_choices[g[4 + 2 * i]]) for i in range(depth))
        return ViTArch(cfg.resolutions[g[0]], cfg.embed_choices[g[1]], layers)

    def to_genome(self, arch: ViTArch) -> np.ndarray:
        cfg = self.config
        self._validate(arch)
        g = [cfg.resolutions.index(arch.resolution), cfg.embed_choices.index(arch.embed),
             cfg.depth_choices.index(arch.depth)]
        for i in range(cfg.max_depth):
            if i < arch.depth:
                h, m = arch.layers[i]
                g += [cfg.heads_choices.index(h), cfg.mlp_choices.index(m)]
            else:
                g += [0, 0]
        return np.asarray(g, np.int32)

    def features(self, arch: ViTArch) -> np.ndarray:
        active = np.asarray([True] * 3 + [i < arch.depth for i in range(self.config.max_depth) for _ in (0, 1)])
        return one_hot_plus_ordinal(self._genes, self.to_genome(arch), active)

    # --- strings -------------------------------------------------------------------------
    def _validate(self, arch: ViTArch) -> None:
        cfg = self.config
        if arch.resolution not in cfg.resolutions:
            raise ArchError(f"resolution {arch.resolution} not in {_set(cfg.resolutions)}")
        if arch.embed not in cfg.embed_choices:
            raise ArchError(f"embed {arch.embed} not in {_set(cfg.embed_choices)}")
        if arch.depth not in cfg.depth_choices:
            raise ArchError(f"depth {arch.depth} not in {_set(cfg.depth_choices)}")
        for i, (h, m) in enumerate(arch.layers):
            if h not in cfg.heads_choices:
                raise ArchError(f"layer {i + 1}: heads {h} not in {_set(cfg.heads_choices)}")
            if m not in cfg.mlp_choices:
                raise ArchError(f"layer {i + 1}: mlp ratio {m:g} not in {_set(cfg.mlp_choices)}")

    def encode(self, arch: ViTArch) -> str:
        self._validate(arch)
        return f"r{arch.resolution}-e{arch.embed}-" + "-".join(f"h{h}m{m:g}" for h, m in arch.layers)

    def decode(self, text: str) -> ViTArch:
        cfg = self.config
        example = self.encode(self.smallest())
        parts = str(text).strip().split("-")
        if not parts[0].startswith("r") or not parts[0][1:].isdigit():
            raise ArchError(f"arch {text!r}: first field {parts[0]!r} must be r<resolution>, resolution in "
                            f"{_set(cfg.resolutions)} (example: {example})")
        if len(parts) < 2 or not parts[1].startswith("e") or not parts[1][1:].isdigit():
            field = parts[1] if len(parts) > 1 else ""
            raise ArchError(f"arch {text!r}: second field {field!r} must be e<embed>, embed in "
                            f"{_set(cfg.embed_choices)} (example: {example})")
        layers = []
        for i, field in enumerate(parts[2:]):
            m = _LAYER_RE.match(field)
            if not m:
                raise ArchError(f"arch {text!r}: layer {i + 1} field {field!r} must be h<heads>m<mlp ratio> with "
                                f"heads in {_set(cfg.heads_choices)} and mlp ratio in {_set(cfg.mlp_choices)}")
            layers.append((int(m.group(1)), float(m.group(2))))
        arch = ViTArch(int(parts[0][1:]), int(parts[1][1:]), tuple(layers))
        try:
            self._validate(arch)
        except ArchError as e:
            raise ArchError(f"arch {text!r}: {e} (layers are '-'-separated fields after r<res>-e<embed>)") from None
        return arch

    # --- run-time selection -------------------------------------------------------------
    def arch_arrays(self, arch: ViTArch) -> np.ndarray:
        """(1 + max_depth, 2) int32: row 0 is (embed index, depth), row 1 + i is layer i's
        (heads index, mlp index), zeros for layers beyond the depth."""
        cfg = self.config
        g = self.to_genome(arch)
        out = np.zeros((1 + cfg.max_depth, 2), np.int32)
        out[0] = (g[1], arch.depth)
        out[1:, 0], out[1:, 1] = g[3::2], g[4::2]
        return out

    # --- costs ---------------------------------------------------------------------------
    def _layers(self, arch: ViTArch):
        """Yields (kind, macs, params) per layer of the static subnet, in order."""
        cfg = self.config
        d, g, p = arch.embed, arch.resolution // cfg.patch, cfg.patch
        n = g * g + 1  # tokens, with the class token
        yield "patch", g * g * p * p * cfg.in_channels * d, p * p * cfg.in_channels * d + d
        yield "tokens", 0, d + n * d  # class token, position embeddings
        for h, ratio in arch.layers:
            q = h * cfg.head_dim
            m = hidden_units(ratio, d)
            yield "ln1", 0, 2 * d
            yield "qkv", n * d * 3 * q, d * 3 * q + 3 * q
            yield "attention", 2 * n * n * q, 0  # q k^T and attention @ v
            yield "proj", n * q * d, q * d + d
            yield "ln2", 0, 2 * d
            yield "mlp", 2 * n * d * m, 2 * d * m + m + d
        yield "norm", 0, 2 * d
        yield "classifier", d * cfg.num_classes, d * cfg.num_classes + cfg.num_classes  # class token only

    def structure_features(self, arch: ViTArch) -> np.ndarray:
        """The genome's one-hot (:meth:`features`), then per layer (its stage) whether it is active, its
        heads and MLP ratio, log10 MACs and params; depth, embed dim, mean and max heads and MLP
        ratio, the log10 MACs of attention and of the MLPs, the total log10 MACs and params, the
        token count and the resolution (over the largest)."""
        cfg = self.config
        per_layer, attention, mlp, block = [], 0, 0, -1
        macs, params = [0] * cfg.max_depth, [0] * cfg.max_depth
        for kind, m, p in self._layers(arch):
            block += kind == "ln1"
            if kind in ("attention", "qkv", "proj"):
                attention += m
            elif kind == "mlp":
                mlp += m
            if 0 <= block < arch.depth and kind not in ("norm", "classifier"):
                macs[block] += m
                params[block] += p
        for i in range(cfg.max_depth):
            h, r = arch.layers[i] if i < arch.depth else (0, 0.0)
            per_layer += [float(i < arch.depth), h, r, log_count(macs[i]), log_count(params[i])]
        hs, rs = [h for h, _ in arch.layers], [r for _, r in arch.layers]
        summary = [arch.depth, arch.embed / max(cfg.embed_choices), float(np.mean(hs)), max(hs), float(np.mean(rs)),
                   max(rs), log_count(attention), log_count(mlp), log_count(self.flops(arch)),
                   log_count(self.params(arch)), (arch.resolution // cfg.patch) ** 2 + 1,
                   arch.resolution / max(cfg.resolutions)]
        return np.concatenate([self.features(arch), np.asarray(per_layer + summary, np.float32)])

    def structure_feature_names(self) -> list[str]:
        names = [f"layer{i + 1}.{f}" for i in range(self.config.max_depth)
                 for f in ("active", "heads", "mlp_ratio", "log_macs", "log_params")]
        names += ["depth", "embed", "heads_mean", "heads_max", "mlp_ratio_mean", "mlp_ratio_max",
                  "attention.log_macs", "mlp.log_macs", "log_macs", "log_params", "tokens", "resolution"]
        return self.feature_names() + names

    def flops(self, arch: ViTArch) -> int:
        return int(sum(m for _, m, _ in self._layers(arch)))

    def params(self, arch: ViTArch) -> int:
        return int(sum(p for _, _, p in self._layers(arch)))

    # --- latency pieces ----------------------------------------------------------------
    def latency_keys(self, arch: ViTArch) -> list[str]:
        n, d = tokens(self.config, arch.resolution), arch.embed
        return [_stem_key(arch.resolution, d), *(_layer_key(n, d, h, m) for h, m in arch.layers), _head_key(n, d)]

    def latency_pieces(self) -> list[LatencyPiece]:
        """The stem (per resolution and embed), every layer (tokens, embed, heads, mlp ratio) and the
        head (tokens, embed), as :class:`StaticViT`'s own submodules."""
        cfg = self.config
        pieces: dict[str, LatencyPiece] = {}

        def add(key: str, input_shape: tuple[int, ...], build) -> None:
            pieces.setdefault(key, LatencyPiece(key, input_shape, build))

        for r in cfg.resolutions:
            for d in cfg.embed_choices:
                add(_stem_key(r, d), (r, r, cfg.in_channels), lambda r=r, d=d: StaticStem(cfg, r, d, nnx.Rngs(0)))
        for r in cfg.resolutions:
            n = tokens(cfg, r)
            for d in cfg.embed_choices:
                for h in cfg.heads_choices:
                    for m in cfg.mlp_choices:
                        add(_layer_key(n, d, h, m), (n, d),
                            lambda d=d, h=h, m=m: StaticLayer(d, h, cfg.head_dim, hidden_units(m, d), nnx.Rngs(0)))
        for r in cfg.resolutions:
            n = tokens(cfg, r)
            for d in cfg.embed_choices:
                add(_head_key(n, d), (n, d), lambda d=d: StaticHead(cfg, d, nnx.Rngs(0)))
        return list(pieces.values())

    # --- models --------------------------------------------------------------------------
    # Thin delegations to the package's modules; every space has this same shape (boilerplate).
    def init_supernet(self, key: jax.Array) -> dict:
        # one program (as resnet's): eagerly, each differently shaped initialiser compiles on its own,
        # 96 s of a mobilenetv3 w1.0 training's 488 s warm-up on a loaded 2-core CPU (issue 29)
        return jax.jit(partial(init_supernet, self.config))(key)

    def supernet_apply(self, params, stats, x, arch_arr, *, mode: str):
        return supernet_apply(self.config, params, stats, x, arch_arr, mode=mode)

    def static_model(self, arch: ViTArch, rngs: nnx.Rngs) -> StaticViT:
        self._validate(arch)
        return StaticViT(self.config, arch, rngs)

    def extract(self, params, stats, arch: ViTArch) -> StaticViT:
        """The standalone subnet with weights sliced from the supernet (``stats`` is unused: no BN)."""
        model = self.static_model(arch, nnx.Rngs(0))
        load_static_weights(self.config, model, params, arch)
        return model

    def sort_channels(self, params) -> dict:
        return sort_channels(self.config, params)

    def make_trainer(self, mean: float, std: float, label_smoothing: float, kernels: str):
        if kernels == "pallas":
            raise ArchError(f"space {self.name!r} has no Pallas formulation: kernels {kernels!r}; use 'xla' or 'auto'")
        return ComposedViT(self.config, mean, std, label_smoothing)
