#!/usr/bin/env bash
# One-shot GPU check (issue 29): on a machine with one NVIDIA GPU and this repository, in under 8 minutes,
#   1. the kernel bench, Pallas against XLA, forward and backward, active fractions 1/4..1, for the
#      elastic matmul, the elastic MLP and the elastic depthwise conv (bench/kernel_speed.py --op ...),
#   2. the weight-sharing bench at a GPU-sized setting (bench/weight_sharing.py),
#   3. short supernet training (`nas train-supernet`, 2 epochs: the first compiles, the second is the
#      steady-state speed) on a generated 32 px data set, with --kernels pallas and with --kernels xla.
# Every step has a time limit (capped by what is left of the whole budget); a step that overruns is
# stopped, recorded as such, and the rest still runs. Each step writes OUT/<step>.json; OUT/summary.json
# gathers them, and a summary is printed at the end. At most 8 files land in OUT.
#
#   bash bench/gpu.sh [--wheels DIR] [--budget SECONDS] OUT
#   bash bench/gpu.sh --dry-run OUT     # the same steps at tiny sizes on CPU (Pallas in interpret mode)
#
# --wheels DIR: wheels made by bench/gpu_wheels.sh, installed offline (pip --no-index --no-deps) into
# OUT-independent scratch space that is put on PYTHONPATH, with this repository, before the system
# site-packages the GPU machine's python3 already has (jax, flax, optax, ...). PYTHON picks the
# interpreter (default: this repository's .venv if it works here, else python3).
set -euo pipefail

usage() { sed -n 2,18p "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY=0
WHEELS=""
BUDGET=""
OUT=""
while (($#)); do
  case "$1" in
    --dry-run) DRY=1 ;;
    --wheels) [[ $# -ge 2 ]] || { echo "gpu.sh: --wheels needs a folder" >&2; exit 2; }; WHEELS="$2"; shift ;;
    --budget) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || { echo "gpu.sh: --budget needs whole seconds" >&2; exit 2; }
              BUDGET="$2"; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "gpu.sh: unknown option $1 (allowed: --dry-run, --wheels DIR, --budget SECONDS, --help)" >&2; exit 2 ;;
    *) [[ -z "$OUT" ]] || { echo "gpu.sh: one output folder only (got $OUT and $1)" >&2; exit 2; }; OUT="$1" ;;
  esac
  shift
done
[[ -n "$OUT" ]] || { echo "gpu.sh: missing the output folder (bash bench/gpu.sh [--dry-run] OUT)" >&2; exit 2; }
if [[ -n "$WHEELS" && ! -d "$WHEELS" ]]; then
  echo "gpu.sh: --wheels $WHEELS is not a folder (make one with bash bench/gpu_wheels.sh DIR)" >&2; exit 2
fi
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
# the whole run stays under 8 minutes: 450 s for the install and the steps (their limits add up to 450), the
# rest for the summary
# (the dry run's limits only guard against a hang: its steps take about 3 CPU minutes in all, and a
# shared 2-core machine can stretch that to 15 minutes of wall time)
BUDGET="${BUDGET:-$(( DRY ? 2400 : 450 ))}"
START=$SECONDS
WORK="$(mktemp -d "${TMPDIR:-/tmp}/nas-gpu-check.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if "$ROOT/.venv/bin/python" -c "" 2>/dev/null; then PY="$ROOT/.venv/bin/python"; else PY=python3; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if ((DRY)); then
  export JAX_PLATFORMS=cpu
  # the dry run checks that the steps run, not their speed: a persistent XLA cache the caller set stays
  export NAS_CACHE_DIR="${NAS_CACHE_DIR:-$WORK/nas-cache}"
  export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-$WORK/jax-cache}"
else
  # the figures are first-compile figures: no persistent compilation cache from an earlier run
  export NAS_CACHE_DIR="$WORK/nas-cache" JAX_COMPILATION_CACHE_DIR="$WORK/jax-cache"
fi

# --- the recorder: one JSON file per step ----------------------------------------------------------
cat >"$WORK/record.py" <<'PY'
"""record.py NAME STATUS RC SECONDS LIMIT STDOUT STDERR OUTFILE RUN_DIR -- COMMAND...: writes one step's JSON
and prints the status it recorded."""
import json
import sys
from pathlib import Path

