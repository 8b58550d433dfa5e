"""Declared dependency floors that are tested (issue 34): pyproject's lower bounds and the pinned
floors of .ci/floors.txt are the same versions, and (slow, needs the package index) the project
installed at those floors passes a smoke subset of the tests (.ci/test_floors.sh)."""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
FLOORS = ROOT / ".ci" / "floors.txt"
#: tools of the test run, not of the product: their floors are not pinned
TOOLS = {"pytest", "pytest-xdist", "ruff"}


def _declared() -> dict[str, Version]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + project["optional-dependencies"]["onnx"] + project["optional-dependencies"]["test"]
    out = {}
    for line in reqs:
        req = Requirement(line)
        lows = [Version(s.version) for s in req.specifier if s.operator == ">="]
        name = canonicalize_name(req.name)
        if name not in TOOLS:
            assert lows, f"pyproject declares {line!r} without a lower bound"
            out[name] = max(lows + [out.get(name, Version("0"))])
    return out


def _pinned() -> dict[str, Version]:
    out = {}
    for line in FLOORS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)==(\S+)", line).groups()
            out[canonicalize_name(name)] = Version(version)
    return out


def test_the_pinned_floors_are_pyprojects_lower_bounds():
    declared, pinned = _declared(), _pinned()
    pinned.pop("jaxlib", None)  # jax's own pin (jax X needs jaxlib X), not declared by the project
    assert declared == pinned


@pytest.mark.slow  # installs ~1 GB of packages into a throwaway venv (minutes; needs the package index)
def test_the_project_works_at_its_declared_floors(tmp_path: Path):
    proc = subprocess.run([str(ROOT / ".ci" / "test_floors.sh")], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "FLOORS_VENV": str(tmp_path / "venv")}, timeout=3600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert " passed" in proc.stdout
