"""The files a search leaves: pareto.json (read by ``nas export subnet --rank K``), pareto.csv, pareto.png."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from predictors.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from nas_cli.evaluation import ALONE_REPEATS, SEARCH_REPEATS, SEARCH_ROUNDS
from nas_cli.search.tracking import Normaliser, feasible_front, feasible_mask

CSV_COLUMNS = ("rank", "arch", "accuracy", "latency_ms", "flops", "params")
_FIELDS = {"accuracy": "accuracy", "latency": "latency_ms", "flops": "flops", "params": "params"}


def front_rows(keys: Sequence[str], records: Sequence[Mapping[str, float]], norm: Normaliser,
               bounds: Mapping[str, float]) -> list[dict]:
    """The measured feasible front, most accurate first, ranked from 1 (ties broken by latency, then name)."""
    idx, _ = feasible_front(keys, records, norm, bounds)
    rows = []
    for i in idx:
        r = records[i]
        row = {"rank": 0, "arch": keys[i]}
        for metric, field in _FIELDS.items():
            v = r.get(metric)
            row[field] = (int(v) if metric in ("flops", "params") and float(v).is_integer() else float(v)) \
                if v is not None else None
        rows.append(row)
    rows.sort(key=lambda r: (-(r["accuracy"] if r["accuracy"] is not None else -np.inf),
                             r["latency_ms"] if r["latency_ms"] is not None else np.inf, r["arch"]))
    for rank, row in enumerate(rows, start=1):
        row["rank"] = rank
    return rows


def write_outputs(out_dir: Path, space, config, bounds: Mapping[str, float], norm: Normaliser,
                  keys: Sequence[str], records: Sequence[Mapping[str, float]],
                  remeasure: Callable[[list[str]], list[dict]] | None = None,
                  weights: dict | None = None, latency_label: str | None = None,
                  latency_measurement: dict | None = None) -> list[dict]:
    """Writes pareto.json, pareto.csv and pareto.png (atomically) and returns the front rows.

    ``remeasure(arch strings)`` adds fields to the front rows (a modelled latency's measured value);
    ``weights`` (what measured the front) is recorded in pareto.json; ``latency_label`` (what the
    latencies are: :func:`latency_axis`) in pareto.json and on pareto.png's x-axis;
    ``latency_measurement`` (the same as a record: :func:`nas_cli.evaluation.latency_record`) in pareto.json."""
    front = front_rows(keys, records, norm, bounds)
    if remeasure is not None and front:
        for row, extra in zip(front, remeasure([r["arch"] for r in front])):
            row.update(extra)
    atomic_write_json(out_dir / "pareto.json", {
        "space": space.name,
        "weights": weights,
        "objectives": list(config.objectives),
        "budgets": {b.metric: {"given": b.text, "value": bounds[b.metric]} for b in config.budgets},
        "reference_point": norm.reference_point,
        "normalisation": norm.describe(),
        "n_evaluations": len(keys),
        "latency_protocol": latency_label,
        "latency_measurement": latency_measurement,
        "front": front,
    })
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    columns = list(CSV_COLUMNS) + sorted({k for row in front for k in row} - set(CSV_COLUMNS))
    w.writerow(columns)
    for row in front:
        w.writerow(["" if row.get(c) is None else row[c] for c in columns])
    atomic_write_text(out_dir / "pareto.csv", buf.getvalue())
    atomic_write_bytes(out_dir / "pareto.png", _plot(keys, records, front, bounds, latency_label))
    return front


def latency_axis(evaluator) -> str | None:
    """What a search's latencies are, in words: a latency model's estimate (which file, at what batch,
    in which runtime, scaled how) or a measurement here (runtime, batch 1, the timing protocol), or a
    benchmark table's column. None where the evaluator says nothing of it."""
    import json

    calibration = evaluator.latency_calibration or {}
    runtime = evaluator.runtime
    file = calibration.get("file") or evaluator.latency_file
    if file:  # a latency table or learned model (nas search --latency-table)
        path = Path(file)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        rt = data.get("runtime") or {}
        threads = (rt.get("session_options") or {}).get("intra_op_num_threads")
        how = ", ".join(x for x in (
            f"batch {data['batch']}" if "batch" in data else None, rt.get("name", runtime),
            f"{threads} thread{'s' if threads != 1 else ''}" if threads is not None else None) if x)
        scale = calibration.get("scale", 1.0)
        scaled = f", scaled x{scale:.2f} to this device's speed" if scale != 1.0 else ""
        flat = "; overhead-dominated: it cannot rank these subnets" if (
            (data.get("quality") or {}).get("overhead_dominated")) else ""
        return f"estimate of {path.name} ({how}{scaled}{flat})"
    if runtime is not None:

        threads = ", 1 thread" if runtime.startswith("onnxruntime") else ""
        if calibration.get("mode") != "measured":  # --no-latency-calibrate
            return (f"measured here (batch 1, {runtime}{threads}; median of {ALONE_REPEATS} runs "
                    "of each subnet alone, as timed)")
        return (f"measured here (batch 1, {runtime}{threads}; median of {SEARCH_ROUNDS}x{SEARCH_REPEATS} "
                "interleaved runs, at the search's starting device speed)")
    if evaluator.benchmark_table is not None:  # nas search --benchmark-table
        return f"the benchmark table {evaluator.benchmark_table.name}'s latency column, as recorded there"
    return None


def _plot(keys, records, front, bounds, latency_label: str | None = None) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.2), dpi=110)
    if all("accuracy" in r and "latency" in r for r in records) and records:
        lat = np.asarray([r["latency"] for r in records])
        acc = np.asarray([r["accuracy"] for r in records])
        feas = feasible_mask(records, bounds)
        ax.scatter(lat[~feas], acc[~feas], s=8, c="0.8", label="measured, over budget")
        ax.scatter(lat[feas], acc[feas], s=8, c="0.5", label="measured, feasible")
        fl = sorted((r["latency_ms"], r["accuracy"]) for r in front)
        if fl:
            ax.step([p[0] for p in fl], [p[1] for p in fl], where="post", c="C0")
            ax.scatter([p[0] for p in fl], [p[1] for p in fl], s=22, c="C0", zorder=3, label="Pareto front")
            for r in front:  # the rank `nas export subnet --rank K` takes
                ax.annotate(str(r["rank"]), (r["latency_ms"], r["accuracy"]), textcoords="offset points",
                            xytext=(3, 3), fontsize=7, color="C0")
            again = [(r["latency_measured_ms"], r["accuracy"]) for r in front if "latency_measured_ms" in r]
            if again:  # the front timed for real beside the model's estimate
                ax.scatter([p[0] for p in again], [p[1] for p in again], s=22, facecolors="none",
                           edgecolors="C1", zorder=3, label="front, measured here")
        if "latency" in bounds:
            ax.axvline(bounds["latency"], c="C3", ls="--", label=f"budget {bounds['latency']:.3g} ms")
        ax.set_xlabel("latency (ms)" if not latency_label else _wrap(f"latency (ms): {latency_label}"),
                      fontsize=9 if latency_label else None)
        ax.set_ylabel("accuracy")
        ax.legend(fontsize=8, loc="lower right")
    else:
        ax.text(0.5, 0.5, "accuracy/latency not measured", ha="center", va="center")
    ax.set_title(f"{len(front)} Pareto-optimal of {len(records)} measured")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _wrap(text: str, width: int = 80) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))


