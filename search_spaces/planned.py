"""Everything a supernet space needs beyond its plan and its block function, written once.

A :class:`PlannedSpace` supplies its genome and strings (:class:`search_spaces.base.SearchSpace`),
``init_supernet``, ``plan(arch)``, ``block(spec, ops, x)`` and ``cover()`` (architectures whose
plans hold every variant of every slot). From those this module derives, for every space alike:

* the composed trainer's pieces (:class:`PlannedTrainer`, on :mod:`search_spaces.engine`), one per
  distinct :class:`~search_spaces.plan.BlockSpec`;
* the evaluation forward :meth:`PlannedSpace.supernet_apply` (one program for every subnet: each
  slot a ``lax.switch`` over its variants, runs of stacked slots a ``lax.scan``), in the "train",
  "calib" and "eval" modes, through the same block function as training;
* the one-program trainer through the elastic kernels (:class:`KernelTrainer`);
* the deployable NNX subnet (:meth:`~PlannedSpace.static_model`, :meth:`~PlannedSpace.extract`),
  its FLOPs and parameters, the latency table's pieces and keys, and the structure features'
  per-group summaries, all from the layers the block function calls (:class:`~search_spaces.plan.Layer`).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Hashable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from search_spaces.base import Arch, LatencyPiece, SupernetSpace, Trainer, log_count
from search_spaces.engine import ComposedTrainer, Piece, placed_like, subnet_loss
from search_spaces.errors import ArchError
from search_spaces.layers import init_stats, preprocess, switch_vjp
from search_spaces.plan import BlockSpec, KernelOps, Layer, RecipeOps, SliceOps, StaticBlock, StaticSubnet, subtree
from search_spaces.programs import jit


@dataclasses.dataclass(frozen=True)
class Slot:
    """A position of the network and the variants that may fill it (in the order of
    :meth:`PlannedSpace.cover`); ``optional``: elastic depth may leave it empty."""

    slot: Hashable
    branches: tuple[BlockSpec, ...]
    optional: bool


def _row(tree, index):
    return tree if index is None else jax.tree.map(lambda a: a[index], tree)


def _set(tree, name: str, value):
    """A copy of the nested dict ``tree`` with the leaf at ``name`` (``a/b``) replaced."""
    head, _, rest = name.partition("/")
    return {**tree, head: _set(tree[head], rest, value) if rest else value}


def _put(tree, spec: BlockSpec, value, rows: slice | None = None):
    """A copy of ``tree`` with ``spec``'s subtree (its row; ``rows`` of its stack when given)
    replaced by ``value``."""

    if not jax.tree.leaves(value):  # a block without BatchNorm: nothing to put
        return tree

    def go(node, path):
        if not path:
            if spec.keys is not None:
                return {**node, **value}
            if spec.index is not None:
                at = spec.index if rows is None else rows
                return jax.tree.map(lambda a, v: a.at[at].set(v), node, value)
            return value
        head, rest = path[0], path[1:]
        if isinstance(node, list):
            out = list(node)
            out[head] = go(node[head], rest)
            return out
        return {**node, head: go(node[head], rest)}

    return go(tree, spec.path)


class PlannedSpace(SupernetSpace):
    """A supernet space defined by a plan and one block function (see the module docstring)."""

    # --- what the space supplies -----------------------------------------------------------------
    def plan(self, arch: Arch) -> tuple[BlockSpec, ...]:
        """The blocks of ``arch`` in forward order: the stem first, the head last."""
        raise NotImplementedError

    def block(self, spec: BlockSpec, ops, x):
        """The one block function: ``spec``'s output on ``x``, every layer through ``ops``."""
        raise NotImplementedError

    def cover(self) -> list[Arch]:
        """Architectures (at any one resolution) whose plans together hold every variant of every
        slot; a slot's variants are numbered in the order they first appear here."""
        raise NotImplementedError

    # --- slots and run-time selection ----------------------------------------------------------------
    @functools.cached_property
    def slots(self) -> tuple[Slot, ...]:
        """Every slot, in the largest architecture's forward order, with its variants."""
        found: dict[Hashable, dict[Hashable, BlockSpec]] = {}
        count: dict[Hashable, int] = {}
        covers = self.cover()
        for arch in covers:
            for spec in self.plan(arch):
                found.setdefault(spec.slot, {}).setdefault(spec.key, spec)
                count[spec.slot] = count.get(spec.slot, 0) + 1
        order = [spec.slot for spec in self.plan(self.largest())]
        missing = set(found) - set(order)
        assert not missing, f"slots {missing} are not in the largest architecture's plan"
        return tuple(Slot(s, tuple(found[s].values()), count[s] < len(covers) or self._optional(s)) for s in order)

    def _optional(self, slot) -> bool:
        # a slot the smallest architecture leaves empty is optional even if every cover fills it
        return slot not in {spec.slot for spec in self.plan(self.smallest())}

    def arch_arrays(self, arch: Arch) -> np.ndarray:
        """(slots,) int32: each slot's variant index in ``arch``; a slot's variant count where
        ``arch`` leaves it empty."""
        chosen = {spec.slot: spec.key for spec in self.plan(arch)}
        out = np.zeros(len(self.slots), np.int32)
        for i, slot in enumerate(self.slots):
            keys = [b.key for b in slot.branches]
            if slot.slot not in chosen:
                out[i] = len(keys)
            else:
                if chosen[slot.slot] not in keys:
                    raise ArchError(f"{self.encode(arch)}: a block no cover architecture of {self.name} holds")
                out[i] = keys.index(chosen[slot.slot])
        return out

    @functools.cached_property
    def _groups(self) -> tuple[tuple[tuple[int, ...], bool], ...]:
        """Slot indices grouped into runs that one ``lax.scan`` computes (consecutive rows of one
        stacked subtree with the same variants), and whether the run's slots may be empty (any of
        them may: one body serves them all)."""
        groups: list[list[int]] = []
        for i, slot in enumerate(self.slots):
            b = slot.branches[0]
            if groups and b.index is not None:
                prev = self.slots[groups[-1][-1]]
                pb = prev.branches[0]
                if (pb.index is not None and pb.path == b.path and pb.keys == b.keys and b.index == pb.index + 1
                        and [x.key for x in prev.branches] == [x.key for x in slot.branches]):
                    groups[-1].append(i)
                    continue
            groups.append([i])
        return tuple((tuple(g), any(self.slots[i].optional for i in g)) for g in groups)

    # --- the evaluation forward ------------------------------------------------------------------
    def _branch(self, spec: BlockSpec, mode: str):
        """``spec``'s block as ``f(p, s, x)`` in ``mode``: y, or in "calib" (y, its statistics)."""

        def f(p, s, x):
            ops = SliceOps(p, s, mode)
            y = self.block(spec, ops, x)
            if mode != "calib":
                return y
            new = jax.tree.map(jnp.zeros_like, s)
            for name, value in ops.stats.items():
                new = _set(new, name, value)
            return y, new

        return f

    def _run_slot(self, slot: Slot, optional: bool, p, s, x, index, mode: str, train_vjp: bool):
        branches = [self._branch(b, mode) for b in slot.branches]
        if len(branches) > 1:
            # variants of different output widths: each zero-padded to the widest (the next block
            # reads its weights' rows for every channel it gets; the padding adds exact zeros)
            shapes = [jax.eval_shape(f, p, s, x) for f in branches]
            shapes = [o[0].shape if mode == "calib" else o.shape for o in shapes]
            widest = tuple(max(d) for d in zip(*shapes))
            if any(shape != widest for shape in shapes):
                branches = [self._padded(f, widest, mode) for f in branches]
        if optional:  # elastic depth: the identity after the variants
            branches.append(lambda p, s, x: (x, jax.tree.map(jnp.zeros_like, s)) if mode == "calib" else x)
        if len(branches) == 1:
            return branches[0](p, s, x)
        if mode == "train" and train_vjp:
            # training normalises with batch statistics, so the branches need no `s` (and a
            # custom_vjp must not close over traced values)
            return switch_vjp(index, [lambda p, x, f=f: f(p, None, x) for f in branches], p, x)
        return lax.switch(index, branches, p, s, x)

    @staticmethod
    def _padded(f, shape, mode: str):
        def g(p, s, x):
            out = f(p, s, x)
            y = out[0] if mode == "calib" else out
            y = jnp.pad(y, [(0, t - n) for n, t in zip(y.shape, shape)])
            return (y, out[1]) if mode == "calib" else y

        return g

    def supernet_apply(self, params, stats, x, arch_arr, *, mode: str, train_vjp: bool = True):
        """Forward of the subnet selected by ``arch_arr`` (:meth:`arch_arrays`).

        Args:
          params: the supernet's parameters.
          stats: BatchNorm statistics (:func:`search_spaces.layers.init_stats`), read in "eval"
            mode; None or a placeholder in the other modes.
          x: (B, R, R, C) images after :func:`search_spaces.layers.preprocess`.
          mode: "train" (batch statistics, one-branch custom VJP unless ``train_vjp`` is False),
            "calib" (batch statistics, also returned) or "eval" (``stats``).

        Returns:
          (B, num_classes) logits; in "calib" mode, (logits, the batch statistics pytree).
        """
        assert mode in ("train", "calib", "eval"), mode
        if stats is None:
            stats = self.init_stats(params)
        new = stats
        z = x
        for group, optional in self._groups:
            slot = self.slots[group[0]]
            spec = slot.branches[0]
            p, s = subtree(params, spec), subtree(stats, spec)
            if len(group) == 1:
                out = self._run_slot(slot, optional, _row(p, spec.index), _row(s, spec.index), z, arch_arr[group[0]],
                                     mode, train_vjp)
                z, st = out if mode == "calib" else (out, None)
                if mode == "calib":
                    new = _put(new, spec, st)
                continue

            def body(carry, inputs, slot=slot, optional=optional):
                p_i, s_i, idx = inputs
                out = self._run_slot(slot, optional, p_i, s_i, carry, idx, mode, train_vjp)
                return out if mode == "calib" else (out, None)

            # stacked blocks share shapes: one traced body per run keeps compile time down
            rows = slice(spec.index, spec.index + len(group))
            z, st = lax.scan(body, z, (*jax.tree.map(lambda a: a[rows], (p, s)), arch_arr[group[0] : group[-1] + 1]))
            if mode == "calib":
                new = _put(new, spec, st, rows=rows)
        return (z, new) if mode == "calib" else z

    @functools.cached_property
    def _bn_paths(self) -> frozenset:
        """Where the blocks' BatchNorms sit in the parameter pytree (a LayerNorm's scale and bias
        look alike there, and keep no statistics)."""
        paths = set()
        for arch in self.cover():
            for spec, _, layers in self.walk(arch):
                for layer in layers:
                    if layer.op == "bn":
                        paths.add((*spec.path, *layer.name.split("/")))
        return frozenset(paths)

    def init_stats(self, params):
        """BatchNorm statistics (mean 0, variance 1) for the blocks' BatchNorms, in the structure
        "calib" mode returns and "eval" mode reads (``{}`` for a space without BatchNorm)."""
        wanted = self._bn_paths
        prefixes = {path[:n] for path in wanted for n in range(len(path) + 1)}

        def prune(node, path):
            if path in wanted:
                return node
            if isinstance(node, list):
                return [prune(v, (*path, i)) for i, v in enumerate(node)]
            return {k: prune(v, (*path, k)) for k, v in node.items() if (*path, k) in prefixes}

        return prune(init_stats(params), ())

    def subnet_apply(self, params, x, arch: Arch):
        """Training-mode logits of ``arch`` at its own static shapes, block after block (no
        switch): what the composed trainer's pieces compute one jitted call each."""
        for spec in self.plan(arch):
            x = self.block(spec, SliceOps(_row(subtree(params, spec), spec.index)), x)
        return x

    # --- layers, costs, static model -------------------------------------------------------------
    @functools.cached_property
    def _shapes(self):
        """The supernet's parameter and statistics shapes (no arrays made)."""
        return jax.eval_shape(lambda k: (lambda p: (p, init_stats(p)))(self.init_supernet(k)), jax.random.key(0))

    def recipe(self, spec: BlockSpec, in_shape: tuple[int, ...]) -> tuple[tuple[Layer, ...], tuple[int, ...]]:
        """``spec``'s layers and output shape (batch excluded) on inputs of ``in_shape``: traced once
        per (block, input shape) and then looked up (a search asks for millions)."""
        cache = self.__dict__.setdefault("_recipes", {})
        key = (spec.key, tuple(in_shape))
        if key not in cache:
            params, stats = self._shapes
            p, s = subtree(params, spec), subtree(stats, spec)
            if spec.index is not None:  # a row of a stacked subtree
                p, s = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), (p, s))
            layers: list = []

            def run(p, s, x):
                ops = RecipeOps(p, s)
                y = self.block(spec, ops, x)
                layers.extend(ops.layers)
                return y

            out = jax.eval_shape(run, p, s, jax.ShapeDtypeStruct((1, *in_shape), jnp.float32))
            cache[key] = (tuple(layers), tuple(out.shape[1:]))
        return cache[key]

    def walk(self, arch: Arch) -> list[tuple[BlockSpec, tuple[int, ...], tuple[Layer, ...]]]:
        """``arch``'s blocks with their input shapes and layers, in forward order."""
        shape = (arch.resolution, arch.resolution, self.in_channels)
        out = []
        for spec in self.plan(arch):
            layers, next_shape = self.recipe(spec, shape)
            out.append((spec, shape, layers))
            shape = next_shape
        return out

    def flops(self, arch: Arch) -> int:
        return int(sum(layer.macs for _, _, layers in self.walk(arch) for layer in layers))

    def params(self, arch: Arch) -> int:
        return int(sum(layer.params for _, _, layers in self.walk(arch) for layer in layers))

    def static_model(self, arch: Arch, rngs: nnx.Rngs) -> StaticSubnet:
        blocks = [StaticBlock(self.block, spec, layers, rngs) for spec, _, layers in self.walk(arch)]
        return StaticSubnet(arch.resolution, blocks[0], blocks[1:-1], blocks[-1])

    def extract(self, params, stats, arch: Arch) -> StaticSubnet:
        """The standalone subnet with weights sliced from the supernet and the given BN statistics;
        its forward equals :meth:`supernet_apply` in "eval" mode bit for bit."""
        model = self.static_model(arch, nnx.Rngs(0))
        for block in (model.stem, *model.blocks, model.head):
            block.load(params, stats)
        return model

    # --- latency pieces ----------------------------------------------------------------------------
    def latency_keys(self, arch: Arch) -> list[str]:
        return [spec.name.format(side=shape[0], channels=shape[-1]) for spec, shape, _ in self.walk(arch)]

    def latency_pieces(self) -> list[LatencyPiece]:
        """Every block any subnet runs, each key once: the stems (per resolution), the blocks
        (slot by slot, variant by variant, per resolution), the heads, as the static model's own
        :class:`~search_spaces.plan.StaticBlock` s."""
        parts: list[dict[str, LatencyPiece]] = [{}, {}, {}]
        for r in self.resolutions:
            seen: dict[Hashable, list] = {}
            for arch in self.cover():
                walked = self.walk(self.at_resolution(arch, r))
                for pos, (spec, shape, layers) in enumerate(walked):
                    part = 0 if pos == 0 else 2 if pos == len(walked) - 1 else 1
                    seen.setdefault(spec.slot, []).append((spec, shape, layers, part))
            for slot in self.slots:
                for spec in slot.branches:
                    for s, shape, layers, part in seen.get(slot.slot, []):
                        if s.key != spec.key:
                            continue
                        key = s.name.format(side=shape[0], channels=shape[-1])

                        def build(s=s, layers=layers):
                            return StaticBlock(self.block, s, layers, nnx.Rngs(0))

                        parts[part].setdefault(key, LatencyPiece(key, tuple(shape), build))
        return [piece for part in parts for piece in part.values()]

    # --- structure features -----------------------------------------------------------------------
    @functools.cached_property
    def _feature_groups(self) -> tuple[tuple[str, tuple[str, ...]], ...]:
        """(group, summarised args) in the largest architecture's order."""
        out: dict[str, tuple[str, ...]] = {}
        for spec in self.plan(self.largest()):
            out.setdefault(spec.group, spec.summary)
        return tuple(out.items())

    def structure_features(self, arch: Arch) -> np.ndarray:
        """The genome's one-hot (:meth:`features`), then per group with summarised choices its block
        count and each choice's mean and max, the log10 MACs and params of every group, the total
        log10 MACs and params, and the resolution (over the largest)."""
        walked = self.walk(arch)
        macs, params = self.group_costs(arch)
        rows: list[float] = []
        for group, names in self._feature_groups:
            if not names:
                continue
            specs = [spec for spec, _, _ in walked if spec.group == group]
            rows.append(len(specs))
            for n in names:
                values = [spec.a[n] for spec in specs]
                rows += [float(np.mean(values)) if values else 0.0, max(values, default=0)]
        rows += [log_count(v) for v in (*macs.values(), *params.values(), sum(macs.values()), sum(params.values()))]
        rows.append(arch.resolution / max(self.resolutions))
        return np.concatenate([self.features(arch), np.asarray(rows, np.float32)])

    def group_costs(self, arch: Arch) -> tuple[dict[str, int], dict[str, int]]:
        """MACs and parameters of each group of ``arch`` (every group of the space, in order)."""
        macs = {g: 0 for g, _ in self._feature_groups}
        params = dict(macs)
        for spec, _, layers in self.walk(arch):
            macs[spec.group] += sum(layer.macs for layer in layers)
            params[spec.group] += sum(layer.params for layer in layers)
        return macs, params

    def structure_feature_names(self) -> list[str]:
        names = []
        for group, summary in self._feature_groups:
            if summary:
                names.append(f"{group}.depth")
                names += [f"{group}.{n}_{f}" for n in summary for f in ("mean", "max")]
        groups = [g for g, _ in self._feature_groups]
        names += [f"{g}.log_macs" for g in groups] + [f"{g}.log_params" for g in groups]
        return self.feature_names() + names + ["log_macs", "log_params", "resolution"]

    # --- training -----------------------------------------------------------------------------------
    def make_trainer(self, mean: float, std: float, label_smoothing: float, kernels: str):
        """The composed per-block static pieces on XLA (:class:`PlannedTrainer`), or one program
        through the elastic kernels (:class:`KernelTrainer`) where the space has them."""
        if kernels == "pallas":
            if not self.has_pallas():
                raise ArchError(f"space {self.name!r} has no Pallas formulation; use kernels 'xla'")
            return KernelTrainer(self, mean, std, label_smoothing, implementation="pallas")
        return PlannedTrainer(self, mean, std, label_smoothing)


