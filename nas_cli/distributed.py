"""Data parallelism through JAX's own runtime: process start-up, the device mesh, placing batches and state.

One axis, ``data``: every step's global batch is split over the mesh's devices (and processes) and
the supernet's parameters and optimiser state are replicated. Replication, not sharding (FSDP), is
the right choice here: the largest supernets of these spaces are a few million parameters (tens of
MB with Adam's moments), far below one device's memory, while sharding them would add an all-gather
of the weights to every one of the many small per-piece programs of a step. Under ``jit`` with a
batch sharded ``P("data")`` and replicated parameters, GSPMD inserts the cross-device reductions
itself: a BatchNorm's ``mean`` over the batch axis is a global mean (statistics over the global
batch), and a replicated parameter's gradient is summed over the devices. So the unchanged training
code computes what one device computes on the same global batch (tests/nas_cli/test_distributed.py checks it).

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
from pathlib import Path
from typing import Any, Callable, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from nas_cli.errors import UserError
from search_spaces.errors import NasError

AXIS = "data"

#: environment variables under which ``jax.distributed.initialize`` finds its settings by itself
_CLUSTER_ENV = ("JAX_COORDINATOR_ADDRESS", "SLURM_STEP_NUM_TASKS", "OMPI_COMM_WORLD_SIZE")


class DistributedError(UserError):
    """A multi-device or multi-process setting that cannot work (one line, exit 2)."""


# --- XLA's CPU thread pool and collectives over several CPU devices ---------------------------------
#
# XLA's CPU client runs every device's part of a program on one shared pool of max(cores, devices)
# threads (``PJRT_NPROC`` replaces the core count when set). A collective (the all-reduce of a
# BatchNorm mean or of a gradient) holds one pool thread per device that has reached it until every
# device has, and XLA aborts the whole process (C++ LOG(FATAL), exit 134) when they have not all
# arrived within 40 s. With exactly as many threads as devices there is no spare thread ("We only
# created enough threads for one collective to complete", says XLA's CPU client): on a busy machine
# the late device's program was found not even launched (gdb: three pool threads in the all-reduce,
# its launch waiting on the device's in-flight limit), and it never arrived. Measured on the 2-core machine with two busy-loop
# processes beside a 4-fake-device loop of small all-reducing programs: PJRT_NPROC unset (4 threads)
# and PJRT_NPROC=5 aborted within 20 s in every try ("only 2 (or 3) of them arrived"); PJRT_NPROC=8
# and 16 ran 60 s without a stall; --xla_cpu_multi_thread_eigen=false and
# jax_cpu_enable_async_dispatch=False did not help (tests/nas_cli/test_fake_devices.py keeps the case).

#: pool threads per CPU device a collective needs (measured above: 1 deadlocks, 1.25 too, 2 does not)
POOL_PER_DEVICE = 2
#: the environment variable XLA's CPU client reads for its thread pool's size (instead of the cores)
POOL_ENV = "PJRT_NPROC"
#: the name XLA's CPU client gives the pool's threads (how :func:`cpu_pool_threads` counts them)
_POOL_THREAD = "tf_XLAEigen"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def forced_cpu_devices(env: dict | os._Environ = os.environ) -> int:
    """The CPU device count ``env`` asks JAX for (``--xla_force_host_platform_device_count`` in
    ``XLA_FLAGS``, or ``JAX_NUM_CPU_DEVICES``); 1 when neither says."""
    counts = re.findall(r"--xla_force_host_platform_device_count=(\d+)", env.get("XLA_FLAGS", ""))
    n = int(counts[-1]) if counts else 1
    other = env.get("JAX_NUM_CPU_DEVICES", "").strip()
    return max(n, int(other)) if other.isdigit() else n


def cpu_pool_env(env: dict | os._Environ = os.environ, cores: int | None = None) -> dict[str, str]:
    """The setting that gives XLA's CPU pool :data:`POOL_PER_DEVICE` threads per device that ``env``
    asks for ({} when one device, or when ``PJRT_NPROC`` is already set: the user's choice, which
    :func:`make_mesh` checks)."""
    n = forced_cpu_devices(env)
    if n < 2 or env.get(POOL_ENV, "").strip():
        return {}
    return {POOL_ENV: str(max(cores or _cores(), POOL_PER_DEVICE * n))}


def ensure_cpu_pool() -> None:
    """Sizes XLA's CPU pool for the fake CPU devices the environment asks for, before JAX's CPU
    client starts (it reads ``PJRT_NPROC`` once, when created). Done when this module is imported,
    which every training and search path does before it touches a device."""
    os.environ.update(cpu_pool_env())


ensure_cpu_pool()


def cpu_pool_threads(devices: int) -> int:
    """The threads of XLA's CPU pool in this process: counted where Linux names them, else what the
    client makes of ``PJRT_NPROC`` or the cores and the ``devices`` it has."""
    try:
        names = [Path(f"/proc/self/task/{t}/comm").read_text().strip() for t in os.listdir("/proc/self/task")]
    except OSError:
        names = []
    counted = sum(name == _POOL_THREAD for name in names)
    if counted:
        return counted
    setting = os.environ.get(POOL_ENV, "").strip()
    return max(int(setting) if setting.isdigit() else _cores(), devices)


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

#: the longest line of the rendezvous (a settings dict is a few hundred bytes)
_MAX_LINE = 1 << 20


def _send(conn, message: dict) -> None:
    conn.sendall(json.dumps(message, sort_keys=True).encode() + b"\n")


def _receive(conn, timeout: float) -> dict | None:
    """One JSON line from ``conn`` within ``timeout`` s; None for anything else (silence, a closed
    connection, bytes that are not a rendezvous message)."""
    import socket  # noqa: PLC0415
    import time  # noqa: PLC0415

    deadline, data = time.monotonic() + timeout, b""
    try:
        while b"\n" not in data and len(data) < _MAX_LINE:
            conn.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = conn.recv(65536)
            if not chunk:
                return None
            data += chunk
        message = json.loads(data.split(b"\n", 1)[0])
    except (OSError, socket.timeout, ValueError):
        return None
    return message if isinstance(message, dict) else None


def _settings_differ(p: int, first: dict, other: dict) -> str | None:
    """The error for process ``p`` started with ``other`` settings than process 0's ``first``, or None."""
    keys = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
    if not keys:
        return None
    diffs = "; ".join(f"{k}: {first.get(k)!r} on process 0, {other.get(k)!r} on process {p}" for k in keys)
    return f"process {p} was started with other settings than process 0 ({diffs}); start every process with the same flags"


