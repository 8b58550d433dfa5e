"""Data parallelism: N devices train and evaluate as one device does on the same global batch.

XLA_FLAGS must be set before JAX starts, so every multi-device case runs this file as a script in a
fresh process with ``--xla_force_host_platform_device_count=4`` and reads its JSON answer.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
NAS = "import sys; from nas_cli.main import main; sys.argv[0] = 'nas'; main()"


def _env(devices: int = 4) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    return env


def _worker(*args: str, timeout: int = 600) -> dict:
    """Runs this file's ``main`` with ``args`` in a 4-device process; its last stdout line is JSON."""
    proc = subprocess.Popen([PY, __file__, *args], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


# --- the priority-1 contract: N devices == 1 device ---------------------------------------------


def _check_same_training(res: dict) -> None:
    """Losses and the first step's gradient agree to float32 rounding. Parameters after 3 AdamW
    steps agree to 1e-5 except where a gradient is float32 noise (~1e-9): Adam divides it by its own
    square root, so rounding there moves a weight by up to the learning rate; the measured worst case
    is bounded by the sum of the 3 steps' learning rates (9e-4)."""
    assert res["devices"] == [1, 4]
    np.testing.assert_allclose(res["losses"][1], res["losses"][0], rtol=2e-5, atol=2e-6)
    assert res["grad_rel_diff"] < 1e-4, res
    assert res["param_frac_over_1e-5"] < 0.01 and res["max_param_diff"] < 9e-4, res


@pytest.mark.parametrize("space", [
    pytest.param("mobilenetv3-tiny", marks=pytest.mark.slow),  # ~9 min cold on the loaded 2-core box
    "resnet-tiny",
    pytest.param("vit-tiny", marks=pytest.mark.slow),
])
def test_four_devices_train_like_one(space):
    """3 sandwich steps (largest teaches smallest) on 4 devices: the same losses, gradients and
    parameters as on 1 device with the same global batch, within float32 tolerance."""
    res = _worker("steps", space, "xla")
    _check_same_training(res)
    assert res["params_sharding"] == "replicated" and res["batch_shards"] == 4
    # no argument is copied to the mesh behind the step's back (an uncommitted zero gradient or
    # block index did that in every backward: JAX's slow dispatch path, bench/RESULTS.md)
    assert res["transfer_guard"] == "no implicit transfer", res["transfer_guard"]


@pytest.mark.slow
def test_four_devices_pallas_trainer_like_one():
    """The Pallas trainer (interpret mode on CPU), its kernels per device shard: the same too."""
    res = _worker("steps", "mobilenetv3-tiny", "pallas")
    _check_same_training(res)
    assert res["transfer_guard"] == "no implicit transfer", res["transfer_guard"]


def test_parallel_evaluation_equals_serial():
    """BN recalibration + validation with the batch split over 4 devices: the serial accuracies."""
    res = _worker("evaluate", "resnet-tiny")
    assert res["parallel"] == res["serial"] == res["search"], res
    assert res["search_devices"] == 4
    assert res["max_logit_diff"] < 1e-4, res


def test_search_devices_flag_measures_the_same_accuracies():
    """`nas search --devices 1` and `--devices 4` (on copies of one run): the same accuracies, each
    measured on the asked number of devices; more than there are, or 0, is a one-line error."""
    res = _worker("search", "resnet-tiny")
    assert res["meshes"] == {"1": [1], "4": [4], "default": [4]}, res
    assert res["accuracies"]["1"] == res["accuracies"]["4"] == res["accuracies"]["default"], res
    assert len(res["accuracies"]["1"]) >= 4 and len(set(res["accuracies"]["1"].values())) > 1, res
    assert res["too_many"] == [2, "error: --devices 5: this process has only 4 cpu device(s); use at most 4"], res
    assert res["zero"] == [2, "error: --devices 0 must be at least 1"], res


def test_batch_not_divisible_is_one_line(tmp_path):
    from typer.testing import CliRunner

    from nas_cli.main import app

    proc = subprocess.run([PY, "-c", NAS, "train-supernet", "--out", str(tmp_path / "r"),
                           "--space", "resnet-tiny", "--batch-size", "30", "--epochs", "1"],
                          cwd=ROOT, env=_env(4), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert lines == ["error: --batch-size 30 does not split over 4 devices; use a multiple of 4 "
                     "(e.g. 28 or 32) or another --devices"], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    result = CliRunner().invoke(app, ["train-supernet", "--out", str(tmp_path / "s"), "--devices", "0"])
    assert result.exit_code == 2 and "--devices 0 must be at least 1" in result.output


# --- multi-process: two processes on 127.0.0.1 -------------------------------------------------

TINY = ["--space", "resnet-tiny", "--epochs", "2", "--batch-size", "32", "--limit-train", "128",
        "--num-random", "0", "--calib-images", "64", "--seed", "1"]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(out: Path, *extra: str, devices: int = 1) -> subprocess.Popen:
    return subprocess.Popen([PY, "-c", NAS, "train-supernet", "--out", str(out), *TINY, *extra], cwd=ROOT,
                            env=_env(devices), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str, str]]:
    """(return code, stdout, stderr) of each process; every one still running at the end is killed."""
    import time

    deadline, results = time.monotonic() + timeout, []
    try:
        for p in procs:
            try:
                out, err = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                out, err = p.communicate()
            results.append((p.returncode, out, err))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    return results


def _wait(procs: list[subprocess.Popen], timeout: float = 600) -> list[tuple[int, str]]:
    """(return code, stderr) of each process (:func:`_finish`)."""
    return [(rc, err) for rc, _, err in _finish(procs, timeout)]


def _two(out: Path, port: int, *extra: str, timeout: float = 600) -> list[tuple[int, str]]:
    procs = [_start(out, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
                    "--init-timeout", "120", *extra) for i in range(2)]
    return _wait(procs, timeout)


def _losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory) -> Path:
    """The tiny supernet trained by one process on one device, global batch 32."""
    out = tmp_path_factory.mktemp("one") / "run"
    [(rc, err)] = _wait([_start(out)])
    assert rc == 0, err[-3000:]
    return out