def format_front(front: Sequence[dict]) -> str:
    """The front as a fixed-width text table."""
    measured = any("latency_measured_ms" in r for r in front)  # the latency above came from a model
    head = f"{'rank':>4}  {'accuracy':>8}  {'latency_ms':>10}  " + (f"{'measured':>10}  " if measured else "") \
        + f"{'flops':>12}  {'params':>10}  arch"
    lines = [head]

    def f(v, spec):
        return format(v, spec) if v is not None else "-"

    for r in front:
        again = f"{f(r.get('latency_measured_ms'), '10.4f')}  " if measured else ""
        lines.append(f"{r['rank']:>4}  {f(r['accuracy'], '8.4f')}  {f(r['latency_ms'], '10.4f')}  {again}"
                     f"{f(r['flops'], '>12')}  {f(r['params'], '>10')}  {r['arch']}")
    return "\n".join(lines)


def format_bounds(bounds: Mapping[str, float]) -> str:
    """The absolute budgets as text: ``latency <= 1.234 ms, flops <= 3e+05``."""
    units = {"latency": " ms"}
    return ", ".join(f"{m} <= {v:.4g}{units.get(m, '')}" for m, v in bounds.items())


def latency_warning(front: Sequence[dict], bounds: Mapping[str, float]) -> str | None:
    """A warning when subnets of the front (latency from a model) measure above the latency budget."""
    over = [r for r in front if r.get("latency_measured_ms", 0.0) > bounds.get("latency", float("inf"))]
    if not over:
        return None
    worst = max(r["latency_measured_ms"] / r["latency_ms"] - 1 for r in over)
    return (f"warning: {len(over)} of the {len(front)} subnets on the front measure above the latency "
            f"budget here (the latency table is off by up to {100 * worst:.0f}%); profile the table on an "
            "idle machine, fit a learned model (`nas latency fit`), or search without --latency-table")