def _rendezvous_main(address: str, count: int, timeout: float, settings: dict) -> None:
    """Process 0's side: listens on the coordinator's port until the other ``count - 1`` processes
    have said hello, checks that they were started alike, answers each, and closes the port."""
    import socket  # noqa: PLC0415
    import time  # noqa: PLC0415

    _, port = parse_address(address)
    dual = socket.has_dualstack_ipv6()
    try:  # every interface, as JAX's coordinator service binds ([::]:PORT); SO_REUSEADDR is set
        server = socket.create_server(("", port), family=socket.AF_INET6 if dual else socket.AF_INET,
                                      dualstack_ipv6=dual)
    except OSError as e:
        raise DistributedError(f"process 0 cannot listen on port {port} of the coordinator {address} for the "
                               f"{count}-process run ({e.strerror or e}): another program (or another process 0) "
                               "uses it; choose another port in --coordinator") from None
    arrived: dict[int, Any] = {}  # process id -> its connection
    deadline = time.monotonic() + timeout

    def fail(message: str, *also):
        for conn in [*arrived.values(), *also]:
            try:
                _send(conn, {"error": message})
            except OSError:
                pass
            conn.close()
        server.close()
        raise DistributedError(message)

    while len(arrived) < count - 1:
        left = deadline - time.monotonic()
        if left <= 0:
            who = (f"only process(es) {', '.join(map(str, sorted(arrived)))} arrived" if arrived else "none arrived")
            fail(f"process 0 waited {timeout:g} s at the coordinator {address} for the other {count - 1} "
                 f"process(es) of the {count}-process run; {who}. Start each with --coordinator {address} "
                 f"--num-processes {count} and its own --process-id, or raise --init-timeout")
        server.settimeout(left)
        try:
            conn, _ = server.accept()
        except OSError:  # the deadline: reported above
            continue
        hello = _receive(conn, min(10.0, max(1.0, left)))
        if hello is None or not isinstance(hello.get("process_id"), int):
            conn.close()  # not one of ours (a port scan, a health check): ignored
            continue
        p, theirs = hello["process_id"], hello.get("num_processes")
        if theirs != count:
            fail(f"process {p} was started with --num-processes {theirs}, process 0 at {address} with "
                 f"{count}; start every process with the same --num-processes", conn)
        if not 0 < p < count:
            fail(f"a process with --process-id {p} joined the {count}-process run at {address}; the ids are "
                 f"0..{count - 1}, and 0 is the process that listens there", conn)
        if p in arrived:
            fail(f"two processes were started with --process-id {p} for the {count}-process run at {address}; "
                 f"give each its own id (1..{count - 1} besides process 0)", conn)
        differ = _settings_differ(p, settings, hello.get("settings") or {})
        if differ:
            fail(differ, conn)
        arrived[p] = conn
    for conn in arrived.values():
        _send(conn, {"ok": True})
    for conn in arrived.values():  # each partner closes first, so no closed connection holds the port
        _receive(conn, 5.0)
        conn.close()
    server.close()


