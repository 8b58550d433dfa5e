"""The space-independent supernet training engine: a subnet as a chain of static-shape pieces.

:class:`ComposedTrainer` knows no space. A space describes one subnet as a chain of :class:`Piece` s
(a static-shape function of its parameter subtree and the previous activation) and a head piece
computing the loss; the engine jits each distinct piece once, forward and backward, and accumulates
the subnet's gradient into a full-size pytree.

Measured on the 2-core CPU (see bench/RESULTS.md): one jitted train step holding every block's
``lax.switch`` over its width x kernel branches compiled for 60-70 s even for the tiny space, and
XLA's time goes into HLO passes over the many conditionals, not into code generation. Here each
static variant (for mobilenetv3: stage, block position, kernel, expand) is its own small jitted
function, forward (returning its VJP's residuals) and backward (applying them), compiled the first time
a subnet uses it and then reused: a bounded cache. A subnet's step then runs exactly its own static
shapes, so its cost is the static subnet's cost plus dispatch.

The forward keeps what the backward needs (``jax.vjp``'s pullback, a pytree of residual arrays,
crosses the jit boundary) rather than the backward recomputing the forward: measured on the 2-core
CPU (bench/RESULTS.md, issue 16), a resnet-tiny sandwich step took 30% less time on one device and
under a 4-device mesh about half the time, because the recomputed forward repeated each
BatchNorm's cross-device reductions. The memory held is that of ordinary reverse-mode autodiff.

Gradients accumulate into one full-size pytree (zero outside the active slices), so the optimizer
update is a single jitted call over the whole supernet whichever subnets were sampled.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import os
from typing import Callable, Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from search_spaces.base import Trainer
from search_spaces.programs import ProgramCache, jit, release_freed_memory


def subnet_loss(logits, labels, soft_targets, kd: bool, label_smoothing: float = 0.0):
    """Cross-entropy with the labels, or (in-place distillation) with the teacher's soft targets."""
    if kd:
        return jnp.mean(optax.softmax_cross_entropy(logits, soft_targets))
    onehot = jax.nn.one_hot(labels, logits.shape[-1])
    if label_smoothing:
        onehot = optax.smooth_labels(onehot, label_smoothing)
    return jnp.mean(optax.softmax_cross_entropy(logits, onehot))


def placed_like(value, like, dtype=np.int32) -> jax.Array:
    """``value`` as a device array placed as the array ``like`` is (committed with a full copy on
    every device of its mesh, under data parallelism), made once per (value, placement) and reused.

    A program's small run-time arguments (a block index, an arch's sizes, a dummy target) made fresh
    on the host or the default device each call take JAX's slow dispatch path under a mesh and are
    copied to every device each time (measured in bench/RESULTS.md, issue 16). The array is shared
    by every caller: never donate it.
    """
    # an uncommitted ``like`` (one device, placed by default) gets an uncommitted value: committing it
    # would commit the programs' outputs, and jit keys its cache on that (a recompile per mix)
    sharding = like.sharding if isinstance(like, jax.Array) and getattr(like, "committed", False) else None
    if isinstance(sharding, jax.sharding.NamedSharding):  # a full copy on every device of its mesh
        sharding = jax.sharding.NamedSharding(sharding.mesh, jax.sharding.PartitionSpec())
    key = np.asarray(value, dtype)
    return _placed(key.tobytes(), key.shape, key.dtype.str, sharding)


@functools.lru_cache(maxsize=4096)
def _placed(data: bytes, shape, dtype: str, sharding) -> jax.Array:
    host = np.frombuffer(data, dtype).reshape(shape)
    if sharding is None:
        return jnp.asarray(host)
    if sharding.is_fully_addressable:
        return jax.device_put(host, sharding)
    # a mesh over several processes: each places its own copies (every process holds the same value)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


@dataclasses.dataclass(frozen=True, eq=False)
class Piece:
    """One static-shape stage of a subnet's forward pass.

    ``fn(p, x) -> y`` where ``p`` is the parameter subtree at ``path`` (restricted to ``keys`` when
    given; row ``index`` of its leading axis when given). Pieces with equal ``key`` must compute the
    same function: the engine compiles one forward and one backward per key. The first piece of a
    chain gets the raw input batch and needs no input gradient (``input_grad=False``); a head
    piece's ``fn(p, z)`` returns logits.
    """

    key: Hashable
    fn: Callable
    path: tuple = ()
    keys: tuple[str, ...] | None = None
    index: int | None = None
    input_grad: bool = True


