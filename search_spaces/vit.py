"""AutoFormer/HAT-style vision transformer space: elastic embed dim, heads, MLP ratio, depth, resolution.

Canonical string: ``r{resolution}-e{embed}`` then one ``-``-separated field per active layer,
``h{heads}m{mlp ratio}`` (the ratio written with ``%g``: ``m4``, ``m3.5``). Example (depth 3):
``r28-e128-h4m4-h2m3.5-h3m3``. Only active layers are written, so the depth is the number of layer
fields.

The supernet (AutoFormer's weight entanglement): a patch-embedding conv, one embed dim ``d`` shared
by every layer (all weights sliced to their first ``d`` embed channels, LayerNorm over those ``d``),
per layer ``heads`` attention heads of a fixed head dim (q/k/v width ``heads * head_dim``, the
first heads' slices) and an MLP of ``round(ratio * d)`` hidden units (the first ones), the first
``depth`` layers, pre-norm blocks, a class token and a linear classifier on it.

Position embeddings are learned for the largest grid (``max(resolutions) // patch`` per side, plus
the class token's). A smaller resolution resizes the grid part bilinearly (no antialiasing, like
the image itself in :func:`search_spaces.layers.preprocess`), so each token keeps the embedding of
the same relative image position. The static subnet stores the resized embedding as its own
parameter, so its forward has no resize.

Run-time selection in :func:`supernet_apply` is a ``lax.switch`` over the static-shape pieces
(embed dim outside, (heads, mlp ratio) per layer inside one ``lax.scan``, an identity branch for
depth). Masking (the largest width with inactive channels, heads and hidden units zeroed, exact
LayerNorm over the active channels) compiled 3-4x faster (about 1 s against 3-4 s for vit at 32 px)
but ran every subnet at nearly the largest one's cost: per batch of 64, smallest subnet 65 ms
(switch) against 201 ms (masking), middle 171 against 248, largest 297 against 284 (2-core CPU under
load; bench/vit_selection.py, bench/RESULTS.md). Search evaluates many subnets, so the switch wins.
Training on CPU composes the same static pieces (:class:`ComposedViT`), so its cost follows the
subnet's size.

There is no BatchNorm: "calib" mode returns ``(logits, {})``.
"""

from __future__ import annotations

import dataclasses
import re
from functools import partial
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from search_spaces.base import ArchError, Gene, SupernetSpace, one_hot_plus_ordinal, register_supernet_family
from search_spaces.engine import ComposedTrainer, Piece
from search_spaces.layers import make_divisible, preprocess

LN_EPS = 1e-6


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


def _check_config(cfg: ViTConfig, name: str) -> ViTConfig:
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


_LAYER_RE = re.compile(r"^h(\d+)m(\d+(?:\.\d+)?)$")


def _set(values) -> str:
    return "{" + ", ".join(f"{v:g}" for v in values) + "}"


class ViTSpace(SupernetSpace):
    """AutoFormer-style ViT space over a :class:`ViTConfig`."""

    progressive_phases = (("depth", ("depth",)), ("width", ("depth", "heads", "mlp", "embed", "resolution")))

    def __init__(self, config: ViTConfig, name: str = "vit", options: dict | None = None):
        self.config = _check_config(config, name)
        self.name = name
        self.resolutions = config.resolutions
        self.in_channels = config.in_channels
        self.options = dict(options or {})
        genes = [Gene("resolution", config.resolutions), Gene("embed", config.embed_choices),
                 Gene("depth", config.depth_choices)]
        for i in range(config.max_depth):
            genes += [Gene(f"l{i + 1}.heads", config.heads_choices), Gene(f"l{i + 1}.mlp", config.mlp_choices)]
        self._genes = tuple(genes)

    # --- genome ------------------------------------------------------------------------
    @property
    def genes(self) -> tuple[Gene, ...]:
        return self._genes

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

    def flops(self, arch: ViTArch) -> int:
        return int(sum(m for _, m, _ in self._layers(arch)))

    def params(self, arch: ViTArch) -> int:
        return int(sum(p for _, _, p in self._layers(arch)))

    # --- models --------------------------------------------------------------------------
    def init_supernet(self, key: jax.Array) -> dict:
        return init_supernet(self.config, key)

    def supernet_apply(self, params, stats, x, arch_arr, *, mode: str):
        return supernet_apply(self.config, params, stats, x, arch_arr, mode=mode)

    def static_model(self, arch: ViTArch, rngs: nnx.Rngs) -> "StaticViT":
        self._validate(arch)
        return StaticViT(self.config, arch, rngs)

    def extract(self, params, stats, arch: ViTArch) -> "StaticViT":
        """The standalone subnet with weights sliced from the supernet (``stats`` is unused: no BN)."""
        model = self.static_model(arch, nnx.Rngs(0))
        load_static_weights(self.config, model, params, arch)
        return model

    def sort_channels(self, params) -> dict:
        return sort_channels(self.config, params)

    def make_trainer(self, mean: float, std: float, label_smoothing: float, kernels: str):
        if kernels == "pallas":
            raise ArchError(f"space {self.name!r} has no Pallas formulation; use --kernels xla or auto")
        return ComposedViT(self.config, mean, std, label_smoothing)