def _rendezvous_partner(address: str, count: int, index: int, timeout: float, settings: dict) -> None:
    """Process ``index``'s side: connects to process 0 (retrying until the timeout), says hello with
    its settings and waits for the answer."""
    import socket  # noqa: PLC0415
    import time  # noqa: PLC0415

    host, port = parse_address(address)
    deadline = time.monotonic() + timeout
    while True:
        try:
            conn = socket.create_connection((host.strip("[]"), port), timeout=max(0.1, min(2.0, timeout)))
            break
        except OSError as e:
            if time.monotonic() >= deadline:
                raise DistributedError(f"could not reach the coordinator at {address} within {timeout:g} s "
                                       f"({e.strerror or e}) for the {count}-process run; start process 0 there "
                                       "first, or fix --coordinator") from None
            time.sleep(0.2)
    with conn:
        try:
            _send(conn, {"process_id": index, "num_processes": count, "settings": settings})
        except OSError:
            pass  # answered below as a closed connection
        answer = _receive(conn, max(5.0, deadline - time.monotonic()))
    if answer is None:
        raise DistributedError(f"process {index}: the coordinator at {address} did not start the {count}-process "
                               f"run within {timeout:g} s (not every process arrived, process 0 stopped, or "
                               "something else listens there); see process 0's error")
    if "error" in answer:
        raise DistributedError(str(answer["error"]))


def rendezvous(address: str, count: int, index: int, timeout: float, settings: dict | None = None) -> None:
    """A check before JAX's runtime starts: all ``count`` processes meet at the coordinator's
    ``address`` over TCP (process 0 listens, the others connect) within ``timeout`` s, with the same
    ``--num-processes``, distinct ids and equal ``settings`` (a JSON-able dict).

    JAX's client ends the whole process with a C++ stack trace (LOG(FATAL)) when its partners do not
    register in time; this turns each such start-up failure into the same one-line error on every
    process that got that far. The port is closed again before ``jax.distributed.initialize``.

    Raises:
      DistributedError: naming the address, the process count and the timeout (or what differs).
    """
    settings = settings or {}
    if index == 0:
        _rendezvous_main(address, count, timeout, settings)
    else:
        _rendezvous_partner(address, count, index, timeout, settings)


