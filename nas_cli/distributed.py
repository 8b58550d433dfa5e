"""Data parallelism through JAX's own runtime: process start-up, the device mesh, placing batches and state.

One axis, ``data``: every step's global batch is split over the mesh's devices (and processes) and
the supernet's parameters and optimiser state are replicated. Replication, not sharding (FSDP), is
the right choice here: the largest supernets of these spaces are a few million parameters (tens of
MB with Adam's moments), far below one device's memory, while sharding them would add an all-gather
of the weights to every one of the many small per-piece programs of a step. Under ``jit`` with a
batch sharded ``P("data")`` and replicated parameters, GSPMD inserts the cross-device reductions
itself: a BatchNorm's ``mean`` over the batch axis is a global mean (statistics over the global
batch), and a replicated parameter's gradient is summed over the devices. So the unchanged training
code computes what one device computes on the same global batch (tests/test_distributed.py checks it).

Multi-host runs start every process with the same flags plus ``--coordinator HOST:PORT
--num-processes P --process-id I`` (or the environment ``jax.distributed.initialize`` understands:
``JAX_COORDINATOR_ADDRESS``, SLURM, Open MPI). Each process then reads and feeds only its slice of
every global batch (the input pipeline's shard options; :func:`process_slice` for arrays at hand)
and the mesh spans every process's devices.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nas_cli.errors import UserError

AXIS = "data"

#: environment variables under which ``jax.distributed.initialize`` finds its settings by itself
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE")


class DistributedError(UserError):
    """A multi-device or multi-process setting that cannot work (one line, exit 2)."""


@dataclasses.dataclass(frozen=True)
class Parallel:
    """How a run spreads over devices and processes (not part of a run's config: a run may be
    resumed on another device count with the same result up to float32 rounding).

    ``devices``: how many of this process's local devices to use (None: all). ``coordinator``,
    ``num_processes``, ``process_id``: the multi-host settings (None: single process, unless the
    environment names a cluster). ``timeout``: seconds to wait for the other processes.
    """

    devices: int | None = None
    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout: int = 300

    def __post_init__(self) -> None:
        if self.devices is not None and self.devices < 1:
            raise DistributedError(f"--devices {self.devices} must be at least 1")
        if self.num_processes is not None and self.num_processes < 1:
            raise DistributedError(f"--num-processes {self.num_processes} must be at least 1")
        if self.process_id is not None:
            if self.process_id < 0:
                raise DistributedError(f"--process-id {self.process_id} must be >= 0")
            if self.num_processes is not None and self.process_id >= self.num_processes:
                raise DistributedError(f"--process-id {self.process_id} must be below --num-processes "
                                       f"{self.num_processes} (ids are 0..{self.num_processes - 1})")
        if self.timeout < 1:
            raise DistributedError(f"--init-timeout {self.timeout} must be at least 1 second")
        if self.coordinator is not None:
            parse_address(self.coordinator)

    @property
    def multi_process(self) -> bool:
        """Whether this process is one of several (flags given or a cluster environment)."""
        if self.coordinator is not None or (self.num_processes or 1) > 1:
            return True
        return any(os.environ.get(v) not in (None, "", "1") for v in _CLUSTER_ENV)


def parse_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) as (host, port), or a DistributedError naming it."""
    m = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d+)", address or "")
    if m is None or not 0 < int(m.group(2)) < 65536:
        raise DistributedError(f"--coordinator {address!r} is not HOST:PORT (a host name or IP address, "
                               "a colon and a port 1-65535), e.g. 10.0.0.1:1234")
    return m.group(1), int(m.group(2))


_initialized: Parallel | None = None