def _get(tree, piece: Piece):
    for k in piece.path:
        tree = tree[k]
    return {k: tree[k] for k in piece.keys} if piece.keys is not None else tree


def _put(tree, path: tuple, keys, value):
    """A copy of ``tree`` with the subtree at ``path`` (or its ``keys``) replaced; only the
    containers along the path are copied."""
    if not path:
        return {**tree, **value} if keys is not None else value
    head, rest = path[0], path[1:]
    child = _put(tree[head], rest, keys, value)
    if isinstance(tree, (list, tuple)):
        out = list(tree)
        out[head] = child
        return type(tree)(out) if isinstance(tree, tuple) else out
    return {**tree, head: child}


def compile_workers() -> int:
    """Threads that compile a step's programs ahead of it (:meth:`ComposedTrainer.prepare`):
    ``NAS_COMPILE_THREADS``, default 0 (none: each program compiles lazily when the step first calls
    it). Measured on the 2-core CPU (bench/RESULTS.md, issue 29, mobilenetv3 w1.0, 32 px, batch 64):
    ahead on one thread cut the peak RSS by 280-370 MB but cost ~16 s more CPU before the first step,
    and its steps ran 12-50% slower than the lazy path's in both runs (not explained yet, so not the
    default); two threads compiled slower than one (87 s against 69 s; CPU time = wall time)."""
    if os.environ.get("NAS_COMPILE_THREADS", "").strip():
        return max(0, int(os.environ["NAS_COMPILE_THREADS"]))
    return 0


class Program:
    """One of a trainer's programs: the executable that :meth:`ComposedTrainer.prepare` compiled
    ahead of time, else the jitted function (compiled when first called)."""

    __slots__ = ("jitted", "compiled", "called")

    def __init__(self, jitted):
        self.jitted, self.compiled, self.called = jitted, None, False

    def install(self, compiled) -> None:
        self.compiled = compiled

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except (TypeError, ValueError):
                # arguments unlike those it was compiled for (a pullback of a forward that was
                # compiled again, an array placed otherwise): the jit, which compiles for them
                self.compiled = None
        self.called = True
        return self.jitted(*args)