def initialize(par: Parallel, settings: dict[str, Any] | None = None) -> None:
    """Starts JAX's distributed runtime when ``par`` asks for several processes (once per process).

    With the coordinator, the process count and id known (flags, or JAX_COORDINATOR_ADDRESS and
    flags), the processes first meet in :func:`rendezvous`, which compares ``settings``. CPU processes
    exchange collectives through gloo (the CPU backend has no other multi-process transport); this
    must be set before the first JAX computation.

    Raises:
      DistributedError: missing settings, an unreachable coordinator or partners that never arrive
        (after ``par.timeout`` s, naming the address and the process count), processes that disagree
        on the number of processes or were started with other ``settings``.
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
    if address is not None and par.num_processes is not None and par.process_id is not None:
        rendezvous(address, par.num_processes, par.process_id, par.timeout, settings)
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
    if local[0].platform == "cpu" and n > 1:
        pool = cpu_pool_threads(len(local))
        if pool < POOL_PER_DEVICE * n:
            raise DistributedError(
                f"{n} CPU devices need {POOL_PER_DEVICE * n} threads in XLA's CPU pool, which has {pool} "
                f"({POOL_ENV}={os.environ.get(POOL_ENV, '') or 'unset'}, {_cores()} cores): their collectives can "
                f"stall and abort the process on a busy machine; set {POOL_ENV}={POOL_PER_DEVICE * n} before JAX "
                f"starts, or use --devices {max(1, pool // POOL_PER_DEVICE)}")
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


def _padded(data: bytes, size: int) -> np.ndarray:
    """``data`` as uint8 zero-padded to the next power of two of at least ``size`` and 256 bytes: messages
    of a few sizes only, so each collective compiles a few programs, not one per message length."""
    buf = np.zeros(max(256, 1 << max(size - 1, 0).bit_length()), np.uint8)
    buf[:len(data)] = np.frombuffer(data, np.uint8)
    return buf


def broadcast_json(obj: Any = None) -> Any:
    """Process 0's ``obj`` (JSON-able; the others pass anything, e.g. None) on every process. Floats
    travel as JSON text (exact round trip), not as device numbers (float32 unless x64)."""
    if jax.process_count() == 1:
        return obj
    from jax.experimental import multihost_utils  # noqa: PLC0415

    data = json.dumps(obj, sort_keys=True).encode() if is_main() else b""
    size = int(multihost_utils.broadcast_one_to_all(np.int32(len(data))))
    every = multihost_utils.broadcast_one_to_all(_padded(data, size))
    return json.loads(bytes(np.asarray(every)[:size]).decode())


def gather_json(obj: Any) -> list:
    """Every process's ``obj`` (JSON-able), in process order, on every process."""
    if jax.process_count() == 1:
        return [obj]
    from jax.experimental import multihost_utils  # noqa: PLC0415

    mine = json.dumps(obj, sort_keys=True).encode()
    sizes = np.asarray(multihost_utils.process_allgather(np.int32(len(mine)))).reshape(-1)
    every = np.asarray(multihost_utils.process_allgather(_padded(mine, int(sizes.max())))).reshape(len(sizes), -1)
    return [json.loads(bytes(row[:n]).decode()) for row, n in zip(every, sizes)]


def describe(e: BaseException) -> str:
    """``e`` as the text of a one-line error (a user-facing error's message, else its class too)."""
    text = " ".join(str(e).split())[:300]
    if isinstance(e, NasError):
        return text
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def on_every_process(fn: Callable[[], Any], what: str) -> Any:
    """``fn()`` on every process, which must all call this at the same point. Where it fails on any
    process, every process fails: that one with its own error, the others with a DistributedError
    naming it and ``what`` it was doing, instead of waiting for ever for a partner that stopped.
    """
    if jax.process_count() == 1:
        return fn()
    result, error = None, None
    try:
        result = fn()
    except Exception as e:  # noqa: BLE001 - reported to the partners, then raised as it is
        error = e
    seen = gather_json(None if error is None else describe(error))
    if error is not None:
        raise error
    failed = [(p, text) for p, text in enumerate(seen) if text is not None]
    if failed:
        p, text = failed[0]
        raise DistributedError(f"process {p} failed {what}: {text}")
    return result


def check_same_settings(settings: dict[str, Any]) -> None:
    """Raises the same DistributedError on every process unless all were started with ``settings``
    equal (a JSON-able dict), naming the first process and the keys that differ from process 0's."""
    if jax.process_count() == 1:
        return
    try:  # the run's first collective: where a partner that failed at start-up shows
        seen = gather_json(settings)
    except jax.errors.JaxRuntimeError as e:
        raise DistributedError(
            f"process {jax.process_index()}: the other {jax.process_count() - 1} process(es) did not join the "
            "first exchange; one failed at start-up or was started with another --num-processes or "
            f"--coordinator (see its error): {' '.join(str(e).split())[:160]}") from None
    for p, other in enumerate(seen[1:], start=1):
        differ = _settings_differ(p, seen[0], other)
        if differ:
            raise DistributedError(differ)