class PlannedTrainer(ComposedTrainer):
    """The composed trainer's chain of a :class:`PlannedSpace`: one piece per distinct block
    (the first with the preprocessing, keyed by resolution too), the last one the head."""

    def __init__(self, space: PlannedSpace, mean: float, std: float, label_smoothing: float = 0.0):
        super().__init__(label_smoothing)
        self.space, self.mean, self.std = space, mean, std

    def chain(self, arch) -> tuple[list[Piece], Piece]:
        plan = self.space.plan(arch)
        res, block = arch.resolution, self.space.block

        def make(spec: BlockSpec, first: bool, key) -> Piece:
            if first:
                def fn(p, images):
                    return block(spec, SliceOps(p), preprocess(images, res, self.mean, self.std))
            else:
                def fn(p, x):
                    return block(spec, SliceOps(p), x)
            return Piece(key, fn, path=spec.path, keys=spec.keys, index=None if spec.index is None else 0,
                         input_grad=not first)

        pieces = []
        for n, spec in enumerate(plan):
            key = (spec.key, res) if n == 0 else spec.key
            base = self.piece(key, functools.partial(make, spec, n == 0, key))
            pieces.append(base if spec.index is None else dataclasses.replace(base, index=spec.index))
        return pieces[:-1], pieces[-1]