class ComposedTrainer(Trainer):
    """Forward/backward of any subnet as a chain of cached per-piece jitted variants."""

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing
        # one program per (piece, direction, input shape): bounded over the process (programs.py)
        self._programs = ProgramCache()
        # the functions the programs jit, made once per piece (or head and distillation), not per call
        self._raw: dict[Hashable, tuple[Callable, Callable]] = {}
        self._raw_heads: dict[tuple, Callable] = {}
        self._pieces: dict[Hashable, Piece] = {}
        self._signatures: set = set()
        # each piece variant's output shape, so preparing a step traces nothing it has seen
        self._out_structs: dict = {}

    def chain(self, arch) -> tuple[list[Piece], Piece]:
        """The pieces of ``arch``'s forward pass, and its head piece (each space's trainer)."""
        raise NotImplementedError

    def piece(self, key, make) -> Piece:
        """The piece for ``key``, made once by ``make()``: one Piece object per static variant."""
        if key not in self._pieces:
            self._pieces[key] = make()
        return self._pieces[key]

    def accumulate_grad(self, params, grads, arch, images, labels, soft_targets=None):
        """Adds d(loss)/d(params) of ``arch`` on this batch into ``grads`` (donated) and returns
        (loss, logits, grads). ``soft_targets`` switches the loss to distillation."""
        chain, head = self.chain(arch)
        return self.accumulate_grad_chain(params, grads, chain, head, images, labels, soft_targets)

    def _raw_fns(self, piece: Piece) -> tuple[Callable, Callable]:
        """The forward and backward functions of ``piece``, made once per piece key."""
        if piece.key in self._raw:
            return self._raw[piece.key]
        fn, indexed, input_grad = piece.fn, piece.index is not None, piece.input_grad

        def pick(p, i):
            return jax.tree.map(lambda a: a[i], p) if indexed else p

        def fwd(p, i, x):  # the output and the pullback holding the residuals (a pytree)
            if input_grad:
                return jax.vjp(fn, pick(p, i), x)
            return jax.vjp(lambda q: fn(q, x), pick(p, i))

        def bwd(pullback, i, g, acc):
            if input_grad:
                dp, dx = pullback(g)
            else:
                (dp,), dx = pullback(g), None
            if indexed:
                return dx, jax.tree.map(lambda a, d: a.at[i].add(d), acc, dp)
            return dx, jax.tree.map(jnp.add, acc, dp)

        self._raw[piece.key] = (fwd, bwd)
        return fwd, bwd

    def _piece_fns(self, piece: Piece, shape: tuple, dtype) -> tuple["Program", "Program"]:
        """The forward and backward programs of ``piece`` for inputs of ``shape``: one cache entry,
        so the bounded cache drops (and remakes) them together (the backward takes the forward's
        pullback, whose pytree structure is the forward's own)."""
        fwd, bwd = self._raw_fns(piece)
        return self._programs.get(("piece", piece.key, shape, str(dtype)),
                                  lambda: (Program(jit(fwd)), Program(jit(bwd, donate_argnums=(3,)))))

    def _head_fn(self, piece: Piece, kd: bool, shape: tuple, dtype, label_shape: tuple) -> "Program":
        raw_key = ("head", piece.key, kd)
        if raw_key not in self._raw_heads:
            fn, smoothing = piece.fn, self.label_smoothing

            def head(p, z, labels, soft, acc):
                def loss_fn(q, z):
                    logits = fn(q, z)
                    return subnet_loss(logits, labels, soft, kd, smoothing), logits

                (loss, logits), (dp, dz) = jax.value_and_grad(loss_fn, argnums=(0, 1), has_aux=True)(p, z)
                return loss, logits, dz, jax.tree.map(jnp.add, acc, dp)

            self._raw_heads[raw_key] = head
        head = self._raw_heads[raw_key]
        return self._programs.get(raw_key + (shape, str(dtype), label_shape),
                                  lambda: Program(jit(head, donate_argnums=(4,))))

    def prepare(self, params, archs: Sequence, images, labels, distill: bool = True,
                workers: int | None = None, also: Sequence | Callable[[], Sequence] = ()) -> int:
        """Compiles, before a step over ``archs`` runs, every program of it this trainer lacks, on
        ``workers`` threads (default :func:`compile_workers`; 0: none, the step compiles lazily);
        returns how many it compiled. ``also``: more (lowered, install) jobs of the step, such as
        :meth:`search_spaces.programs.jit.ahead` gives (the optimiser update), compiled first
        (they are the longest) beside the trainer's own; or a function giving them, called only
        when programs are compiled ahead (lowering is not free).

        ``archs`` are a step's subnets, the teacher first (with ``distill`` and more than one, the
        others get its soft targets, as nas_cli.training.supernet.train_step runs them). Lazily, each program
        compiles when the step first calls it, one after the other, and the backward ones while the
        forward's residuals are held (735 MB for the largest mobilenetv3 w1.0 subnet at 32 px,
        batch 64): here they compile ahead of the step, with nothing of it held (bench/RESULTS.md,
        issue 29). The
        programs are the same as the lazy path's and so are the results. Under a mesh of several
        devices (where activations' placements come from GSPMD) it does nothing: the step compiles
        lazily as before.
        """
        workers = compile_workers() if workers is None else workers
        leaves = jax.tree.leaves(params)
        if workers < 1 or any(len(a.sharding.device_set) > 1 for a in leaves if isinstance(a, jax.Array)):
            return 0
        like = leaves[0]

        def struct(shape, dtype):
            # one device: an executable compiled for unplaced arguments runs arrays committed to
            # it too (a one-device mesh's batch sharding would not fit a residual's rank 0)
            return jax.ShapeDtypeStruct(shape, dtype)

        jobs: list[tuple[Callable, object]] = []  # (install, lowering), in the order the step needs them
        pending: set[int] = set()  # ids of the programs in jobs

        def missing(prog: Program) -> bool:
            return prog.compiled is None and not prog.called and id(prog) not in pending
        soft = None  # the teacher's logits (their shape is the soft targets')
        for n, arch in enumerate(archs):
            kd = distill and n > 0 and len(archs) > 1
            chain, head = self.chain(arch)
            z, backward = images, []
            for piece in chain:
                fwd_prog, bwd_prog = self._piece_fns(piece, tuple(z.shape), z.dtype)
                p = _get(params, piece)
                i = placed_like(piece.index if piece.index is not None else 0, like)
                out = self._out_structs.get(("piece", piece.key, tuple(z.shape), str(z.dtype)))
                if missing(fwd_prog):
                    pending.update((id(fwd_prog), id(bwd_prog)))
                    fwd_l = fwd_prog.jitted.lower(p, i, z)
                    y, pullback = fwd_l.out_info
                    y = struct(y.shape, y.dtype)
                    pullback = jax.tree.map(lambda a: struct(a.shape, a.dtype), pullback)
                    jobs.append((fwd_prog.install, fwd_l))
                    backward.append((bwd_prog.install, bwd_prog.jitted.lower(pullback, i, y, p)))
                    out = y
                elif out is None:
                    y, _ = jax.eval_shape(self._raw_fns(piece)[0], p, i, z)
                    out = struct(y.shape, y.dtype)
                self._out_structs[("piece", piece.key, tuple(z.shape), str(z.dtype))] = out
                z = out
            head_prog = self._head_fn(head, kd, tuple(z.shape), z.dtype, tuple(labels.shape))
            target = soft if kd else placed_like(0.0, like, np.float32)
            p = _get(params, head)
            head_key = ("head", head.key, kd, tuple(z.shape), str(z.dtype), tuple(labels.shape))
            logits = self._out_structs.get(head_key)  # traced once per head shape, not every step
            if missing(head_prog):
                pending.add(id(head_prog))
                head_l = head_prog.jitted.lower(p, z, labels, target, p)
                logits = head_l.out_info[1]
                jobs.append((head_prog.install, head_l))
            elif logits is None:
                logits = jax.eval_shape(self._raw_heads[("head", head.key, kd)], p, z, labels, target, p)[1]
            self._out_structs[head_key] = logits
            if n == 0:
                soft = struct(logits.shape, logits.dtype)
            jobs.extend(reversed(backward))
        jobs = [(install, lowered) for lowered, install in (also() if callable(also) else also)] + jobs
        if not jobs:
            return 0
        if workers == 1 or len(jobs) == 1:
            for install, lowered in jobs:
                install(lowered.compile())
        else:
            with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="nas-compile") as pool:
                done = pool.map(lambda job: job[1].compile(), jobs)
                for (install, _), compiled in zip(jobs, done):
                    install(compiled)
        release_freed_memory()
        return len(jobs)

    def num_compiled(self) -> int:
        """Programs compiled so far: a jitted forward and backward per distinct (piece, input shape),
        one loss-and-gradient program per (head, distillation, shape). The engine counts what it
        has called; the tests check the real compilations with JAX's monitoring hooks."""
        return sum(2 if sig[0] == "piece" else 1 for sig in self._signatures)

    def accumulate_grad_chain(self, params, grads, chain: list[Piece], head: Piece, inputs, labels,
                              soft_targets=None):
        """Adds d(loss)/d(params) of the subnet ``chain`` + ``head`` on this batch into ``grads``
        (donated) and returns (loss, logits, grads). ``soft_targets`` switches to distillation."""
        z = inputs
        tape = []
        like = jax.tree.leaves(params)[0]
        for piece in chain:
            fwd, bwd = self._piece_fns(piece, z.shape, z.dtype)
            p = _get(params, piece)
            i = placed_like(piece.index if piece.index is not None else 0, like)
            self._signatures.add(("piece", piece.key, z.shape, z.dtype))
            z, pullback = fwd(p, i, z)
            tape.append((piece, bwd, pullback, i))
        kd = soft_targets is not None
        self._signatures.add(("head", head.key, kd, z.shape, z.dtype, labels.shape))
        soft = soft_targets if kd else placed_like(0.0, like, np.float32)
        head_fn = self._head_fn(head, kd, z.shape, z.dtype, labels.shape)
        loss, logits, g, acc = head_fn(_get(params, head), z, labels, soft, _get(grads, head))
        grads = _put(grads, head.path, head.keys, acc)
        # each piece's residuals are freed as soon as its backward has consumed them (popped from
        # the tape, the pullback's last reference goes with the next iteration): held until the
        # whole backward ended, the largest mobilenetv3 w1.0 subnet's 735 MB (32 px, batch 64) were
        # all still alive under stage 0's backward and its 468 MB of temporary buffers
        while tape:
            piece, bwd, pullback, i = tape.pop()
            g, acc = bwd(pullback, i, g, _get(grads, piece))
            grads = _put(grads, piece.path, piece.keys, acc)
        return loss, logits, grads