def _wait_for(address: str, timeout: float) -> None:
    """Waits until the coordinator's port accepts a connection (a reachability check only: JAX's
    client aborts the whole process, with a C++ stack trace, when it cannot register in time)."""
    import socket  # noqa: PLC0415
    import time  # noqa: PLC0415

    host, port = parse_address(address)
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), port), timeout=max(0.1, min(2.0, timeout))):
                return
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(f"could not reach the coordinator at {address} within {timeout:g} s "
                                       f"({e.strerror or e}); start process 0 there first, or fix --coordinator") from None
            time.sleep(0.2)


def initialize(par: Parallel) -> None:
    """Starts JAX's distributed runtime when ``par`` asks for several processes (once per process).

    CPU processes exchange collectives through gloo (the CPU backend has no other multi-process
    transport); this must be set before the first JAX computation.

    Raises:
      DistributedError: missing settings, an unreachable coordinator (after ``par.timeout`` s, naming
        its address), or processes that disagree on the number of processes.
    """
    global _initialized
    if not par.multi_process or _initialized is not None:
        if _initialized is not None and par != _initialized:
            raise DistributedError("the distributed runtime is already started with other settings in this process")
        return
    address = par.coordinator or os.environ.get("JAX_COORDINATOR_ADDRESS")
    cluster = any(os.environ.get(v) for v in _CLUSTER_ENV[1:])
    if not cluster and (address is None or par.num_processes is None or par.process_id is None):
        raise DistributedError("a multi-process run needs all of --coordinator HOST:PORT, --num-processes P and "
                               "--process-id I (or a SLURM / Open MPI environment)")
    if address is not None and par.process_id not in (None, 0):
        _wait_for(address, par.timeout)
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(address, par.num_processes, par.process_id,
                                   initialization_timeout=par.timeout)
    except Exception as e:  # noqa: BLE001 - the runtime raises XlaRuntimeError / ValueError with long texts
        text = " ".join(str(e).split())
        if "DEADLINE_EXCEEDED" in text or "timed out" in text.lower() or "Barrier" in text:
            raise DistributedError(
                f"could not start the {par.num_processes}-process run with the coordinator at {address} within "
                f"{par.timeout} s: is process 0 running there, reachable from here, and started with the same "
                "--num-processes?") from None
        raise DistributedError(f"distributed start-up with the coordinator at {address} failed: {text[:300]}") from None
    if par.num_processes is not None and jax.process_count() != par.num_processes:
        raise DistributedError(f"--num-processes {par.num_processes}, but the coordinator at {address} "
                               f"runs {jax.process_count()} processes")
    _initialized = par


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_main() -> bool:
    """Whether this process writes the run's files (metrics, TensorBoard, final.json): process 0."""
    return jax.process_index() == 0


def make_mesh(devices: int | None = None) -> Mesh:
    """A one-axis ``data`` mesh over ``devices`` local devices of every process (None: all).

    Raises:
      DistributedError: more devices asked for than this process has.
    """
    local = jax.local_devices()
    if devices is not None and devices > len(local):
        raise DistributedError(f"--devices {devices}: this process has only {len(local)} "
                               f"{local[0].platform} device(s); use at most {len(local)}")
    n = devices or len(local)
    if jax.process_count() == 1:
        chosen = local[:n]
    else:  # the first n local devices of every process, process by process (the batch's order)
        by_process: dict[int, list] = {}
        for d in sorted(jax.devices(), key=lambda d: (d.process_index, d.id)):
            by_process.setdefault(d.process_index, []).append(d)
        chosen = [d for p in sorted(by_process) for d in by_process[p][:n]]
    return Mesh(np.array(chosen), (AXIS,))


def local_mesh(mesh: Mesh) -> Mesh:
    """The part of ``mesh`` on this process's devices (evaluation runs there: every process measures
    the same numbers without talking to the others)."""
    mine = [d for d in mesh.devices.flat if d.process_index == jax.process_index()]
    return Mesh(np.array(mine), (AXIS,))