@pytest.mark.slow  # ~160 s with its one-process reference on the loaded 2-core box
def test_two_processes_train_like_one(reference_run, tmp_path):
    """Two processes (one CPU device each, 16 images each per step) give one process's final.json;
    only process 0 writes the metrics and final.json, the checkpoint is written by both."""
    out = tmp_path / "two"
    for rc, err in _two(out, _free_port()):
        assert rc == 0, err[-3000:]
    assert json.loads((out / "final.json").read_text()) == json.loads((reference_run / "final.json").read_text())
    np.testing.assert_allclose(_losses(out), _losses(reference_run), rtol=1e-4)
    assert len(_losses(out)) == 2  # one writer
    assert sorted(p.name for p in (out / "checkpoint").iterdir() if p.name.isdigit()) == ["1", "2"]


@pytest.mark.slow
def test_two_processes_resume_after_one_is_killed(reference_run, tmp_path):
    """Process 1 killed in epoch 2; both restarted with --resume: the uninterrupted result."""
    import time

    out, port = tmp_path / "killed", _free_port()
    procs = [_start(out, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i),
                    "--init-timeout", "120") for i in range(2)]
    try:
        deadline = time.monotonic() + 600
        while not (out / "checkpoint" / "1").is_dir():  # orbax renames the folder when the save is complete
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
            time.sleep(0.2)
        procs[1].kill()  # mid epoch 2
        procs[1].communicate()
    finally:
        _wait(procs, timeout=5)  # process 0 waits for its partner in vain: ended by its handle here
    assert not (out / "final.json").exists()
    for rc, err in _two(out, _free_port(), "--resume"):
        assert rc == 0, err[-3000:]
    assert json.loads((out / "final.json").read_text()) == json.loads((reference_run / "final.json").read_text())
    np.testing.assert_allclose(_losses(out), _losses(reference_run), rtol=1e-4)


def _error_lines(err: str) -> list[str]:
    """The lines a failed process printed, less gloo's and absl's start-up chatter and the CLI's
    "preparing ...", "compiling ...", "compiled ..." and "search: ..." progress lines (progress, not part of the failure); a C++ abort's stack trace
    ("Check failure", "@ 0x...") would stay and fail the one-line checks."""
    return [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("[Gloo]", "W1", "I1", "preparing ", "compiling", "compiled ", "search: "))]