# ----------------------------------------------------------------------------------------------
# Supernet parameters
# ----------------------------------------------------------------------------------------------
def _normal(key, shape, std):
    return jax.random.normal(key, shape, jnp.float32) * std


def init_supernet(cfg: ViTConfig, key: jax.Array) -> dict:
    """Parameters of the largest network; every subnet's weights are slices of these.

    Layers are stacked on a leading ``max_depth`` axis (one ``lax.scan`` body in the supernet).
    qkv is (embed, 3, heads, head_dim) and proj (heads, head_dim, embed), so a subnet's heads are
    plain leading slices.
    """
    D, H, hd, M, L = cfg.max_embed, cfg.max_heads, cfg.head_dim, cfg.max_hidden, cfg.max_depth
    p, g = cfg.patch, cfg.max_grid
    keys = jax.random.split(key, 8)
    lk = jax.random.split(keys[7], 4)
    return {
        "patch": {"w": _normal(keys[0], (p, p, cfg.in_channels, D), (p * p * cfg.in_channels) ** -0.5),
                  "b": jnp.zeros((D,), jnp.float32)},
        "cls": _normal(keys[1], (D,), 0.02),
        "pos": _normal(keys[2], (g * g + 1, D), 0.02),
        "layers": {
            "ln1": {"scale": jnp.ones((L, D)), "bias": jnp.zeros((L, D))},
            "qkv": {"w": _normal(lk[0], (L, D, 3, H, hd), D ** -0.5), "b": jnp.zeros((L, 3, H, hd))},
            "proj": {"w": _normal(lk[1], (L, H, hd, D), (H * hd) ** -0.5 * 0.5), "b": jnp.zeros((L, D))},
            "ln2": {"scale": jnp.ones((L, D)), "bias": jnp.zeros((L, D))},
            "fc1": {"w": _normal(lk[2], (L, D, M), D ** -0.5), "b": jnp.zeros((L, M))},
            "fc2": {"w": _normal(lk[3], (L, M, D), M ** -0.5 * 0.5), "b": jnp.zeros((L, D))},
        },
        "norm": {"scale": jnp.ones((D,)), "bias": jnp.zeros((D,))},
        "classifier": {"w": _normal(keys[3], (D, cfg.num_classes), D ** -0.5 * 0.1),
                       "b": jnp.zeros((cfg.num_classes,), jnp.float32)},
    }