def check_batch(batch_size: int, mesh: Mesh) -> None:
    """Raises a DistributedError unless the global batch splits evenly over the mesh."""
    n = mesh.devices.size
    if batch_size % n:
        lower, upper = batch_size - batch_size % n, batch_size + n - batch_size % n
        raise DistributedError(f"--batch-size {batch_size} does not split over {n} devices; use a multiple "
                               f"of {n} (e.g. {lower or upper} or {upper}) or another --devices")


def process_slice(arrays: Sequence[np.ndarray], index: int | None = None, count: int | None = None) -> tuple:
    """This process's contiguous share of each array of one global batch: the per-process data hook
    (process ``index`` of ``count`` feeds rows [index * B/count, (index + 1) * B/count))."""
    index = jax.process_index() if index is None else index
    count = jax.process_count() if count is None else count
    n = len(arrays[0]) // count
    return tuple(a[index * n:(index + 1) * n] for a in arrays)


def shard_batch(mesh: Mesh, local: Sequence[np.ndarray]) -> tuple:
    """Global arrays, split over the mesh along the batch axis, from this process's share of them."""
    sharding = NamedSharding(mesh, P(AXIS))
    if jax.process_count() == 1:
        return tuple(jax.device_put(a, sharding) for a in local)
    return tuple(jax.make_array_from_process_local_data(sharding, np.asarray(a)) for a in local)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """``tree``'s arrays, one full copy on every device of the mesh (the same on every process)."""
    sharding = NamedSharding(mesh, P())
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)

    def put(a):
        host = np.asarray(a.addressable_data(0) if isinstance(a, jax.Array) else a)
        return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])

    return jax.tree.map(put, tree)


def local_copy(tree: Any) -> Any:
    """A single-device view of replicated arrays (their first local copy; no transfer)."""
    return jax.tree.map(lambda a: a.addressable_data(0) if isinstance(a, jax.Array) else a, tree)


def on_mesh(tree: Any, mesh: Mesh) -> Any:
    """Replicated arrays of a (possibly multi-process) mesh, replicated on ``mesh`` (this process's
    devices): a no-op where they already are."""
    sharding = NamedSharding(mesh, P())
    if jax.process_count() > 1:
        tree = local_copy(tree)
    return jax.device_put(tree, sharding)


def barrier(name: str) -> None:
    """Waits until every process gets here (no-op for one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # noqa: PLC0415

        multihost_utils.sync_global_devices(name)


def check_same_settings(settings: dict[str, Any]) -> None:
    """Raises the same DistributedError on every process unless all were started with ``settings``
    equal (a JSON-able dict), naming the first process and the keys that differ from process 0's."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils  # noqa: PLC0415

    mine = np.frombuffer(json.dumps(settings, sort_keys=True).encode(), np.uint8)
    try:  # the run's first collective: where a partner that failed at start-up shows
        sizes = np.asarray(multihost_utils.process_allgather(np.int32(len(mine)))).reshape(-1)
        padded = np.zeros(int(sizes.max()), np.uint8)
        padded[:len(mine)] = mine
        every = np.asarray(multihost_utils.process_allgather(padded)).reshape(len(sizes), -1)
    except jax.errors.JaxRuntimeError as e:
        raise DistributedError(
            f"process {jax.process_index()}: the other {jax.process_count() - 1} process(es) did not join the "
            "first exchange; one failed at start-up or was started with another --num-processes or "
            f"--coordinator (see its error): {' '.join(str(e).split())[:160]}") from None
    seen = [json.loads(bytes(row[:n]).decode()) for row, n in zip(every, sizes)]
    for p, other in enumerate(seen[1:], start=1):
        keys = sorted(k for k in set(seen[0]) | set(other) if seen[0].get(k) != other.get(k))
        if keys:
            diffs = "; ".join(f"{k}: {seen[0].get(k)!r} on process 0, {other.get(k)!r} on process {p}" for k in keys)
            raise DistributedError(f"process {p} was started with other settings than process 0 ({diffs}); "
                                   "start every process with the same flags")
