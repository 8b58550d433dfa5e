"""Every benchmark in bench/ runs (issue 20): a benchmark that does not run is a defect like a failing test.

Each Python script runs in a subprocess at tiny sizes (a -tiny space, one repeat, a few subnets) and its
JSON output is parsed; the shell recipes behind the published figures have every `nas` subcommand and
flag they use checked against the CLI, and every bench-script flag against that script's --help.
Timings here mean nothing; they are figures only on a quiet machine at full size (bench/RESULTS.md).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer

from nas_cli.runs import compilation_cache_dir

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "bench"


def run_script(script: str, *args, cwd: Path = ROOT, timeout: int = 900) -> str:
    # the persistent XLA cache of `nas`, so a second run of the suite compiles little; set here, not
    # in the scripts, whose compile-time figures must stay cold. One folder per script: a script may
    # set its own XLA_FLAGS (fake devices), whose executables must not reach another topology.
    cache = compilation_cache_dir(f"bench-{Path(script).stem}")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_COMPILATION_CACHE_DIR": cache,
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.3"}
    proc = subprocess.run([sys.executable, str(BENCH / script), *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{proc.stderr[-4000:]}"
    return proc.stdout


def last_json(stdout: str):
    """The JSON document a bench prints (the last one, when it prints a line per step first)."""
    text = stdout.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return json.loads(text.splitlines()[-1])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """A 1-epoch mobilenetv3-tiny supernet on a few hundred digits (for the scripts that read a run)."""
    from nas_cli.config import TrainConfig
    from nas_cli.training.supernet import train_supernet

    out = tmp_path_factory.mktemp("bench") / "run"
    cfg = TrainConfig(space="mobilenetv3-tiny", dataset="digits", epochs=1, batch_size=32, limit_train=256)
    train_supernet(cfg, out, log=lambda m: None)
    return out


def _sample_csv(space, path: Path, n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    archs = sorted({space.encode(space.sample(rng)) for _ in range(n)})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch", "accuracy"])
        w.writerows([a, f"{0.5 + 0.4 * space.flops(space.decode(a)) / space.flops(space.largest()):.4f}"]
                    for a in archs)
    return archs


# --- the Python benchmarks ---------------------------------------------------------------------
def test_kernel_speed_bench():
    out = last_json(run_script("kernel_speed.py", "--m", 8, "--k", 16, "--n", 16, "--repeats", 1))
    assert len(out["results"]) == 4 and set(out["recompiles_after_first_fraction"].values()) == {0}


def test_data_parallel_bench():
    out = last_json(run_script("data_parallel.py", "--space", "resnet-tiny", "--batch", 8, "--devices", 2,
                               "--repeats", 1, "--warmup", 1, "--bn", "both"))
    assert set(out["results"]) == {"1", "2"} and out["results"]["2"]["per_device_batch"] == 4
    assert out["overhead_ratio"] > 0 and out["results"]["1"]["images_per_s"] > 0
    fused, plain = out["workloads"]
    assert (fused["bn"], plain["bn"]) == ("fused", "plain")
    # the fused BatchNorm's one reduction each way, against the textbook formula's two or more
    assert fused["breakdown"]["collectives_per_step"] < plain["breakdown"]["collectives_per_step"]
    # every program of the step is counted: 2 subnets' pieces and heads, the update, and the zero
    # gradient, teacher softmax and mean loss (one each)
    kinds = fused["breakdown"]["2"]["kinds"]
    assert kinds["other"]["calls_per_step"] == 3 and kinds["update"]["calls_per_step"] == 1, kinds


def test_weight_sharing_bench():
    out = last_json(run_script("weight_sharing.py", "--space", "mobilenetv3-tiny", "--resolution", 8, "--batch", 4,
                               "--subnets", 2, "--repeats", 1))
    assert out["recompiles"] == 0 and out["recompiles_after_timing"] == 0
    assert out["ratio_smallest"] > 0 and out["ratio_largest"] > 0


def test_latency_bench():
    out = last_json(run_script("latency.py", "--space", "mobilenetv3-tiny", "--samples", 3, "--train-samples", 3,
                               "--repeats", 1, "--rounds", 2, "--calib-samples", 1))
    assert out["space"] == "mobilenetv3-tiny" and out["table"]["n"] == 3 and np.isfinite(out["table"]["mape"])


@pytest.mark.slow  # two `nas search` processes, each compiling the supernet's evaluation
def test_runtime_fronts_bench(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    out = last_json(run_script("runtime_fronts.py", tiny_run, "--out-root", tmp_path, "--evaluations", 4,
                               "--initial", 2, "--batch", 2, "--pool", 50))
    assert set(out["runtimes"]) == {"jax", "onnxruntime"}
    assert all(r["n_evaluations"] == 4 and r["front"] for r in out["runtimes"].values())
    pair = out["comparison"]["jax_vs_onnxruntime"]
    assert 0 <= pair["members_in_common"] <= min(pair["front_sizes"]) and 0 <= pair["jaccard"] <= 1
    # the same seed proposes the same initial design in both runtimes, so both measured those subnets
    assert pair["evaluated_in_common"]["n"] >= 2 and pair["evaluated_in_common"]["median_ratio"] > 0


@pytest.mark.slow  # an export, then four fresh processes each loading it (the old way rebuilds eagerly)
def test_load_export_bench(tiny_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from nas_cli import runs
    from nas_cli.export import export_subnet

    space = runs.open_run(tiny_run).space
    export_subnet(tiny_run, tmp_path / "export", arch=space.encode(space.smallest()), log=lambda m: None)
    out = last_json(run_script("load_export.py", tmp_path / "export", "--images", 3))
    assert [r["way"] for r in out["runs"]] == ["before", "nnx", "stablehlo", "onnx"]
    assert all(r["same_twice"] and r["max_abs_diff"] < 1e-5 for r in out["runs"])
    assert set(out["median"]) == {"before", "nnx", "stablehlo", "onnx"}


@pytest.mark.slow  # three `nas search` processes (one alone, then two on 127.0.0.1)
def test_search_processes_bench(tiny_run, tmp_path):
    out = last_json(run_script("search_processes.py", tiny_run, "--out-root", tmp_path, "--evaluations", 4,
                               "--initial", 2, "--batch", 2, "--predictor", "ridge"))
    assert set(out["results"]) == {"1", "2"} and all(r["front"] for r in out["results"].values())
    assert out["time_ratio"] > 0
    # each search measured its own copy of the run (the copies start without an accuracy cache)
    assert all((tmp_path / f"run-{n}" / "subnet_accuracy.jsonl").is_file() for n in (1, 2))


def test_search_bench(tmp_path):
    out = last_json(run_script("search.py", "--synthetic", "--evaluations", 40, "--seeds", 1, "--initial", 16,
                               "--batch", 12, "--predictor", "ridge"))
    assert out["evaluations"] == 40 and len(out["summary"]) == 1
    (cell,) = out["summary"].values()
    assert set(cell) == {"front", "random"}
    assert all(0 < r["hv_ratio"] <= 1 and 0 <= r["front_found"] <= 1 and r["evaluations"] == 40 for r in out["runs"])


def test_search_bench_oracle_ceiling_study(tmp_path):
    args = ("search.py", "--synthetic", "--evaluations", 30, "--seeds", 1, "--initial", 16, "--batch", 14,
            "--predictor", "ridge")
    truth = last_json(run_script(*args, "--oracle", "accuracy=table,latency=table"))
    assert truth["oracle"] == {"accuracy": "table", "latency": "table"}
    front = next(r for r in truth["runs"] if r["method"] == "front")
    # with both metrics known, the 14 cells proposed after the initial design are true front members
    size = front["true_front_size"]
    assert round(front["front_found"] * size) >= min(size, 14)
    bad = subprocess.run([sys.executable, str(BENCH / "search.py"), "--synthetic", "--oracle", "accuracy=guess"],
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "--oracle 'accuracy=guess'" in bad.stderr


@pytest.mark.slow  # 5-fold gradient boosting over the 15,625 cells: minutes on 2 cores
def test_search_bench_out_of_fold_oracle(tmp_path):
    out = last_json(run_script("search.py", "--synthetic", "--evaluations", 30, "--seeds", 1, "--initial", 16,
                               "--batch", 14, "--predictor", "ridge", "--oracle", "latency=oof"))
    assert out["oracle"] == {"latency": "oof"} and all(0 <= r["front_found"] <= 1 for r in out["runs"])


def test_input_pipeline_bench(tmp_path):
    out = last_json(run_script("input_pipeline.py", "--cifar-dir", tmp_path / "absent", "--folder-images", 120,
                               "--folder-side", 12, "--image-size", 8, "--batch-size", 8, "--batches", 4,
                               "--workers", 1, "--space", "mobilenetv3-tiny", "--steps", 1, "--warmup", 1))
    assert "skipped" in out["cifar10"] and out["folder"]["batch_shape"] == [8, 8, 8, 3]
    assert out["folder"]["images_per_s"] > 0 and out["folder"]["peak_rss_mb"] > 50
    assert out["step"]["images_per_s"] > 0 and out["step"]["subnets_per_step"] == 4
    assert out["ratio_to_step"]["folder"] == pytest.approx(out["folder"]["images_per_s"] / out["step"]["images_per_s"],
                                                           rel=0.01)


def test_resnet_costs_bench():
    out = last_json(run_script("resnet_costs.py", "--width-mult", 0.25, "--resolution", 8, "--batch", 4,
                               "--repeats", 1))
    assert {"smallest", "middle", "largest"} <= set(out) and out["eval_recompiles"] == 0


def test_vit_selection_bench():
    out = last_json(run_script("vit_selection.py", "--space", "vit-tiny", "--resolution", 8, "--batch", 4,
                               "--repeats", 1))
    assert out["space"] == "vit-tiny" and out["max_diff_largest"] < 1e-4


def test_supernet_quality_bench(tmp_path):
    out = last_json(run_script("supernet_quality.py", "--dataset", "digits", "--space", "mobilenetv3-tiny",
                               "--width-mult", 1.0, "--resolution", 8, "--epochs", 1, "--batch-size", 32,
                               "--limit-train", 128, "--subnets", 1, "--augment", "standard", "--out", tmp_path / "q"))
    assert {"smallest", "largest", "random0"} == set(out["rows"]) and np.isfinite(out["gap_smallest_points"])
    # the stand-alone side trains with the supernet's augmentation (digits default to none)
    assert out["settings"]["augment"] == "standard"
    assert json.loads((tmp_path / "q" / "alone-largest" / "config.json").read_text())["augment"] == "standard"
    assert [len(h) for h in out["history"].values()] == [1, 1, 1, 1]  # supernet + 3 alone, one epoch each


def test_predictors_bench(tmp_path):
    from search_spaces import get_space

    data = tmp_path / "rows.csv"
    _sample_csv(get_space("mobilenetv3-tiny"), data, 60)
    out = last_json(run_script("predictors.py", data, "--target", "accuracy", "--space", "mobilenetv3-tiny",
                               "--sizes", 16, "--repeats", 1, "--models", "ridge,rf", "--pretrain-samples", 0,
                               "--test-rows", 20, "--score-candidates", 100, "--score-model", "ridge"))
    assert {"ridge", "rf"} <= set(out["results"]["accuracy"]) and out["scoring"]


# --- the Fashion-MNIST analysis scripts, on a tiny run ----------------------------------------
def test_split_half_script(tiny_run, tmp_path):
    from nas_cli import runs

    space = runs.open_run(tiny_run).space
    archs = tmp_path / "archs.csv"
    _sample_csv(space, archs, 4)
    out = last_json(run_script("fashion_mnist/split_half.py", tiny_run, archs))
    assert out["n"] >= 3


def test_by_resolution_script(tiny_run, tmp_path):
    from typer.testing import CliRunner

    from nas_cli import runs
    from nas_cli.main import app

    space = runs.open_run(tiny_run).space
    train, test = tmp_path / "train.csv", tmp_path / "test.csv"
    _sample_csv(space, train, 40, seed=1)
    _sample_csv(space, test, 20, seed=2)
    res = CliRunner().invoke(app, ["predictor", "fit", str(train), "--target", "accuracy", "--model", "ridge",
                                   "--space", str(tiny_run), "--out", str(tmp_path / "model")])
    assert res.exit_code == 0, res.output
    out = last_json(run_script("fashion_mnist/by_resolution.py", tmp_path / "model", test))
    assert out["n"] == len(test.read_text().splitlines()) - 1 and "by_resolution" in out


def test_predictor_data_script(tmp_path):
    for s in (0, 1, 2):
        folder = tmp_path / "runs" / "fm" / f"random-{s}"
        folder.mkdir(parents=True)
        folder.joinpath("cache.jsonl").write_text("".join(
            json.dumps({"arch": f"r14-a{s}{i}", "metrics": {"accuracy": 0.5 + i / 100}}) + "\n" for i in range(9)))
    stdout = run_script("fashion_mnist/predictor_data.py", cwd=tmp_path)
    assert "27 random subnets" in stdout
    assert (tmp_path / "runs" / "fm" / "random_all.csv").read_text().count("\n") == 28


# --- the shell recipes ---------------------------------------------------------------------------
def _nas_commands() -> dict[tuple[str, ...], set[str]]:
    from nas_cli.main import app

    root = typer.main.get_command(app)
    found: dict[tuple[str, ...], set[str]] = {}

    def walk(cmd, path: tuple[str, ...]):
        if hasattr(cmd, "commands"):  # a group
            for name, sub in cmd.commands.items():
                walk(sub, path + (name,))
        else:
            found[path] = {opt for p in cmd.params for opt in p.opts + p.secondary_opts}

    walk(root, ())
    return found


@functools.lru_cache(maxsize=None)
def _script_flags(script: str) -> set[str]:
    return set(re.findall(r"--[a-z][a-z0-9-]*", run_script(script, "--help")))


def _shell_commands(path: Path) -> list[list[str]]:
    """Each command line of a bash recipe as words (continuations joined, ${ARRAY[@]} expanded)."""
    text = re.sub(r"\\\n", " ", path.read_text())
    text = re.sub(r"<<'PY'.*?\nPY\n", "\n", text, flags=re.S)  # inline Python is not a command
    arrays = {m.group(1): m.group(2) for m in re.finditer(r"^(\w+)=\((.*)\)$", text, flags=re.M)}
    out = []
    for line in text.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        for name, body in arrays.items():
            line = line.replace(f'"${{{name}[@]}}"', body)
        out.append(shlex.split(line.replace("&", " ").replace(">", " > "), comments=True))
    return out


@pytest.mark.parametrize("script", sorted(p.name for p in (BENCH / "fashion_mnist").glob("*.sh")))
def test_shell_recipes_use_real_commands_and_flags(script):
    commands = _nas_commands()
    script_flags: dict[str, set[str]] = {}
    checked = 0
    for words in _shell_commands(BENCH / "fashion_mnist" / script):
        for i, word in enumerate(words):
            if word == "$NAS" or (word.endswith("/bin/nas") and "=" not in word):
                rest = words[i + 1:]
                path = tuple(w for w in rest[:2] if not w.startswith(("-", "$")))
                while path and path not in commands:
                    path = path[:-1]
                assert path, f"{script}: `nas {' '.join(rest[:2])}` is not a nas command"
                flags = {w.split("=")[0] for w in rest if w.startswith("--")}
                unknown = flags - commands[path]
                assert not unknown, f"{script}: nas {' '.join(path)} has no {sorted(unknown)}"
                checked += 1
            elif word.startswith("bench/") and word.endswith(".py"):
                known = script_flags.setdefault(word, _script_flags(word[len("bench/"):]))
                unknown = {w.split("=")[0] for w in words[i + 1:] if w.startswith("--")} - known
                assert not unknown, f"{script}: {word} has no {sorted(unknown)}"
                checked += 1
    assert checked, f"{script} runs no nas command and no bench script"


# --- the peer benchmark against Once-for-All (issue 29): torch and ofa are the `bench` extra -----------
def _has_bench_extra() -> bool:
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "torchvision", "ofa"))


def test_peer_ofa_maps_each_subnet_onto_ofa_choices():
    """The pair of steps trains the same subnet: per-block kernel and expand, per-stage depth (no torch needed)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("peer_ofa", BENCH / "peer_ofa.py")
    peer_ofa = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(peer_ofa)  # imports numpy only; torch and ofa when a side is built
    space = peer_ofa.nas_space(32, 1.0)
    cfg = space.config
    archs = peer_ofa.fixed_archs(space)
    assert space.encode(archs["largest"]) == space.encode(space.largest())
    assert archs["middle"].depths == (3,) * cfg.num_stages and archs["middle"].stages[0][0] == (5, 4)
    arch = space.sample(np.random.default_rng(3))
    choice = peer_ofa.ofa_choice(arch, cfg.max_depth)
    assert choice["d"] == list(arch.depths) and len(choice["ks"]) == len(choice["e"]) == 5 * cfg.max_depth
    for s, blocks in enumerate(arch.stages):
        for b, (k, e) in enumerate(blocks):  # OFA runs a stage's first d blocks: slot s * max_depth + b
            assert (choice["ks"][s * cfg.max_depth + b], choice["e"][s * cfg.max_depth + b]) == (k, e)


@pytest.mark.slow  # compiles every block variant of the full mobilenetv3 supernet on CPU (minutes on 2 cores)
def test_peer_ofa_bench():
    if not _has_bench_extra():
        pytest.skip("needs the bench extra: pip install -e '.[bench]' (torch, torchvision, ofa)")
    out = last_json(run_script("peer_ofa.py", "--batch", 4, "--resolution", 16, "--repeats", 1, "--threads", 1))
    assert set(out["step_ratios"]) == {"smallest", "middle", "largest", "sandwich"}
    assert all(v > 0 for v in out["step_ratios"].values()) and out["memory_ratio"] > 0 and out["warmup_ratio"] > 0
    assert out["threads"]["torch"] == 1 and out["nas_recompiles_during_timing"] == 0
    assert out["nas_compiled_programs_after_warmup"] > 0 and out["memory_maps_after_warmup"]["nas_child"] > 0


def test_peer_ofa_without_the_bench_extra_is_a_clean_error():
    if _has_bench_extra():
        pytest.skip("torch and ofa are installed here")
    proc = subprocess.run([sys.executable, str(BENCH / "peer_ofa.py")], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2 and "pip install -e '.[bench]'" in proc.stderr