name, status, rc, seconds, limit, stdout, stderr, outfile, run_dir = sys.argv[1:10]
command = sys.argv[11:]
out = Path(stdout).read_text(errors="replace") if Path(stdout).is_file() else ""
err = Path(stderr).read_text(errors="replace") if Path(stderr).is_file() else ""
rec = {"step": name, "status": status, "exit_code": int(rc), "seconds": float(seconds), "limit_s": int(limit),
       "command": " ".join(command), "result": None}
if status == "ok":
    try:
        if run_dir:  # a training run: its per-epoch records and final figures
            run = Path(run_dir)
            rec["result"] = {"epochs": [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()
                                        if line.strip()],
                             "final": json.loads((run / "final.json").read_text())}
        else:  # a bench script: its JSON is the last line it printed
            lines = [line for line in out.strip().splitlines() if line.strip()]
            rec["result"] = json.loads(lines[-1])
    except (OSError, IndexError, ValueError) as e:
        rec["status"], rec["error"] = "failed", f"exit code 0 but no figures: {type(e).__name__}: {e}"
if rec["status"] != "ok":
    # what went wrong, in the program's own words (the last lines of its error output)
    rec["stderr_tail"] = err[-4000:]
    lines = [line for line in err.strip().splitlines() if line.strip()]
    rec.setdefault("error", lines[-1] if lines else f"exit code {rc}")
Path(outfile).write_text(json.dumps(rec, indent=1) + "\n")
print(rec["status"])
PY

FAILED=0
# run_step NAME LIMIT_S RUN_DIR -- COMMAND...: runs COMMAND under a time limit (capped by what is left of the
# budget); a step over its limit is stopped (TERM, then KILL 10 s later) and recorded as "timeout".
run_step() {
  local name="$1" limit="$2" run_dir="$3"
  shift 4
  local left=$(( BUDGET - (SECONDS - START) ))
  (( limit > left )) && limit=$left
  local t0=$SECONDS rc=0 status
  if (( limit < 2 )); then
    status="skipped"; rc=0; limit=0
    echo "budget spent" >"$WORK/$name.err"
  else
    echo "[gpu.sh] $name (limit ${limit} s)" >&2
    timeout --signal=TERM --kill-after=10 "$limit" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || rc=$?
    if (( rc == 124 || rc == 137 )); then status="timeout"
    elif (( rc == 0 )); then status="ok"
    elif ((DRY)) && (( rc == 2 )) && grep -q "needs a GPU or TPU" "$WORK/$name.err"; then
      status="refused"  # the dry run's CPU: `--kernels pallas` must be refused, never fall back to XLA
    else status="failed"
    fi
  fi
  # the recorded status: "ok" becomes "failed" where the step printed no figures
  status="$("$PY" "$WORK/record.py" "$name" "$status" "$rc" "$(( SECONDS - t0 ))" "$limit" "$WORK/$name.out" \
    "$WORK/$name.err" "$OUT/$name.json" "$run_dir" -- "$@")" || status="failed (not recorded)"
  [[ "$status" == ok || "$status" == refused ]] || FAILED=$((FAILED + 1))
  echo "[gpu.sh] $name: $status after $(( SECONDS - t0 )) s" >&2
}

