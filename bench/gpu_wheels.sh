#!/usr/bin/env bash
# Downloads, on a machine with a package index, the wheels that bench/gpu.sh needs on the GPU machine
# (no package index there; Python 3.12 on manylinux x86-64 with jax/jaxlib 0.11 + CUDA plugin, flax,
# optax, orbax, typer, onnx, onnxruntime, torch and the rest of GPU_HAS below already installed).
#
#   bash bench/gpu_wheels.sh [DIR]          # DIR defaults to .whl (ignored by git)
#   bash bench/gpu_wheels.sh --onnx [DIR]   # also the `onnx` extra (jax2onnx), for `nas export --format onnx`
#
# The set: pyproject.toml's dependencies (and the extras asked for), closed over their own requirements
# as the versions installed in this venv declare them (through the packages the GPU machine has as
# well), minus what the GPU machine has (GPU_HAS). Each is
# pinned to the version installed and tested here, and downloaded without dependencies, so the folder
# holds exactly that set. Prints the folder's size: the device tool carries at most 64 MiB.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
EXTRAS=""
DIR=""
for arg in "$@"; do
  case "$arg" in
    --onnx) EXTRAS="onnx" ;;
    -h|--help) sed -n 2,12p "${BASH_SOURCE[0]}"; exit 0 ;;
    -*) echo "gpu_wheels.sh: unknown option $arg (allowed: --onnx, --help)" >&2; exit 2 ;;
    *) [[ -z "$DIR" ]] || { echo "gpu_wheels.sh: one folder only (got $DIR and $arg)" >&2; exit 2; }; DIR="$arg" ;;
  esac
done
DIR="${DIR:-$ROOT/.whl}"
mkdir -p "$DIR"

# Python packages of the GPU machines' image ('cuda'), as /work/.library/device/KINDS.md lists them.
GPU_HAS="absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build
certifi charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core
cuda-pathfinder cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock
flatbuffers flax fonttools formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx
huggingface-hub humanize hypothesis idna imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin
jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning lightning-utilities linear-operator lineax
llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack
multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba numba-cuda numpy numpyro
nvidia-ml-py onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum opt-einsum-fx
optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn
scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers
treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt
xarray xxhash yarl zipp"

PINS="$(GPU_HAS="$GPU_HAS" EXTRAS="$EXTRAS" "$PY" - "$ROOT/pyproject.toml" <<'PY'
import os
import re
import sys
import tomllib
from importlib import metadata

from packaging.requirements import Requirement

norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
have = {norm(n) for n in os.environ["GPU_HAS"].split()}
# the GPU machine: CPython 3.12 on Linux x86-64
env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
       "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
       "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
todo = list(project["dependencies"])
for extra in filter(None, os.environ["EXTRAS"].split(",")):
    todo += project["optional-dependencies"][extra]
top = {norm(Requirement(r).name) for r in todo}
pins, seen = {}, set()
while todo:
    req = Requirement(todo.pop())
    name = norm(req.name)
    if name in seen or (req.marker and not req.marker.evaluate(env)):
        continue
    seen.add(name)
    try:
        dist = metadata.distribution(req.name)
    except metadata.PackageNotFoundError:
        if name in top and name not in have:
            sys.exit(f"gpu_wheels.sh: {req.name} is not installed in {sys.prefix}; install the project there first")
        continue  # needed only by a version other than the one installed here
    if name not in have:
        pins[name] = dist.version
    # walked through the GPU machine's packages too: a newer typer, say, needs pydantic, which it lacks
    todo += [r for r in (dist.requires or []) if "extra ==" not in r and "extra==" not in r]
print("\n".join(f"{n}=={v}" for n, v in sorted(pins.items())))
PY
)"
echo "wheels for the GPU machine (pinned to this venv's versions):" $PINS >&2
# one wheel per package; the platform tags pip accepts only when named exactly
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_28_x86_64 --platform manylinux1_x86_64 -d "$DIR" $PINS
ls -1 "$DIR"
echo "$(du -sh "$DIR" | cut -f1) in $DIR ($(find "$DIR" -maxdepth 1 -type f -name '*.whl' | wc -l) wheels)"
