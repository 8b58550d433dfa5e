"""Every numeric option of every command, given 0, negative, huge, NaN/inf and non-numbers: a
one-line error with exit 2, or a normal run; never an internal error (issue 31).

Each command gets arguments that make an accepted value stop quickly at a later, cheap check (a
run folder that does not exist, kernels this CPU cannot run), so that no case trains or times
anything; the value checks themselves are in the configs and library functions (tested below).
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nas_cli.main import app

VALUES = ["0", "-1", "99999999999999999999", "1e20", "nan", "inf", "-inf", "abc"]


def _bases(tmp: Path) -> dict[str, list[str]]:
    missing = str(tmp / "no-run")
    return {
        "train-supernet": ["--out", str(tmp / "t"), "--kernels", "pallas"],
        "search": [missing, "--latency-budget", "1ms"],
        "export subnet": [missing, "--out", str(tmp / "e"), "--rank", "1"],
        "finetune": [missing, "--out", str(tmp / "f"), "--arch", "A", "--epochs", "1"],
        "predictor fit": [str(tmp / "absent.csv"), "--target", "accuracy", "--out", str(tmp / "m.json")],
        "predictor sample": [missing, "--n", "4", "--out", str(tmp / "s.csv")],
        "latency profile": ["--space", "no-such-space", "--out", str(tmp / "l.json")],
        "latency validate": [str(tmp / "absent.json"), "--space", "no-such-space"],
        "latency fit": ["--space", "no-such-space", "--samples", "4", "--out", str(tmp / "f.json")],
        "latency probes": ["--space", "no-such-space", "--out", str(tmp / "p")],
        "import ofa": [str(tmp / "absent.pth"), "--net", "ofa_mbv3_d234_e346_k357_w1.0", "--out", str(tmp / "o")],
    }


def numeric_options() -> list[tuple[str, str]]:
    """(command path, option) of every int/float option of every command."""
    out = []

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                walk(sub, [*path, name])
            return
        sig = inspect.signature(cmd.callback)
        for p in cmd.params:
            kind = str(sig.parameters[p.name].annotation) if p.name in sig.parameters else ""
            if kind in ("int", "float", "Optional[int]", "Optional[float]") and getattr(p, "opts", None):
                out.append((" ".join(path), p.opts[0]))

    walk(typer.main.get_command(app), [])
    return out


def test_every_numeric_option_is_found():
    found = numeric_options()
    assert ("train-supernet", "--epochs") in found and ("search", "--population") in found
    assert len(found) > 30


@pytest.mark.parametrize("command,option", numeric_options())
def test_bad_numbers_are_one_line_never_an_internal_error(command: str, option: str, tmp_path: Path):
    runner = CliRunner()
    base = _bases(tmp_path)[command]
    for value in VALUES:
        args = [*command.split(), *[a for a in base], option, value]
        if option in base:  # the option is part of the base (a required one): replace its value
            i = base.index(option)
            args = [*command.split(), *base[:i], option, value, *base[i + 2:]]
        result = runner.invoke(app, args)
        shown = f"{command} {option} {value}: exit {result.exit_code}\n{result.output}"
        assert "internal error" not in result.output and "Traceback" not in result.output, shown
        assert result.exit_code in (0, 2), shown
        if "Usage:" in result.output:
            continue  # Typer's own parse error (a non-number): its one-line form is the option layer's
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.exit_code == 0 or len(errors) == 1, shown


# --- the configs are the validators -----------------------------------------------------------


# the configs name the field (the CLI names its flag: test_config_errors_name_the_field_and_the_cli_its_flag)
@pytest.mark.parametrize("field,value,needle", [
    ("seed", -1, "seed -1"), ("seed", 2**32, "0..4294967295"), ("epochs", 10**20, "epochs"),
    ("limit_train", -1, "limit_train -1"), ("limit_train", 0, "batch_size"), ("warmup_epochs", -5, "warmup"),
    ("resolutions", (9999,), "resolutions 9999"), ("width_mult", math.inf, "width_mult"),
    ("width_mult", math.nan, "width_mult"), ("batch_size", 10**20, "batch_size"),
    ("num_random", 10**9, "num_random"), ("calib_images", 10**12, "calib_images"),
])
def test_train_config_bounds_every_number(field, value, needle):
    from nas_cli.config import TrainConfig
    from nas_cli.errors import UserError

    with pytest.raises(UserError, match=needle.replace(".", r"\.").replace("-", r"\-")):
        TrainConfig(**{field: value})


@pytest.mark.parametrize("field,value", [("seed", -1), ("seed", 2**32), ("population", 10**20),
                                          ("generations", 10**20), ("pool", 10**20), ("evaluations", 10**20),
                                          ("batch", 10**20), ("initial", 10**20), ("explore", 1e300)])
def test_search_config_bounds_every_number(field, value):
    from nas_cli.errors import UserError
    from nas_cli.search.config import SearchConfig

    with pytest.raises(UserError, match=f"^{field} "):
        SearchConfig(**{field: value})


def test_a_bad_config_value_is_refused_before_any_file_is_written(tmp_path: Path):
    cfg = tmp_path / "c.json"
    cfg.write_text('{"warmup_epochs": -5}')
    result = CliRunner().invoke(app, ["train-supernet", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "warmup_epochs -5" in result.output, result.output
    assert not (tmp_path / "r" / "config.json").exists()


def test_config_errors_name_the_field_and_the_cli_its_flag(tmp_path: Path):
    """The configs are the only validators: a library caller reads the field, a CLI user the flag
    (nas_cli.commands.flags.FLAGS), and a field with no flag keeps its name."""
    from nas_cli.commands.flags import FLAGS
    from nas_cli.config import TrainConfig
    from nas_cli.errors import FieldError, one_line
    from nas_cli.search.config import SearchConfig

    with pytest.raises(FieldError) as e:
        TrainConfig(limit_train=3, batch_size=8)
    assert str(e.value).startswith("limit_train 3 is out of range") and "at least batch_size 8" in str(e.value)
    assert one_line(e.value, names=FLAGS)[0].startswith("error: --limit-train 3 is out of range")
    assert "at least --batch-size 8" in one_line(e.value, names=FLAGS)[0]
    with pytest.raises(FieldError, match=r"^latency_budget 'soon' is not understood"):
        SearchConfig(budgets={"latency": "soon"})
    assert SearchConfig(budgets={"latency": "60%", "flops": "3M"}).budgets[1].value == 3e6

    result = CliRunner().invoke(app, ["train-supernet", "--limit-train", "3", "--batch-size", "8",
                                      "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "error: --limit-train 3 is out of range" in result.output, result.output
    assert "at least --batch-size 8" in result.output


def test_every_flag_of_the_field_table_is_an_option_of_the_cli():
    import typer.main

    from nas_cli.commands.flags import FLAGS

    def options(command) -> set[str]:
        names = {o for p in getattr(command, "params", ()) for o in getattr(p, "opts", ())}
        for sub in getattr(command, "commands", {}).values():
            names |= options(sub)
        return names

    known = options(typer.main.get_command(app))
    assert not set(FLAGS.values()) - known, sorted(set(FLAGS.values()) - known)