# --- 0. offline install of what the GPU machine lacks, and the environment ---------------------------
INSTALL="not asked (no --wheels)"
if [[ -n "$WHEELS" ]]; then
  SITE="$WORK/site"
  shopt -s nullglob
  whls=("$WHEELS"/*.whl)
  shopt -u nullglob
  if ((${#whls[@]} == 0)); then
    echo "gpu.sh: --wheels $WHEELS holds no .whl files" >&2; exit 2
  fi
  # --target + PYTHONPATH rather than a venv: the GPU machine's python3 is itself a venv, and a venv made
  # from it with --system-site-packages would not see that venv's packages (jax, torch, ...)
  t0=$SECONDS
  if timeout 120 "$PY" -m pip install -q --no-index --find-links "$WHEELS" --no-deps --no-compile \
       --disable-pip-version-check --target "$SITE" "${whls[@]}" >"$WORK/install.log" 2>&1; then
    INSTALL="ok: ${#whls[@]} wheels in $(( SECONDS - t0 )) s"
  else
    INSTALL="failed: $(tail -3 "$WORK/install.log" | tr '\n' ' ')"
    FAILED=$((FAILED + 1))
  fi
  # after the repository, before the system's packages: the wheels only add what is missing there
  export PYTHONPATH="$ROOT:$SITE${PYTHONPATH#"$ROOT"}"
fi
cat >"$WORK/env.py" <<'PY'
import json
import os
import platform
import sys

import jax

out = {"python": platform.python_version(), "jax": jax.__version__, "backend": jax.default_backend(),
       "devices": [str(d) for d in jax.devices()], "device_kind": jax.devices()[0].device_kind,
       "cpu_count": os.cpu_count(), "install": os.environ["NAS_GPU_INSTALL"]}
try:
    import jaxlib
    out["jaxlib"] = jaxlib.__version__
    import flax
    import optax
    out["flax"], out["optax"] = flax.__version__, optax.__version__
    import nas_cli.main  # noqa: F401 -- the CLI and everything it imports load here
    out["nas_imports"] = "ok"
except Exception as e:  # noqa: BLE001 -- reported, the steps below say the rest
    out["nas_imports"] = f"{type(e).__name__}: {e}"
print(json.dumps(out))
sys.exit(0 if out["nas_imports"] == "ok" else 1)
PY
run_step env 45 "" -- env NAS_GPU_INSTALL="$INSTALL" "$PY" "$WORK/env.py"

# --- 1. the kernel bench: Pallas vs XLA, each op ------------------------------------------------------
if ((DRY)); then
  KERNEL_ARGS=(--implementation pallas --interpret --repeats 1)
  declare -A OP_ARGS=([matmul]="--m 4 --k 16 --n 16" [mlp]="--m 4 --k 16 --n 16" [dwconv]="--m 2 --side 6 --n 16 --kmax 3")
  KERNEL_LIMIT=300
else
  KERNEL_ARGS=(--implementation pallas --repeats 20)
  # the supernet's shapes at batch 256, 32 px: rows = images x pixels of a late stage
  declare -A OP_ARGS=([matmul]="--m 16384 --k 512 --n 1024" [mlp]="--m 16384 --k 256 --n 1024"
                      [dwconv]="--m 256 --side 16 --n 512 --kmax 7")
  KERNEL_LIMIT=55
fi
for op in matmul mlp dwconv; do
  # shellcheck disable=SC2086
  run_step "kernel_$op" "$KERNEL_LIMIT" "" -- "$PY" "$ROOT/bench/kernel_speed.py" --op "$op" ${OP_ARGS[$op]} \
    "${KERNEL_ARGS[@]}"
done

# --- 2. the weight-sharing bench ----------------------------------------------------------------------
if ((DRY)); then
  WS_ARGS=(--space mobilenetv3-tiny --resolution 8 --batch 4 --subnets 2 --repeats 1)
  WS_LIMIT=600
else
  WS_ARGS=(--space mobilenetv3 --width-mult 1.0 --resolution 32 --batch 256 --subnets 20 --repeats 10)
  WS_LIMIT=110
fi
run_step weight_sharing "$WS_LIMIT" "" -- "$PY" "$ROOT/bench/weight_sharing.py" "${WS_ARGS[@]}"

# --- 3. short supernet training, --kernels pallas and xla ----------------------------------------------
# A generated data set (seeded uniform noise, 10 classes): the machine reaches no download, and the
# figures are step speeds, not accuracies.
declare -A EPOCH_LIMITS
if ((DRY)); then
  # no random subnets besides the largest and smallest: fewer block variants to compile on CPU
  NPZ=(96 8 1) TRAIN=(--space mobilenetv3-tiny --batch-size 16 --calib-images 16 --num-random 0)
  EPOCH_LIMITS=([pallas]=300 [xla]=600)
else
  NPZ=(4096 32 3) TRAIN=(--space mobilenetv3 --width-mult 1.0 --batch-size 256 --calib-images 512) EPOCH_LIMITS=([pallas]=60 [xla]=70)
fi
# one input resolution (the image side), as the benches use: the full spaces' default would add 24 and 28 px,
# each a compilation more
echo "{\"resolutions\": [${NPZ[1]}]}" >"$WORK/train-config.json"
timeout 60 "$PY" - "$WORK/data.npz" "${NPZ[@]}" <<'PY'
import sys

import numpy as np

path, n, side, channels = sys.argv[1], *map(int, sys.argv[2:])
rng = np.random.default_rng(0)
np.savez(path, images=rng.integers(0, 256, (n, side, side, channels), dtype=np.uint8),
         labels=rng.integers(0, 10, n).astype(np.int64))
PY
for kind in pallas xla; do
  run_step "train_$kind" "${EPOCH_LIMITS[$kind]}" "$WORK/run-$kind" -- "$PY" -m nas_cli train-supernet \
    --out "$WORK/run-$kind" --dataset npz --data-dir "$WORK/data.npz" --augment none --epochs 2 \
    --kernels "$kind" --seed 0 --config "$WORK/train-config.json" "${TRAIN[@]}"
done

# --- summary ---------------------------------------------------------------------------------------------
"$PY" - "$OUT" "$DRY" "$BUDGET" "$(( SECONDS - START ))" <<'PY'
import json
import sys
from pathlib import Path

out, dry, budget, elapsed = Path(sys.argv[1]), sys.argv[2] == "1", int(sys.argv[3]), int(sys.argv[4])
steps = {}
for path in sorted(out.glob("*.json")):
    if path.name != "summary.json":
        rec = json.loads(path.read_text())
        steps[rec["step"]] = rec
lines, figures = [], {}
for name, rec in steps.items():
    res, line = rec["result"], f"{name:16s} {rec['status']:8s} {rec['seconds']:6.0f} s"
    if rec["status"] != "ok":
        line += f"  {rec.get('error', '')[:150]}"
    elif name == "env":
        line += f"  jax {res['jax']} on {res['device_kind']} ({res['backend']}); install: {res['install']}"
    elif name.startswith("kernel_"):
        rows = res["results"]
        f = {r["fraction"]: (r["kernel_over_masked_fwd"], r["kernel_over_masked_bwd"]) for r in rows}
        figures[name] = {"pallas_over_xla_fwd": {k: v[0] for k, v in f.items()},
                         "pallas_over_xla_bwd": {k: v[1] for k, v in f.items()},
                         "recompiles": sum(res["recompiles_after_first_fraction"].values())}
        line += "  pallas/xla fwd " + " ".join(f"{k:g}:{v[0]:.2f}" for k, v in f.items())
        line += "  bwd " + " ".join(f"{k:g}:{v[1]:.2f}" for k, v in f.items())
    elif name == "weight_sharing":
        figures[name] = {k: res[k] for k in ("compile_s", "warmup_compile_s", "recompiles", "step_ms_supernet",
                                             "step_ms_static") if k in res}
        line += (f"  supernet/static step smallest {res['ratio_smallest']:.2f} largest {res['ratio_largest']:.2f};"
                 f" warm-up compile {res['warmup_compile_s']} s; recompiles {res['recompiles']}")
    elif name.startswith("train_"):
        ep = res["epochs"]
        figures[name] = {"epoch_s": [e["seconds"] for e in ep], "images_per_s": [e["images_per_s"] for e in ep],
                         "compiled_variants": ep[-1]["compiled_variants"], "loss": [e["loss"] for e in ep]}
        line += "  epochs " + ", ".join(f"{e['seconds']} s ({e['images_per_s']} img/s)" for e in ep)
    lines.append(line)
summary = {"dry_run": dry, "budget_s": budget, "elapsed_s": elapsed,
           "status": {k: r["status"] for k, r in steps.items()}, "figures": figures}
if {"train_pallas", "train_xla"} <= figures.keys():
    p, x = figures["train_pallas"]["images_per_s"][-1], figures["train_xla"]["images_per_s"][-1]
    summary["pallas_over_xla_training_speed"] = round(p / x, 3) if x else None
    lines.append(f"training speed, last epoch: pallas/xla = {summary['pallas_over_xla_training_speed']}")
(out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
print(f"gpu.sh{' --dry-run' if dry else ''}: {elapsed} s of a {budget} s budget; JSON in {out}")
print("\n".join(lines))
PY
exit $(( FAILED > 0 ? 1 : 0 ))
