#!/usr/bin/env bash
# Installs the declared dependency floors (.ci/floors.txt: pyproject's lower bounds, pinned) into a
# throwaway venv and runs a smoke subset of the tests there: training, search, export, the
# StableHLO and ONNX loaders, onnxruntime. Needs network access to the package index; not part of
# the default test run (tests/test_floors.py runs it under -m slow).
#
#   .ci/test_floors.sh [CONSTRAINTS]     # default .ci/floors.txt; FLOORS_VENV=DIR keeps the venv there
set -euo pipefail
cd "$(dirname "$0")/.."
constraints=${1:-.ci/floors.txt}
python=${PYTHON:-python3}
venv=${FLOORS_VENV:-$(mktemp -d)/venv}
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
# the project's requirements (and the test extra) at the pinned floors; the project itself is run
# from this checkout (PYTHONPATH), so nothing is built into the checkout
"$venv/bin/pip" install --quiet -c "$constraints" \
  $("$venv/bin/python" -c 'import tomllib; d = tomllib.load(open("pyproject.toml", "rb"))["project"]
print(" ".join(repr(r) for r in d["dependencies"] + d["optional-dependencies"]["test"]))' | tr -d "'")
"$venv/bin/pip" freeze | grep -iE '^(jax|jaxlib|flax|optax|typer|pymoo|orbax-checkpoint|numpy|scikit-learn|matplotlib|flatbuffers|grain|pillow|tensorboardx|jax2onnx|onnx|onnxruntime)==' 
PYTHONPATH=$PWD "$venv/bin/python" -m pytest -q -p no:cacheprovider -x \
  tests/test_export_load.py tests/test_latency_protocol.py \
  "tests/test_onnx.py::test_tiny_space_exports_to_onnx_with_parity_and_reloads" tests/test_cli_help.py
