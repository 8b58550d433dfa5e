"""An Evaluator over a tabular benchmark (NAS-Bench-201 style CSV): look-ups instead of a supernet.

The CSV has one row per architecture, an ``arch_str`` column (the space's canonical string, or any
string the space can normalise to it) and metric columns; other columns are ignored. Accuracy
columns given in percent (values above 1, up to 100) are read as fractions.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from nas_cli.errors import UserError
from nas_cli.evaluation.base import Evaluator
from search_spaces.base import Arch, ArchError, SearchSpace, get_space

ARCH_COLUMN = "arch_str"
#: metrics a table may hold that are exact and free (counted, not measured): ``estimate`` serves them
CHEAP = ("flops", "params")


class TableEvaluator(Evaluator):
    """Evaluator whose truth is a benchmark table; every ``evaluate`` of an architecture is a look-up.

    Args:
      space: the space whose canonical strings key the table.
      path: the CSV file.
      columns: metric name -> column, for the metrics the search needs (all must exist).
      optional: metric name -> column, read when present (e.g. flops/params for the outputs).
      free: cost metrics (not accuracy) that ``estimate`` also serves for every architecture, so a
        search reads them without spending an evaluation, as a measured latency table gives them
        (HW-NAS-Bench's setting): only accuracy is then learned from measured architectures.
    """

    def __init__(self, space: SearchSpace, path: Path, columns: Mapping[str, str],
                 optional: Mapping[str, str] | None = None, free: Sequence[str] = ()):
        self.space = space
        self.path = self.benchmark_table = Path(path)
        if not self.path.is_file():
            raise UserError(f"benchmark table {str(self.path)!r} does not exist")
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = list(reader)
        wanted = {ARCH_COLUMN: ARCH_COLUMN, **columns}
        missing = [f"{c!r} (for {m})" if m != c else repr(c) for m, c in wanted.items() if c not in header]
        if missing:
            raise UserError(f"benchmark table {self.path} lacks column(s) {', '.join(missing)}; "
                            f"its columns are: {', '.join(header)}")
        cols = dict(columns)
        cols.update({m: c for m, c in (optional or {}).items() if c in header and m not in cols})
        self._metrics = tuple(cols)
        self.free = tuple(dict.fromkeys(free))
        for m in self.free:
            if m == "accuracy":
                raise UserError("--free-metrics accuracy: accuracy is what a search spends its evaluations on; "
                                "free metrics are costs, e.g. latency, flops, params")
            if m not in cols:
                raise UserError(f"--free-metrics {m}: benchmark table {self.path} gives no {m!r} to this search "
                                f"(it reads: {', '.join(cols)})")
        table: dict[str, dict[str, float]] = {}
        for line, row in enumerate(rows, start=2):
            try:
                key = space.canonical(row[ARCH_COLUMN])
            except ArchError as e:
                raise UserError(f"{self.path} line {line}: {e}") from None
            values = {}
            for m, c in cols.items():
                try:
                    values[m] = float(row[c])
                except (TypeError, ValueError):
                    raise UserError(f"{self.path} line {line}: column {c!r} holds {row[c]!r}, not a number") from None
                if not math.isfinite(values[m]):
                    raise UserError(f"{self.path} line {line}: column {c!r} holds {row[c]!r}; need a finite number")
            table[key] = values
        if not table:
            raise UserError(f"benchmark table {self.path} has no rows")
        if "accuracy" in cols:
            acc = np.asarray([v["accuracy"] for v in table.values()])
            if acc.max() > 1.0:
                if acc.max() > 100.0 or acc.min() < 0:
                    raise UserError(f"accuracy column {cols['accuracy']!r} ranges {acc.min():g}..{acc.max():g}; "
                                    "expected fractions in [0, 1] or percentages in [0, 100]")
                for v in table.values():
                    v["accuracy"] /= 100.0
        self.table = table

    def metric_names(self) -> tuple[str, ...]:
        return self._metrics

    def lookup(self, key: str) -> dict[str, float]:
        try:
            return dict(self.table[key])
        except KeyError:
            raise UserError(f"architecture {key} is not in benchmark table {self.path} "
                            f"({len(self.table)} rows)") from None

    def evaluate(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        return [self.lookup(self.space.encode(a)) for a in archs]

    def known_truth(self) -> dict[str, dict[str, float]]:
        """Every architecture's metrics: the table is the whole truth."""
        return self.table

    def estimate(self, archs: Sequence[Arch]) -> list[dict[str, float]]:
        cheap = [m for m in dict.fromkeys([*CHEAP, *self.free]) if m in self._metrics]
        return [{m: v[m] for m in cheap} for v in (self.lookup(self.space.encode(a)) for a in archs)]


# --- a synthetic NAS-Bench-201-like table, for benchmarks and tests ---------------------------

_ACC_GAIN = {"none": 0.0, "skip_connect": 0.25, "nor_conv_1x1": 0.6, "nor_conv_3x3": 1.0, "avg_pool_3x3": 0.15}
_LAT_COST = {"none": 0.0, "skip_connect": 0.03, "nor_conv_1x1": 0.22, "nor_conv_3x3": 0.55, "avg_pool_3x3": 0.12}
_FLOPS = {"none": 0, "skip_connect": 0, "nor_conv_1x1": 1_200_000, "nor_conv_3x3": 10_600_000, "avg_pool_3x3": 150_000}
_PARAMS = {"none": 0, "skip_connect": 0, "nor_conv_1x1": 2_400, "nor_conv_3x3": 21_000, "avg_pool_3x3": 0}


def synthetic_nasbench201_rows(seed: int = 0) -> list[dict]:
    """All 15625 NAS-Bench-201 cells with a plausible accuracy/latency structure (deterministic per seed).

    Accuracy grows with the convolutions on input-to-output paths (saturating, with an interaction
    bonus for depth), cells with no such path sit at chance (10%); latency adds per-op costs of
    every non-``none`` edge; both carry small seeded noise. Columns: arch_str, accuracy (fraction),
    latency (ms), flops, params.
    """
    from search_spaces.nasbench201 import EDGES, NASBench201Space

    space = NASBench201Space()
    rng = np.random.default_rng(seed)
    archs = space.all_archs()
    acc_noise = rng.normal(0, 0.006, len(archs))
    lat_noise = rng.normal(0, 0.02, len(archs))
    rows = []
    for i, cell in enumerate(archs):
        ops = dict(zip(EDGES, cell.ops))
        # longest-conv-path dynamic programme over the DAG 0->1->2->3; -inf = unreachable
        best = {0: 0.0}
        for dst in (1, 2, 3):
            cands = [best[src] + _ACC_GAIN[ops[(dst, src)]] + 0.05 for src in range(dst)
                     if ops[(dst, src)] != "none" and src in best]
            if cands:
                best[dst] = max(cands)
        if 3 not in best:
            acc = 0.10 + abs(acc_noise[i]) / 3
        else:
            width = sum(_ACC_GAIN[op] for (dst, src), op in ops.items() if op != "none" and src in best)
            score = best[3] + 0.35 * width
            acc = 0.50 + 0.44 * (1 - math.exp(-score / 1.1)) + acc_noise[i]
        lat = (0.8 + sum(_LAT_COST[op] for op in cell.ops)) * (1 + lat_noise[i])
        rows.append({"arch_str": space.encode(cell), "accuracy": round(float(np.clip(acc, 0, 1)), 5),
                     "latency": round(float(lat), 5), "flops": sum(_FLOPS[op] for op in cell.ops) + 500_000,
                     "params": sum(_PARAMS[op] for op in cell.ops) + 5_000})
    return rows


def write_table(path: Path, rows: Sequence[dict]) -> None:
    """Writes rows (dicts with the same keys) as a CSV file, atomically."""
    import io

    from predictors.files import atomic_write_text

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def open_table_evaluator(path: Path, space_name: str, objective_columns: Sequence[tuple[str, str | None]],
                         budget_metrics: Sequence[str], free: Sequence[str] = ()) -> TableEvaluator:
    """The evaluator of `nas search --benchmark-table`: the objectives' columns (a metric's own name
    when none is given), the budgets' metrics, and accuracy, latency, flops, params where present;
    ``free``: metrics served for every architecture (see :class:`TableEvaluator`).

    Raises:
      UserError: unknown space, a missing file or column, a row the space cannot read.
    """
    space = get_space(space_name)
    columns = {m: (c or m) for m, c in objective_columns}
    for m in budget_metrics:
        columns.setdefault(m, m)
    optional = {m: m for m in ("accuracy", "latency", *CHEAP) if m not in columns}
    return TableEvaluator(space, path, columns, optional, free)