def kernel_logits(space: PlannedSpace, params, x, arch_arr, *, impl: str, interpret: bool = False, mesh=None):
    """Training-mode logits of the subnet ``arch_arr`` selects (:meth:`PlannedSpace.arch_arrays`),
    every slot with several variants through :class:`~search_spaces.plan.KernelOps` (its varying
    choices given at run time), an optional one under ``lax.cond``; ``mesh``: the batch's mesh."""
    z = x
    for i, slot in enumerate(space.slots):
        spec = slot.branches[0]
        p = _row(subtree(params, spec), spec.index)
        if len(slot.branches) == 1 and not slot.optional:
            z = space.block(spec, SliceOps(p), z)
            continue
        args = []
        for n, (name, value) in enumerate(spec.args):
            values = [b.args[n][1] for b in slot.branches]
            if any(v != value for v in values):
                value = jnp.asarray(values, jnp.int32)[arch_arr[i]]
            args.append((name, value))
        run = dataclasses.replace(spec, args=tuple(args))

        def blk(p, z, run=run):
            return space.block(run, KernelOps(p, impl, interpret, mesh), z)

        z = lax.cond(arch_arr[i] < len(slot.branches), blk, lambda p, z: z, p, z) if slot.optional else blk(p, z)
    return z


class KernelTrainer(Trainer):
    """``accumulate_grad`` like :class:`PlannedTrainer`, as one jitted program per (resolution,
    distillation) through the elastic kernels: the accelerator formulation (``--kernels pallas``).
    With ``implementation="xla"`` the kernels' XLA paths mask instead of skipping (the largest
    network's price); that exists for comparison and for testing."""

    def __init__(self, space: PlannedSpace, mean: float, std: float, label_smoothing: float = 0.0, *,
                 implementation: str = "pallas", interpret: bool = False):
        self.space, self.mean, self.std = space, mean, std
        self.label_smoothing = label_smoothing
        self.impl, self.interpret = implementation, interpret
        self._steps: dict = {}
        self._signatures: set = set()
        self.mesh = None

    def shard_over(self, mesh) -> None:
        """Run the kernels per device shard of a batch split over ``mesh`` (one axis)."""
        self.mesh, self._steps = mesh, {}

    def _step(self, resolution: int, kd: bool):
        key = (resolution, kd)
        if key not in self._steps:
            space, mean, std = self.space, self.mean, self.std

            def step(params, acc, images, labels, soft, arr):
                def loss_fn(p):
                    x = preprocess(images, resolution, mean, std)
                    logits = kernel_logits(space, p, x, arr, impl=self.impl, interpret=self.interpret, mesh=self.mesh)
                    return subnet_loss(logits, labels, soft, kd, self.label_smoothing), logits

                (loss, logits), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
                return loss, logits, jax.tree.map(jnp.add, acc, g)

            self._steps[key] = jit(step, donate_argnums=(1,))
        return self._steps[key]

    def num_compiled(self) -> int:
        """Programs compiled so far: one per (resolution, distillation, batch shapes) called. Counted
        here, as the composed engine does; the tests check the real compilations with JAX's hooks."""
        return len(self._signatures)

    def accumulate_grad(self, params, grads, arch, images, labels, soft_targets=None):
        """Adds d(loss)/d(params) of ``arch`` on this batch into ``grads`` (donated) and returns
        (loss, logits, grads); ``soft_targets`` switches the loss to distillation."""
        kd = soft_targets is not None
        like = jax.tree.leaves(params)[0]
        soft = soft_targets if kd else placed_like(0.0, like, np.float32)
        arr = placed_like(self.space.arch_arrays(arch), like)
        self._signatures.add((arch.resolution, kd, images.shape, images.dtype, labels.shape, soft.shape))
        return self._step(arch.resolution, kd)(params, grads, images, labels, soft, arr)


__all__ = ["KernelTrainer", "PlannedSpace", "PlannedTrainer", "Slot", "kernel_logits"]

