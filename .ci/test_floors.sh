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
# the project with its test extra, every requirement at its pinned floor (a wheel built from this
# checkout: `nas --version` reads its metadata); the tests import the checkout itself (PYTHONPATH)
"$venv/bin/pip" install --quiet -c "$constraints" '.[test]'
"$venv/bin/pip" freeze | grep -iE '^(jax|jaxlib|flax|optax|typer|pymoo|orbax-checkpoint|numpy|scikit-learn|matplotlib|flatbuffers|grain|pillow|tensorboardx|jax2onnx|onnx|onnxruntime)==' 
PYTHONPATH=$PWD "$venv/bin/python" -m pytest -q -p no:cacheprovider -x \
  tests/nas_cli/test_export_load.py tests/predictors/test_latency_protocol.py \
  "tests/nas_cli/test_onnx.py::test_tiny_space_exports_to_onnx_with_parity_and_reloads" tests/nas_cli/test_cli_help.py
