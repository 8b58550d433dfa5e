"""Fake CPU devices on a small busy machine: collectives must not stall until XLA aborts the process.

XLA_FLAGS must be set before JAX starts, so each case runs this file as a script in a fresh process
with ``--xla_force_host_platform_device_count``. The slow case is the reproduction of issue 31: two
busy-loop processes beside a loop of small programs that all-reduce over 4 fake devices aborted with
"Expected 4 threads to join the rendezvous, but only 2 of them arrived" (exit 134) within a minute
when XLA's CPU pool had one thread per device (see nas_cli/distributed.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nas_cli import distributed as dist

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, devices: int = 4, pool: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != dist.POOL_ENV}
    env.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if pool is not None:
        env[dist.POOL_ENV] = pool
    return subprocess.run([sys.executable, __file__, *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_pool_setting_follows_the_fake_device_count():
    flags = {"XLA_FLAGS": "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=4"}
    assert dist.forced_cpu_devices(flags) == 4
    assert dist.cpu_pool_env(flags, cores=2) == {"PJRT_NPROC": "8"}
    assert dist.cpu_pool_env(flags, cores=16) == {"PJRT_NPROC": "16"}  # never fewer threads than cores
    assert dist.cpu_pool_env({"JAX_NUM_CPU_DEVICES": "3"}, cores=2) == {"PJRT_NPROC": "6"}
    assert dist.cpu_pool_env({}, cores=2) == {}  # one device: XLA's own default
    assert dist.cpu_pool_env({**flags, "PJRT_NPROC": "5"}, cores=2) == {}  # the user's choice, checked by make_mesh


def test_a_process_with_fake_devices_gets_a_pool_with_spare_threads():
    proc = _run("pool")
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["devices"] == 4 and res["pool"] >= 8, res


def test_too_small_a_pool_is_refused_in_one_line_naming_the_setting():
    proc = _run("pool", pool="4")
    assert proc.returncode == 3, proc.stderr[-2000:]
    line = proc.stdout.strip().splitlines()[-1]
    assert "PJRT_NPROC=8" in line and "has 4" in line and "--devices 2" in line, line


@pytest.mark.slow
def test_collectives_over_fake_devices_survive_two_busy_loops():
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        t0 = time.monotonic()
        proc = _run("collectives", "45", timeout=400)
    finally:
        for p in busy:
            p.kill()
            p.wait()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rendezvous" not in proc.stderr, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["programs"] > 1000 and time.monotonic() - t0 < 300, res


def _main(argv: list[str]) -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    try:
        mesh = dist.make_mesh()
    except dist.DistributedError as e:
        print(e)
        sys.exit(3)
    if argv[0] == "pool":
        print(json.dumps({"devices": mesh.devices.size, "pool": dist.cpu_pool_threads(len(jax.local_devices()))}))
        return
    # many small programs, each with all-reduces over the mesh, dispatched asynchronously as a
    # training step's per-piece programs are
    rows, full = NamedSharding(mesh, P(dist.AXIS)), NamedSharding(mesh, P())
    x = jax.device_put(np.random.default_rng(0).normal(size=(64, 128)).astype(np.float32), rows)
    w = jax.device_put(np.eye(128, dtype=np.float32), full)
    fns = [jax.jit(lambda x, w, k=k: (x @ w * (k + 1), jnp.tanh(x @ w).mean(0).sum()), out_shardings=(rows, full))
           for k in range(12)]
    t0, i, seconds = time.monotonic(), 0, float(argv[1])
    while time.monotonic() - t0 < seconds:
        x, s = fns[i % 12](x, w)
        x = x / (1 + jnp.abs(x).max())
        i += 1
        if i % 200 == 0:
            float(s)
    print(json.dumps({"programs": 2 * i, "seconds": round(time.monotonic() - t0, 1)}))


if __name__ == "__main__":
    _main(sys.argv[1:])