# ----------------------------------------------------------------------------------------------
# Static-shape pieces: the composed trainer's variants, and the arithmetic the static model repeats
# ----------------------------------------------------------------------------------------------
def layer_norm(x, scale, bias):
    """LayerNorm over the last axis, in nnx.LayerNorm's operation order (use_fast_variance=False)."""
    mean = jnp.mean(x, -1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
    return (x - mean) * (lax.rsqrt(var + LN_EPS) * scale) + bias


def resized_pos(cfg: ViTConfig, pos, grid: int):
    """Position embeddings (1 + grid * grid, C) from the largest grid's (1 + G * G, C)."""
    if grid == cfg.max_grid:
        return pos
    big = pos[1:].reshape(cfg.max_grid, cfg.max_grid, -1)  # (G, G, C)
    small = jax.image.resize(big, (grid, grid, big.shape[-1]), "bilinear", antialias=False)
    return jnp.concatenate([pos[:1], small.reshape(grid * grid, -1)])


def patch_embed(cfg: ViTConfig, w, b, x):
    """(B, R, R, C) -> (B, grid * grid, d) with a VALID stride-``patch`` conv."""
    z = lax.conv_general_dilated(x, w, (cfg.patch,) * 2, "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    z = z + b
    return z.reshape(z.shape[0], -1, z.shape[-1])  # (B, N, d)


def stem_static(cfg: ViTConfig, p, x, d: int):
    """Patch embedding, class token and position embeddings at static embed ``d``: (B, 1 + N, d)."""
    z = patch_embed(cfg, p["patch"]["w"][..., :d], p["patch"]["b"][:d], x)
    cls = jnp.broadcast_to(p["cls"][:d], (z.shape[0], 1, d))
    pos = resized_pos(cfg, p["pos"], x.shape[1] // cfg.patch)[:, :d]
    return jnp.concatenate([cls, z], axis=1) + pos


def attention(q, k, v):
    """(B, N, h, hd) each -> (B, N, h, hd)."""
    q = q * (q.shape[-1] ** -0.5)
    logits = jnp.einsum("bqhc,bkhc->bhqk", q, k)
    return jnp.einsum("bhqk,bkhc->bqhc", jax.nn.softmax(logits, axis=-1), v)


def layer_static(cfg: ViTConfig, p, x, d: int, heads: int, ratio: float):
    """One pre-norm transformer layer at static (embed, heads, mlp ratio); ``p`` is one layer's
    full-size parameters."""
    hd, m = cfg.head_dim, hidden_units(ratio, d)
    q = heads * hd
    y = layer_norm(x, p["ln1"]["scale"][:d], p["ln1"]["bias"][:d])
    wqkv = p["qkv"]["w"][:d, :, :heads].reshape(d, 3 * q)
    qkv = (y @ wqkv + p["qkv"]["b"][:, :heads].reshape(3 * q)).reshape(*y.shape[:-1], 3, heads, hd)
    a = attention(qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :])
    x = x + (a.reshape(*a.shape[:-2], q) @ p["proj"]["w"][:heads, :, :d].reshape(q, d) + p["proj"]["b"][:d])
    y = layer_norm(x, p["ln2"]["scale"][:d], p["ln2"]["bias"][:d])
    y = jax.nn.gelu(y @ p["fc1"]["w"][:d, :m] + p["fc1"]["b"][:m])
    return x + (y @ p["fc2"]["w"][:m, :d] + p["fc2"]["b"][:d])


def head_static(p, z, d: int):
    """Final LayerNorm and the classifier on the class token."""
    cls = layer_norm(z[:, 0], p["norm"]["scale"][:d], p["norm"]["bias"][:d])
    return cls @ p["classifier"]["w"][:d] + p["classifier"]["b"]


# ----------------------------------------------------------------------------------------------
# Supernet forward with run-time selection (lax.switch over the static pieces)
# ----------------------------------------------------------------------------------------------
def supernet_apply(cfg: ViTConfig, params, stats, x, arch_arr, *, mode: str):
    """Forward of the subnet selected by ``arch_arr`` (see :meth:`ViTSpace.arch_arrays`).

    One program for every subnet: an outer ``lax.switch`` over the embed dim, and in one
    ``lax.scan`` over the stacked layers a ``lax.switch`` over (heads, mlp ratio) with an identity
    branch for layers beyond the depth. Every branch is the static piece the trainer and the static
    subnet compute, so a subnet runs its own shapes. Training differentiates this only as the
    trainer's reference (eagerly): plain switch VJPs are slow on XLA CPU, and the CPU trainer
    composes the pieces instead (:class:`ComposedViT`).

    Args:
      params: from :func:`init_supernet`.
      stats: unused (no BatchNorm).
      x: (B, R, R, C) preprocessed images, R a multiple of the patch size.
      mode: "train", "calib" or "eval" (the same function; "calib" also returns empty stats).

    Returns:
      logits (B, num_classes); in "calib" mode (logits, {}).
    """
    assert mode in ("train", "calib", "eval"), mode
    assert x.shape[1] % cfg.patch == 0, (x.shape, cfg.patch)
    nm = len(cfg.mlp_choices)
    skip = len(cfg.heads_choices) * nm  # the identity branch

    def net(d: int):
        branches = [partial(layer_static, cfg, d=d, heads=h, ratio=m)
                    for h in cfg.heads_choices for m in cfg.mlp_choices] + [lambda p, z: z]

        def run(params, x, arch_arr):
            def body(z, inputs):
                p, i, genes = inputs
                index = jnp.where(i < arch_arr[0, 1], genes[0] * nm + genes[1], skip)
                return lax.switch(index, branches, p, z), None

            z = stem_static(cfg, params, x, d)
            z, _ = lax.scan(body, z, (params["layers"], jnp.arange(cfg.max_depth), arch_arr[1:]))
            return head_static(params, z, d)

        return run

    logits = lax.switch(arch_arr[0, 0], [net(d) for d in cfg.embed_choices], params, x, arch_arr)
    return (logits, {}) if mode == "calib" else logits


# ----------------------------------------------------------------------------------------------
# Head and hidden-unit importance
# ----------------------------------------------------------------------------------------------
def _sort_layer(cfg: ViTConfig, p: dict) -> dict:
    """Reorders one layer's heads by the L1 norm of their projection rows and its MLP hidden units by
    the L1 norm of their fc2 rows (most important first). The largest network's function is
    unchanged (heads and hidden units are each summed over); narrower subnets keep the important
    ones. Hidden units are ranked among the first ``hidden(max ratio, max embed)``; the same order
    then serves every embed dim (slices of the first units)."""
    hperm = jnp.argsort(-jnp.sum(jnp.abs(p["proj"]["w"]), axis=(1, 2)))  # (H,)
    mperm = jnp.argsort(-jnp.sum(jnp.abs(p["fc2"]["w"]), axis=1))  # (M,)
    q = dict(p)
    q["qkv"] = {"w": p["qkv"]["w"][:, :, hperm], "b": p["qkv"]["b"][:, hperm]}
    q["proj"] = {"w": p["proj"]["w"][hperm], "b": p["proj"]["b"]}
    q["fc1"] = {"w": p["fc1"]["w"][:, mperm], "b": p["fc1"]["b"][mperm]}
    q["fc2"] = {"w": p["fc2"]["w"][mperm], "b": p["fc2"]["b"]}
    return q


def sort_channels(cfg: ViTConfig, params) -> dict:
    return {**params, "layers": jax.vmap(lambda p: _sort_layer(cfg, p))(params["layers"])}


# ----------------------------------------------------------------------------------------------
# The composed CPU trainer
# ----------------------------------------------------------------------------------------------
class ComposedViT(ComposedTrainer):
    """The vit chain: stem (preprocessing, patch embedding, tokens) keyed by (resolution, embed),
    one piece per active layer keyed by (embed, heads, mlp ratio) and indexed into the stacked
    layer parameters, and the head keyed by embed. Each distinct piece is jitted once."""

    def __init__(self, cfg: ViTConfig, mean: float, std: float, label_smoothing: float = 0.0):
        super().__init__(label_smoothing)
        self.cfg, self.mean, self.std = cfg, mean, std

    def chain(self, arch: ViTArch) -> tuple[list[Piece], Piece]:
        cfg, res, d = self.cfg, arch.resolution, arch.embed

        def stem():
            return Piece(("stem", res, d),
                         lambda p, images: stem_static(cfg, p, preprocess(images, res, self.mean, self.std), d),
                         keys=("patch", "cls", "pos"), input_grad=False)

        def layer(h, m):
            return Piece(("layer", d, h, m), lambda p, x: layer_static(cfg, p, x, d, h, m), path=("layers",), index=0)

        pieces = [self._piece(("stem", res, d), stem)]
        for i, (h, m) in enumerate(arch.layers):
            base = self._piece(("layer", d, h, m), lambda h=h, m=m: layer(h, m))
            pieces.append(dataclasses.replace(base, index=i))
        head = self._piece(("head", d), lambda: Piece(("head", d), lambda p, z: head_static(p, z, d),
                                                      keys=("norm", "classifier")))
        return pieces, head


# ----------------------------------------------------------------------------------------------
# The static subnet (Flax NNX), and slicing supernet weights into it
# ----------------------------------------------------------------------------------------------
class LayerNorm(nnx.Module):
    """LayerNorm with the supernet's operation order (:func:`layer_norm`)."""

    def __init__(self, c: int):
        self.scale = nnx.Param(jnp.ones((c,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((c,), jnp.float32))

    def __call__(self, x):
        return layer_norm(x, self.scale[...], self.bias[...])


class StaticLayer(nnx.Module):
    def __init__(self, d: int, heads: int, head_dim: int, hidden: int, rngs: nnx.Rngs):
        self.heads, self.head_dim = heads, head_dim
        q = heads * head_dim
        self.ln1 = LayerNorm(d)
        self.qkv = nnx.Linear(d, 3 * q, rngs=rngs)  # output laid out (3, heads, head_dim)
        self.proj = nnx.Linear(q, d, rngs=rngs)
        self.ln2 = LayerNorm(d)
        self.fc1 = nnx.Linear(d, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, d, rngs=rngs)

    def __call__(self, x):
        qkv = self.qkv(self.ln1(x)).reshape(*x.shape[:-1], 3, self.heads, self.head_dim)  # (B, N, 3, h, hd)
        a = attention(qkv[..., 0, :, :], qkv[..., 1, :, :], qkv[..., 2, :, :])
        x = x + self.proj(a.reshape(*a.shape[:-2], self.heads * self.head_dim))
        return x + self.fc2(jax.nn.gelu(self.fc1(self.ln2(x))))


class StaticViT(nnx.Module):
    """A standalone subnet with static shapes. Input: (B, resolution, resolution, C) images already
    normalised (see :func:`search_spaces.layers.preprocess`)."""

    def __init__(self, cfg: ViTConfig, arch: ViTArch, rngs: nnx.Rngs):
        d, p = arch.embed, cfg.patch
        grid = arch.resolution // p
        self.resolution = arch.resolution
        self.patch = nnx.Conv(cfg.in_channels, d, (p, p), strides=(p, p), padding="VALID", rngs=rngs)
        self.cls = nnx.Param(0.02 * jax.random.normal(rngs.params(), (d,)))
        self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (grid * grid + 1, d)))
        self.layers = nnx.List([StaticLayer(d, h, cfg.head_dim, hidden_units(m, d), rngs) for h, m in arch.layers])
        self.norm = LayerNorm(d)
        self.classifier = nnx.Linear(d, cfg.num_classes, rngs=rngs)

    def __call__(self, x):
        z = self.patch(x)
        z = z.reshape(z.shape[0], -1, z.shape[-1])  # (B, N, d)
        cls = jnp.broadcast_to(self.cls[...], (z.shape[0], 1, z.shape[-1]))
        z = jnp.concatenate([cls, z], axis=1) + self.pos[...]
        for layer in self.layers:
            z = layer(z)
        return self.classifier(self.norm(z[:, 0]))


def load_static_weights(cfg: ViTConfig, model: StaticViT, params, arch: ViTArch):
    """Copies the subnet's slices of the supernet weights into ``model``."""
    d, hd = arch.embed, cfg.head_dim
    model.patch.kernel.set_value(params["patch"]["w"][..., :d])
    model.patch.bias.set_value(params["patch"]["b"][:d])
    model.cls.set_value(params["cls"][:d])
    model.pos.set_value(resized_pos(cfg, params["pos"], arch.resolution // cfg.patch)[:, :d])
    for i, ((h, ratio), layer) in enumerate(zip(arch.layers, model.layers)):
        p = jax.tree.map(lambda a, i=i: a[i], params["layers"])
        q, m = h * hd, hidden_units(ratio, d)
        layer.ln1.scale.set_value(p["ln1"]["scale"][:d])
        layer.ln1.bias.set_value(p["ln1"]["bias"][:d])
        layer.qkv.kernel.set_value(p["qkv"]["w"][:d, :, :h].reshape(d, 3 * q))
        layer.qkv.bias.set_value(p["qkv"]["b"][:, :h].reshape(3 * q))
        layer.proj.kernel.set_value(p["proj"]["w"][:h, :, :d].reshape(q, d))
        layer.proj.bias.set_value(p["proj"]["b"][:d])
        layer.ln2.scale.set_value(p["ln2"]["scale"][:d])
        layer.ln2.bias.set_value(p["ln2"]["bias"][:d])
        layer.fc1.kernel.set_value(p["fc1"]["w"][:d, :m])
        layer.fc1.bias.set_value(p["fc1"]["b"][:m])
        layer.fc2.kernel.set_value(p["fc2"]["w"][:m, :d])
        layer.fc2.bias.set_value(p["fc2"]["b"][:d])
    model.norm.scale.set_value(params["norm"]["scale"][:d])
    model.norm.bias.set_value(params["norm"]["bias"][:d])
    model.classifier.kernel.set_value(params["classifier"]["w"][:d])
    model.classifier.bias.set_value(params["classifier"]["b"])


register_supernet_family("vit", ViTSpace, vit_config, tiny_config)