def test_process_zero_alone_is_one_line(tmp_path):
    """Process 0 whose partner never arrives: one line naming the address, the process count and
    the timeout, exit 2 (JAX's own client would abort with a C++ stack trace)."""
    port = _free_port()
    [(rc, err)] = _wait([_start(tmp_path / "r", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                "--process-id", "0", "--init-timeout", "3")], timeout=120)
    assert rc == 2, err[-2000:]
    assert _error_lines(err) == [
        f"error: process 0 waited 3 s at the coordinator 127.0.0.1:{port} for the other 1 process(es) of the "
        f"2-process run; none arrived. Start each with --coordinator 127.0.0.1:{port} --num-processes 2 and its "
        "own --process-id, or raise --init-timeout"], err[-2000:]


def test_multi_process_errors(tmp_path):
    """Unreachable coordinator (names the address), another --num-processes, a process started
    with other settings: one line each on every process, exit 2, before JAX's runtime starts."""
    port = _free_port()
    [(rc, err)] = _wait([_start(tmp_path / "u", "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                                "--process-id", "1", "--init-timeout", "2")], timeout=120)
    assert rc == 2, err[-2000:]
    assert _error_lines(err) == [f"error: could not reach the coordinator at 127.0.0.1:{port} within 2 s "
                                 "(Connection refused) for the 2-process run; start process 0 there first, or fix "
                                 "--coordinator"], err[-2000:]

    port = _free_port()
    procs = [_start(tmp_path / "n", "--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n),
                    "--process-id", str(i), "--init-timeout", "60") for i, n in ((0, 2), (1, 3))]
    for rc, err in _wait(procs, timeout=300):
        assert rc == 2, err[-2000:]
        assert _error_lines(err) == [f"error: process 1 was started with --num-processes 3, process 0 at "
                                     f"127.0.0.1:{port} with 2; start every process with the same --num-processes"]

    out, port = tmp_path / "m", _free_port()
    common = ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--init-timeout", "60"]
    procs = [_start(out, *common, "--process-id", "0"),
             _start(out, *common, "--process-id", "1", "--lr", "0.01")]
    for rc, err in _wait(procs, timeout=300):
        assert rc == 2, err[-2000:]
        assert _error_lines(err) == ["error: process 1 was started with other settings than process 0 (lr: 0.003 on "
                                     "process 0, 0.01 on process 1); start every process with the same flags"]
    assert not out.exists() or not (out / "config.json").exists()


# --- multi-process search: process 0 searches, every process measures its share of the subnets ---


def test_spread_shares_and_merges_a_batch():
    from nas_cli.evaluation.spread import merge, share

    keys = [f"a{i}" for i in range(7)]
    parts = [share(keys, p, 3) for p in range(3)]
    assert parts == [["a0", "a3", "a6"], ["a1", "a4"], ["a2", "a5"]]
    assert merge([[float(k[1:]) for k in part] for part in parts], 7) == [float(i) for i in range(7)]
    assert merge([[0.5], [], []], 1) == [0.5]  # fewer subnets than processes


def test_spread_in_one_process_measures_here():
    from nas_cli.errors import UserError
    from nas_cli.evaluation.spread import SpreadMeasurer

    spread = SpreadMeasurer(lambda key: len(key) / 10)
    assert spread.count == 1 and spread.measure(["a", "bb", "a"]) == [0.1, 0.2, 0.1] and spread.measured == 3

    def bad(key):
        raise UserError(f"cannot measure {key}")

    with pytest.raises(UserError, match="cannot measure a$"):  # its own error, as it is
        SpreadMeasurer(bad).measure(["a"])


def test_search_multi_host_flags_are_one_line_errors(tmp_path):
    """Checked before anything starts or is written: a bad id or address, a table searched by several
    processes (it is looked up, not measured)."""
    from typer.testing import CliRunner

    from nas_cli.main import app

    base = ["search", str(tmp_path / "run"), "--latency-budget", "1ms"]
    for extra, message in (
        (["--num-processes", "2", "--process-id", "2"], "error: --process-id 2 must be below --num-processes 2 "
                                                        "(ids are 0..1)"),
        (["--coordinator", "10.0.0.1"], "error: --coordinator '10.0.0.1' is not HOST:PORT"),
        (["--benchmark-table", str(tmp_path / "t.csv"), "--coordinator", "127.0.0.1:1234", "--num-processes", "2",
          "--process-id", "0"], "error: --coordinator, --num-processes and --process-id only apply to a training "
                                "run (a benchmark table is looked up, not measured); run one process without them"),
    ):
        result = CliRunner().invoke(app, base + extra)
        assert result.exit_code == 2 and result.output.strip().splitlines()[-1].startswith(message), result.output
    assert not (tmp_path / "run").exists()


SEARCH = ["--latency-budget", "90%", "--population", "6", "--generations", "2", "--seed", "3",
          "--no-latency-calibrate"]


def _start_search(run: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([PY, "-c", NAS, "search", str(run), "--out", str(out), *SEARCH, *extra], cwd=ROOT,
                            env=_env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _two_searches(run: Path, out: Path, *extra: str, extra_1: tuple = (), timeout: float = 600) -> list:
    """(return code, stdout, stderr) of both processes of a two-process search."""
    port = _free_port()
    procs = [_start_search(run, out, "--coordinator", f"127.0.0.1:{port}", "--num-processes", "2",
                           "--process-id", str(i), "--init-timeout", "120", *extra, *(extra_1 if i else ()))
             for i in range(2)]
    return _finish(procs, timeout)


def test_search_processes_started_alike(tmp_path):
    """Two search processes with other --seed: the training run's pre-flight check, one line each."""
    for rc, _, err in _two_searches(tmp_path / "run", tmp_path / "s", extra_1=("--seed", "4"), timeout=300):
        assert rc == 2, err[-2000:]
        assert _error_lines(err) == ["error: process 1 was started with other settings than process 0 (seed: 3 on "
                                     "process 0, 4 on process 1); start every process with the same flags"], err
    assert not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def search_run(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny resnet run (its initial weights as a checkpoint) and a latency table of its space."""
    import jax
    from typer.testing import CliRunner

    from nas_cli import runs
    from nas_cli.config import TrainConfig
    from nas_cli.main import app
    from predictors.files import atomic_write_json

    where = tmp_path_factory.mktemp("search")
    cfg = TrainConfig(space="resnet-tiny", calib_images=64, limit_train=256)
    space = runs.make_space(cfg, runs.load_run_dataset(cfg))
    made = where / "run"
    made.mkdir()
    atomic_write_json(made / runs.CONFIG, cfg.to_json())
    runs.save_checkpoint(made, {"params": space.init_supernet(jax.random.key(3))}, 1)
    lut = where / "lut.json"
    result = CliRunner().invoke(app, ["latency", "profile", "--space", "resnet-tiny", "--resolution", "8",
                                      "--in-channels", "1", "--num-classes", "10", "--repeats", "1", "--rounds", "1",
                                      "--warmup", "1", "--calib-samples", "1", "--out", str(lut)])
    assert result.exit_code == 0, result.output
    return made, lut


def _same_measurements(path: Path) -> list:
    """pareto.json's front less the final timing of its members (noise)."""
    front = json.loads(path.read_text())["front"]
    return [{k: v for k, v in row.items() if k != "latency_measured_ms"} for row in front]


@pytest.mark.slow  # ~40 s with the next test and their fixture on the 2-core box
def test_two_processes_search_like_one(search_run, tmp_path):
    """A deterministic search (latency from a table) by two processes, each measuring its share of
    every batch's accuracies: one process's front, cache and accuracies; only process 0 writes."""
    import shutil

    made, lut = search_run
    for name in ("one", "two"):  # each run its own accuracy cache: both searches measure every subnet
        shutil.copytree(made, tmp_path / name)
    [(rc, err)] = _wait([_start_search(tmp_path / "one", tmp_path / "one-s", "--latency-table", str(lut))])
    assert rc == 0, err[-3000:]
    (rc0, out0, err0), (rc1, out1, err1) = _two_searches(tmp_path / "two", tmp_path / "two-s",
                                                         "--latency-table", str(lut))
    assert rc0 == 0 and rc1 == 0, (err0[-3000:], err1[-3000:])
    assert "Pareto front" in out0
    served = int(out1.split("process 1: measured ")[1].split()[0])
    one, two = tmp_path / "one-s", tmp_path / "two-s"
    assert _same_measurements(two / "pareto.json") == _same_measurements(one / "pareto.json")
    assert (two / "cache.jsonl").read_text() == (one / "cache.jsonl").read_text()
    accuracies = [(tmp_path / name / "subnet_accuracy.jsonl").read_text() for name in ("one", "two")]
    assert accuracies[0] == accuracies[1]
    measured = len(accuracies[0].splitlines())
    assert measured >= 6 and served == measured // 2, (measured, served)  # process 1: every second subnet
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


@pytest.mark.slow
def test_process_zero_failing_stops_the_search_everywhere(search_run, tmp_path):
    """A budget no subnet meets: process 0's one-line error, and process 1 stops with it (exit 2)."""
    made, lut = search_run
    results = _two_searches(made, tmp_path / "s", "--latency-table", str(lut), "--latency-budget", "0.0001ms")
    (rc0, _, err0), (rc1, _, err1) = results
    assert rc0 == 2 and rc1 == 2, (err0[-2000:], err1[-2000:])
    lines0, lines1 = _error_lines(err0), _error_lines(err1)
    assert len(lines0) == 1 and len(lines1) == 1, (lines0, lines1)
    [line0], [line1] = lines0, lines1
    assert line0.startswith("error: latency budget '0.0001ms'") and "smallest latency achievable" in line0
    assert line1 == "error: process 0 stopped the search: " + line0.removeprefix("error: ")


# --- the worker -------------------------------------------------------------------------------


def _steps(space_name: str, kernels: str) -> dict:
    import jax

    from nas_cli import distributed as dist
    from nas_cli import runs
    from nas_cli.config import TrainConfig
    from nas_cli.training.supernet import TrainState, make_optimizer, train_step, zero_grads

    cfg = TrainConfig(space=space_name, batch_size=16)
    ds = runs.load_run_dataset(cfg)
    space = runs.make_space(cfg, ds)
    archs = [space.largest(), space.smallest()]

    def run(n):
        mesh = dist.make_mesh(n)
        state = TrainState.create(dist.replicate(space.init_supernet(jax.random.key(0)), mesh),
                                  make_optimizer(cfg, 10))
        if kernels == "pallas":
            from search_spaces.planned import KernelTrainer

            net = KernelTrainer(space, ds.mean, ds.std, 0.1, implementation="pallas", interpret=True)
            if n > 1:
                net.shard_over(mesh)
        else:
            net = space.make_trainer(ds.mean, ds.std, 0.1, "xla")
        first = dist.shard_batch(mesh, (ds.train.images[:16], ds.train.labels[:16]))
        _, _, grads = net.accumulate_grad(state.params, zero_grads(state.params), archs[0], *first)
        grads = jax.tree.map(np.asarray, grads)
        losses, batch = [], None
        for i in range(3):
            rows = slice(16 * i, 16 * i + 16)
            batch = dist.shard_batch(mesh, dist.process_slice((ds.train.images[rows], ds.train.labels[rows])))
            state, metrics = train_step(state, net, archs, batch)
            losses.append(float(metrics["loss"]))
        leaf = jax.tree.leaves(state.params)[0]
        params = jax.tree.map(np.asarray, state.params)
        try:  # one more step: every argument of every program must already be where it runs
            with jax.transfer_guard("disallow"):
                state, metrics = train_step(state, net, archs, batch)
                jax.block_until_ready(metrics["loss"])
            guard = "no implicit transfer"
        except Exception as e:  # noqa: BLE001 -- reported to the test, which prints it
            guard = str(e).splitlines()[0]
        return losses, params, leaf, batch[0], grads, guard

    l1, p1, _, _, g1, _ = run(1)
    l4, p4, leaf, images, g4, guard = run(4)
    p1, p4, g1, g4 = (np.concatenate([a.ravel() for a in jax.tree.leaves(t)]) for t in (p1, p4, g1, g4))
    return {"devices": [1, 4], "losses": [l1, l4], "max_param_diff": float(np.max(np.abs(p1 - p4))),
            "param_frac_over_1e-5": float(np.mean(np.abs(p1 - p4) > 1e-5)),
            "grad_rel_diff": float(np.max(np.abs(g1 - g4)) / np.max(np.abs(g1))),
            "params_sharding": "replicated" if leaf.sharding.is_fully_replicated else str(leaf.sharding),
            "batch_shards": len({s.device for s in images.addressable_shards}), "transfer_guard": guard}


def _evaluate(space_name: str) -> dict:
    import jax

    from nas_cli import distributed as dist
    from nas_cli import runs
    from nas_cli.config import TrainConfig
    from nas_cli.evaluation.supernet import RunEvaluator
    from nas_cli.evaluation.subnet import SubnetEvaluator

    cfg = TrainConfig(space=space_name)
    ds = runs.load_run_dataset(cfg)
    space = runs.make_space(cfg, ds)
    params = jax.tree.map(np.asarray, space.init_supernet(jax.random.key(3)))
    from nas_cli.training.supernet import calibration_images

    calib = calibration_images(ds, 256, cfg.seed)
    rng = np.random.default_rng(0)
    archs = [space.largest(), space.smallest(), space.sample(rng)]
    serial = SubnetEvaluator(space, ds.mean, ds.std)
    parallel = SubnetEvaluator(space, ds.mean, ds.std, mesh=dist.make_mesh(4))
    out = {"serial": [], "parallel": [], "search": [], "max_logit_diff": 0.0}
    for arch in archs:
        logits = []
        for name, ev in (("serial", serial), ("parallel", parallel)):
            # nothing copied between devices behind the evaluator's back (the arch's indices were)
            with jax.transfer_guard_device_to_device("disallow"):
                stats = ev.calibrate(params, arch, calib)
                logits.append(ev.logits(params, stats, arch, ds.val.images))
                out[name].append(ev.accuracy(params, stats, arch, ds.val))
        out["max_logit_diff"] = max(out["max_logit_diff"], float(np.max(np.abs(logits[0] - logits[1]))))
    # the search's evaluator: every local device by default
    with tempfile.TemporaryDirectory() as tmp:
        cfg = dataclasses.replace(cfg, calib_images=len(calib))
        run_eval = RunEvaluator(runs.Run(Path(tmp), cfg, ds, space, params, 1))
        out["search_devices"] = run_eval._subnets.mesh.devices.size
        out["search"] = [run_eval.accuracy(a) for a in archs]
    return out


def _search(space_name: str) -> dict:
    """`nas search` over copies of one run (initial weights, a checkpoint of step 1) with --devices
    1, 4 and left out. The latency is replaced by a FLOPs count (what is compared is accuracy)."""
    import shutil

    import jax
    from typer.testing import CliRunner

    from nas_cli import runs
    from nas_cli.evaluation import supernet as run_eval
    from nas_cli.config import TrainConfig
    from nas_cli.main import app
    from predictors.files import atomic_write_json

    cfg = TrainConfig(space=space_name, calib_images=64, limit_train=256)
    ds = runs.load_run_dataset(cfg)
    space = runs.make_space(cfg, ds)
    meshes: dict[str, list[int]] = {}

    class Recorded(run_eval.SubnetEvaluator):
        def __init__(self, *args, mesh=None, **kwargs):
            meshes.setdefault(current, []).append(mesh.devices.size)
            super().__init__(*args, mesh=mesh, **kwargs)

    run_eval.SubnetEvaluator = Recorded
    run_eval.RunEvaluator.measured_latencies = lambda self, archs: [space.flops(a) * 1e-6 for a in archs]
    out: dict = {"accuracies": {}}
    with tempfile.TemporaryDirectory() as tmp:
        made = Path(tmp) / "made"
        made.mkdir()
        atomic_write_json(made / runs.CONFIG, cfg.to_json())
        runs.save_checkpoint(made, {"params": space.init_supernet(jax.random.key(3))}, 1)
        for current in ("1", "4", "default"):
            run = Path(tmp) / current
            shutil.copytree(made, run)  # each its own accuracy cache
            flag = [] if current == "default" else ["--devices", current]
            result = CliRunner().invoke(app, ["search", str(run), "--latency-budget", "100%", "--population", "6",
                                              "--generations", "1", *flag])
            assert result.exit_code == 0, result.output
            rows = [json.loads(line) for line in (run / run_eval.ACCURACY_CACHE).read_text().splitlines()]
            out["accuracies"][current] = {r["arch"]: r["accuracy"] for r in rows}
        for key, n in (("too_many", "5"), ("zero", "0")):
            result = CliRunner().invoke(app, ["search", str(made), "--latency-budget", "1ms", "--devices", n])
            out[key] = [result.exit_code, result.output.strip().splitlines()[-1]]
    out["meshes"] = meshes
    return out


def main(argv: list[str]) -> None:
    from nas_cli.runs import enable_compilation_cache

    enable_compilation_cache()
    kind, rest = argv[0], argv[1:]
    result = {"steps": _steps, "evaluate": _evaluate, "search": _search}[kind](*rest)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
