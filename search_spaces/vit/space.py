"""The vit space: genes, canonical strings, the plan and the one block function (stem, pre-norm
transformer layer, head); trainers, evaluation, the deployable model, costs and latency pieces are
derived from them (:mod:`search_spaces.planned`).

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
import jax.numpy as jnp
import numpy as np

from search_spaces.base import Gene, log_count, one_hot_plus_ordinal
from search_spaces.errors import ArchError
from search_spaces.plan import BlockSpec
from search_spaces.planned import PlannedSpace
from search_spaces.vit.config import ViTArch, ViTConfig, check_config, hidden_units
from search_spaces.vit.supernet import init_supernet, resized_pos, sort_channels


# the views of weights whose layout is not (in, out): module-level, so a space's recipes pickle
def _first(w, d):
    return w[:d]


def _pos_view(cfg: ViTConfig, grid: int, d: int, w):
    return resized_pos(cfg, w, grid)[:, :d]


def _qkv_view(w, b, d, h):  # (D, 3, H, hd), (3, H, hd) -> (d, 3 q), (3 q,)
    q = h * w.shape[-1]
    return w[:d, :, :h].reshape(d, 3 * q), b[:, :h].reshape(3 * q)


def _proj_view(w, b, d, h):  # (H, hd, D), (D,) -> (q, d), (d,)
    return w[:h, :, :d].reshape(h * w.shape[1], d), b[:d]


def block(cfg: ViTConfig, spec: BlockSpec, ops, x):
    """The stem (patch embedding, class token, position embeddings), one pre-norm transformer
    layer at static (embed, heads, mlp ratio), or the head (final LayerNorm and the classifier on
    the class token). Every weight is its first ``embed`` channels, its first heads and hidden
    units (AutoFormer's weight entanglement).

    A layer and the head read the first ``embed`` channels of their input: in the evaluation
    forward the tokens between layers are zero-padded to the largest embed dim."""
    d = spec.a["embed"]
    if spec.kind == "stem":
        z = ops.conv("patch/w", x, cfg.patch, n_out=d, valid=True, bias="patch/b")
        z = z.reshape(z.shape[0], -1, z.shape[-1])  # (B, N, d)
        cls = jnp.broadcast_to(ops.param("cls", partial(_first, d=d)), (z.shape[0], 1, d))
        pos = ops.param("pos", partial(_pos_view, cfg, x.shape[1] // cfg.patch, d))
        return jnp.concatenate([cls, z], axis=1) + pos
    x = x[..., :d]
    if spec.kind == "head":
        return ops.dense("classifier/w", ops.ln("norm", x[:, 0], d), d, cfg.num_classes, bias="classifier/b")
    h, hd, m = spec.a["heads"], cfg.head_dim, hidden_units(spec.a["mlp"], d)
    q = h * hd
    y = ops.ln("ln1", x, d)
    qkv = ops.dense("qkv/w", y, d, 3 * q, bias="qkv/b", view=partial(_qkv_view, d=d, h=h))
    qkv = qkv.reshape(*y.shape[:-1], 3, h, hd)  # (B, N, 3, h, hd)
    a = ops.attention(qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :])
    x = x + ops.dense("proj/w", a.reshape(*a.shape[:-2], q), q, d, bias="proj/b", view=partial(_proj_view, d=d, h=h))
    y = jax.nn.gelu(ops.dense("fc1/w", ops.ln("ln2", x, d), d, m, bias="fc1/b"))
    return x + ops.dense("fc2/w", y, m, d, bias="fc2/b")


_LAYER_RE = re.compile(r"^h(\d+)m(\d+(?:\.\d+)?)$")


def _set(values) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


class ViTSpace(PlannedSpace):
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

    # --- plan ---------------------------------------------------------------------------------
    def plan(self, arch: ViTArch) -> tuple[BlockSpec, ...]:
        """The stem, every active layer (slot: its position; rows of the stacked layers), the head."""
        self._validate(arch)
        d = arch.embed
        specs = [BlockSpec("stem", "stem", (("embed", d),), keys=("patch", "cls", "pos"), name=f"stem/r{{side}}/e{d}",
                           group="stem")]
        for i, (h, m) in enumerate(arch.layers):
            specs.append(BlockSpec("layer", i, (("embed", d), ("heads", h), ("mlp", m)), path=("layers",), index=i,
                                   name=f"layer/n{{side}}/e{d}/h{h}/m{m:g}", group=f"layer{i + 1}"))
        specs.append(BlockSpec("head", "head", (("embed", d),), keys=("norm", "classifier"), name=f"head/n{{side}}/e{d}",
                               group="head"))
        return tuple(specs)

    def block(self, spec: BlockSpec, ops, x):
        return block(self.config, spec, ops, x)

    def cover(self) -> list[ViTArch]:
        """Full depth with one (embed, heads, mlp ratio), for each triple, embed-major."""
        cfg = self.config
        return [ViTArch(cfg.resolutions[0], d, ((h, m),) * cfg.max_depth)
                for d in cfg.embed_choices for h in cfg.heads_choices for m in cfg.mlp_choices]

    def structure_features(self, arch: ViTArch) -> np.ndarray:
        """The genome's one-hot (:meth:`features`), then per layer (its stage) whether it is active, its
        heads and MLP ratio, log10 MACs and params; depth, embed dim, mean and max heads and MLP
        ratio, the log10 MACs of attention and of the MLPs, the total log10 MACs and params, the
        token count and the resolution (over the largest)."""
        cfg = self.config
        macs, params = self.group_costs(arch)
        attention = mlp = 0
        for spec, _, layers in self.walk(arch):
            for layer in layers:
                if layer.op == "attention" or layer.name in ("qkv/w", "proj/w"):
                    attention += layer.macs
                elif layer.name in ("fc1/w", "fc2/w"):
                    mlp += layer.macs
        per_layer = []
        for i in range(cfg.max_depth):
            h, r = arch.layers[i] if i < arch.depth else (0, 0.0)
            per_layer += [float(i < arch.depth), h, r, log_count(macs[f"layer{i + 1}"]),
                          log_count(params[f"layer{i + 1}"])]
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

    def init_supernet(self, key: jax.Array) -> dict:
        # one program (as resnet's): eagerly, each differently shaped initialiser compiles on its own,
        # 96 s of a mobilenetv3 w1.0 training's 488 s warm-up on a loaded 2-core CPU (issue 29)
        return jax.jit(partial(init_supernet, self.config))(key)

    def sort_channels(self, params) -> dict:
        return sort_channels(self.config, params)
