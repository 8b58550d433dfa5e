"""The CLI's first impression: help that loads without JAX, shows every default and fits 80 columns;
`nas --version`; usage errors as one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from nas_cli.commands import help_texts as _help
from nas_cli.main import app

runner = CliRunner()
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _commands(group=None, path=()):
    """(path, click command) of every leaf command."""
    group = group or typer.main.get_command(app)
    for name, cmd in group.commands.items():
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, (*path, name))
        else:
            yield (*path, name), cmd


COMMANDS = [path for path, _ in _commands()]


def _command(path):
    return dict(_commands())[tuple(path)]


def _nas(*args, columns=None):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if columns:
        env["COLUMNS"] = str(columns)
    return subprocess.run([sys.executable, "-m", "nas_cli", *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_importing_the_cli_does_not_import_jax():
    # the errors' root, search_spaces.errors, is imported (its package loads its names lazily); the
    # library's modules are not
    code = ("import sys, nas_cli.main; heavy = [m for m in ('jax', 'numpy', 'search_spaces.base', 'search_spaces.registry', "
            "'predictors', 'rich') "
            "if m in sys.modules]; print(','.join(heavy))")
    env = dict(os.environ, PYTHONPATH=ROOT)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"`import nas_cli.main` imported {out.stdout.strip()}"


def test_the_help_modules_copy_matches_the_library():
    from nas_cli.config import KERNELS, RECIPES, SAMPLERS, TrainConfig
    from nas_cli.data import DATASETS, DEFAULT_IMAGE_SIZE
    from nas_cli.data.input_pipeline import AUGMENTATIONS
    from nas_cli.search import ALGORITHMS, SearchConfig
    from nas_cli.search.pipeline import DEFAULT_TABLE_SPACE
    from predictors import predictor_names
    from search_spaces import supernet_space_names

    assert _help.SUPERNET_SPACES == tuple(supernet_space_names())
    assert _help.DATASETS == tuple(DATASETS)
    assert _help.DEFAULT_IMAGE_SIZE == DEFAULT_IMAGE_SIZE
    assert _help.AUGMENTATIONS == AUGMENTATIONS
    assert (_help.RECIPES, _help.SAMPLERS, _help.KERNELS) == (RECIPES, SAMPLERS, tuple(KERNELS))
    train = TrainConfig()
    assert _help.TRAIN_DEFAULTS == {k: getattr(train, k) for k in _help.TRAIN_DEFAULTS}
    assert _help.ALGORITHMS == tuple(ALGORITHMS.names())
    assert _help.PREDICTORS == tuple(predictor_names())
    assert _help.DEFAULT_TABLE_SPACE == DEFAULT_TABLE_SPACE
    from nas_cli.training.finetune import DEFAULT_DISTILL_WEIGHT, DEFAULT_LR_FRACTION
    assert _help.FINETUNE_DEFAULTS == {"distill_weight": DEFAULT_DISTILL_WEIGHT, "lr_fraction": DEFAULT_LR_FRACTION}
    search = SearchConfig()
    assert _help.SEARCH_DEFAULTS == {k: getattr(search, k) for k in _help.SEARCH_DEFAULTS}


def _help_records(path):
    cmd = _command(path)
    ctx = cmd.make_context("nas", [], resilient_parsing=True)
    return {p.name: (p, p.get_help_record(ctx)) for p in cmd.params if p.get_help_record(ctx)}


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_option_is_described_and_shows_its_default(path):
    for name, (param, (opts, text)) in _help_records(path).items():
        help_text = (param.help or "").strip()
        assert help_text and not help_text.startswith("["), f"{' '.join(path)} {opts} has no description"
        assert "[default:" not in help_text, f"{opts}: a default written into the help text (use show_default)"
        flag = getattr(param, "is_flag", False)
        if param.default not in (None, []) and not flag:
            assert "[default:" in text, f"{' '.join(path)} {opts} hides its default {param.default!r}"


def test_train_supernet_help_shows_the_config_defaults():
    from nas_cli.config import TrainConfig

    records = _help_records(("train-supernet",))
    for field, value in vars(TrainConfig()).items():
        if field in records and value is not None and field != "augment":  # augment: the dataset's
            assert f"[default: {value}]" in records[field][1][1], field
    # every option that has a default (a value, or a described one) shows it in the printed help
    result = runner.invoke(app, ["train-supernet", "--help"], env={"COLUMNS": "200"})
    shown = [line for line in result.output.splitlines() if "[default:" in line]
    with_default = [p for p, _ in records.values() if p.default not in (None, []) or isinstance(p.show_default, str)]
    with_default = [p for p in with_default if not getattr(p, "is_flag", False)]
    assert len(shown) == len(with_default) >= 20


@pytest.mark.parametrize("path", [(), *COMMANDS], ids=lambda p: " ".join(p) or "nas")
def test_help_fits_80_columns_with_whole_flag_names(path):
    result = _nas(*path, "--help", columns=80)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    for param in (_command(path).params if path else []):
        for opt in [*param.opts, *getattr(param, "secondary_opts", [])]:
            if opt.startswith("--"):
                assert re.search(rf"(^|\s){re.escape(opt)}(\s|$)", result.stdout), f"{opt} is cut"
    assert "…" not in result.stdout


def test_version():
    from importlib.metadata import version

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"nas {version('nas')}"


@pytest.mark.parametrize("args, needles", [
    (["train-supernet", "--out", "r", "--epochs", "nan"], ["--epochs", "'nan'"]),
    (["train-supernet", "--out", "r", "--batch-size=abc"], ["--batch-size", "'abc'"]),
    (["train-supernet", "--out", "r", "--epoch", "3"], ["--epoch", "--epochs"]),
    (["train-supernet"], ["--out"]),
    (["search", "r", "--latency-budget", "1", "--population", "x"], ["--population", "'x'"]),
    (["latency", "profile", "--space", "resnet", "--out", "t.json", "--rounds", "1.5"], ["--rounds", "'1.5'"]),
    (["frobnicate"], ["frobnicate"]),
])
def test_usage_errors_are_one_line(args, needles, tmp_path):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0]
    assert not (tmp_path / "r").exists()


def test_no_command_prints_the_help():
    result = runner.invoke(app, [])
    assert "Commands:" in result.output and "train-supernet" in result.output


def test_a_shown_default_does_not_override_the_config_file(tmp_path):
    """The help shows TrainConfig's defaults, but only flags given on the command line override --config."""
    cfg = tmp_path / "cfg.json"
    cfg.write_text('{"epochs": 0}')
    result = runner.invoke(app, ["train-supernet", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--epochs 0" in result.output, result.output  # the file's, not 30
    result = runner.invoke(app, ["train-supernet", "--config", str(cfg), "--epochs", "1", "--batch-size", "1",
                                 "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "--batch-size 1" in result.output, result.output  # the flag's epochs
