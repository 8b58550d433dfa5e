"""Measurement tables (CSV) to features and targets, for users who bring data from anywhere.

A table is one of:

* an **arch table**: a column ``arch`` (or ``arch_str``, as NAS-Bench-201's tables name it) of a
  search space's canonical strings. Features are what the space knows of each architecture's
  structure (``SearchSpace.structure_features``, by default) or the genome's one-hot
  (``SearchSpace.features``, ``features="onehot"``); with ``structure+zc`` / ``onehot+zc`` the
  table's zero-cost proxy columns ``zc_*`` (``nas predictor sample RUN --zero-cost``) are features
  beside them, and ``zc`` uses the proxies alone; other columns besides the target are ignored.
  The space is named, or found by trying every registered space's ``decode``.
* a **generic table**: every column other than the target and the ignored ones is a categorical
  feature, one-hot over the values seen when fitting; a column whose values all look numeric
  also gets an ordinal feature, scaled to [0, 1] by the fitted range.

Every problem with the file is a :class:`~predictors.errors.PredictorError` naming the line, the
column, the bad value and what is allowed.
"""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path
from typing import Sequence

import numpy as np

import search_spaces  # noqa: F401  (importing the package registers every space)
from predictors.errors import PredictorError
from search_spaces.base import SPACES, get_space, space_names
from search_spaces.errors import ArchError

ARCH_COLUMN = "arch"
#: the names an arch table's column of canonical strings may have, in the order they are looked for
ARCH_COLUMNS = (ARCH_COLUMN, "arch_str")
#: what an arch table's features are: the space's structure features, or the genome's one-hot, each
#: alone or with the table's zero-cost proxies beside it, or the proxies alone
FEATURE_KINDS = ("structure", "onehot", "structure+zc", "onehot+zc", "zc")
#: a column of zero-cost proxy values is named this prefix and the proxy (``zc_synflow``)
ZC_PREFIX = "zc_"


@dataclasses.dataclass(frozen=True)
class Table:
    """A CSV's header and string cells; ``rows[i]`` is on line ``lines[i]`` of ``path``."""

    path: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    lines: tuple[int, ...]

    def column(self, name: str) -> list[str]:
        return [row[self.header.index(name)] for row in self.rows]

    def require(self, name: str, role: str) -> None:
        """Raises PredictorError unless the table has a column ``name``; ``role`` says what it is for."""
        if name not in self.header:
            raise PredictorError(f"{self.path}: no column {name!r} ({role}); columns: {', '.join(self.header)}")

    def subset(self, indices: Sequence[int]) -> "Table":
        return dataclasses.replace(
            self, rows=tuple(self.rows[i] for i in indices), lines=tuple(self.lines[i] for i in indices)
        )


def read_csv(path) -> Table:
    """Reads a CSV with a header line and at least one data row (blank lines are skipped)."""
    path = Path(path)
    if not path.is_file():
        raise PredictorError(f"{path}: no such file; pass the path of a CSV with a header line")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = [row for row in csv.reader(f)]
    except (UnicodeDecodeError, csv.Error) as e:
        raise PredictorError(f"{path}: not a readable UTF-8 CSV ({e})") from None
    numbered = [(i + 1, [c.strip() for c in row]) for i, row in enumerate(lines) if any(c.strip() for c in row)]
    if not numbered:
        raise PredictorError(f"{path}: the file is empty; expected a header line and data rows")
    (_, header), body = numbered[0], numbered[1:]
    if not body:
        raise PredictorError(f"{path}: has a header but no data rows")
    bad = [h for h in header if not h]
    if bad:
        raise PredictorError(f"{path}: the header has an empty column name; name every column")
    dup = sorted({h for h in header if header.count(h) > 1})
    if dup:
        raise PredictorError(f"{path}: duplicate column name(s) {', '.join(dup)}; column names must be unique")
    for line, row in body:
        if len(row) != len(header):
            raise PredictorError(f"{path}: line {line} has {len(row)} fields but the header has {len(header)}")
    return Table(str(path), tuple(header), tuple(tuple(r) for _, r in body), tuple(line for line, _ in body))


def _line(table: Table, i: int) -> int:
    return table.lines[i]


def _parse_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def targets(table: Table, target: str) -> np.ndarray:
    """The target column as float64; empty, non-numeric, NaN or infinite cells are errors."""
    table.require(target, "the target column")
    out = np.empty(len(table.rows), np.float64)
    for i, text in enumerate(table.column(target)):
        where = f"{table.path}: line {_line(table, i)}, column {target!r}"
        if text == "":
            raise PredictorError(f"{where} is empty; every target must be a finite number (drop or fill that row)")
        value = _parse_float(text)
        if value is None:
            raise PredictorError(f"{where}: {text!r} is not a number; targets must be finite numbers")
        if not math.isfinite(value):
            raise PredictorError(f"{where} is {text}; every target must be a finite number (drop or fill that row)")
        out[i] = value
    return out


# --- encoders ---------------------------------------------------------------------------------
def check_feature_kind(features: str) -> str:
    """Returns ``features`` if it is one of :data:`FEATURE_KINDS`, else raises PredictorError."""
    if features not in FEATURE_KINDS:
        raise PredictorError(f"features {features!r} is not one of {', '.join(FEATURE_KINDS)}")
    return features


def split_feature_kind(features: str) -> tuple[str | None, bool]:
    """``(structure|onehot|None, with zero-cost proxies)`` of a :data:`FEATURE_KINDS` name."""
    check_feature_kind(features)
    if features == "zc":
        return None, True
    base, _, zc = features.partition("+")
    return base, zc == "zc"


def column_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of ``values`` ``(n, k)`` to standardise features by; a constant
    column's std is taken as 1 (it standardises to 0, not to NaN)."""
    std = values.std(0)
    return values.mean(0), np.where(std > 0, std, 1.0)


def zero_cost_columns(table: Table, target: str, ignore: Sequence[str] = ()) -> list[str]:
    """The table's zero-cost proxy columns (``zc_*``), other than the target and the ignored ones."""
    return [c for c in table.header if c.startswith(ZC_PREFIX) and c != target and c not in ignore]


def _zero_cost_block(table: Table, columns: Sequence[str]) -> np.ndarray:
    """The float64 values of ``columns``; empty, non-numeric or non-finite cells are errors."""
    out = np.empty((len(table.rows), len(columns)), np.float64)
    for j, col in enumerate(columns):
        table.require(col, "a zero-cost proxy column of this model (`nas predictor sample RUN --zero-cost` writes it)")
        for i, text in enumerate(table.column(col)):
            value = _parse_float(text)
            if value is None or not math.isfinite(value):
                raise PredictorError(f"{table.path}: line {_line(table, i)}, column {col!r}: {text!r} is not a "
                                     "finite number; zero-cost proxies must be finite")
            out[i, j] = value
    return out


class ArchEncoder:
    """Features of a column of canonical strings through one search space.

    Args:
      space_name: a registered space; ``options`` its options.
      features: one of :data:`FEATURE_KINDS`: ``"structure"`` (``SearchSpace.structure_features``)
        or ``"onehot"`` (``SearchSpace.features``, the genome's one-hot and ordinals), either with
        ``+zc``, or ``"zc"`` alone.
      column: the column holding the strings (``arch`` or ``arch_str``).
      zc_columns, zc_mean, zc_std: with zero-cost features, the table's proxy columns and the
        statistics they are standardised by (those of the table the encoder was fitted on; see
        :meth:`fit_zero_cost`).
    """

    kind = "arch"

    def __init__(self, space_name: str, options: dict | None = None, features: str = "structure",
                 column: str = ARCH_COLUMN, zc_columns: Sequence[str] = (), zc_mean: Sequence[float] = (),
                 zc_std: Sequence[float] = ()):
        self.space_name = space_name
        self.options = {k: tuple(v) if isinstance(v, list) else v for k, v in (options or {}).items()}
        self.space = get_space(space_name, **self.options)
        self.features = check_feature_kind(features)
        self.base, self.with_zc = split_feature_kind(features)
        self.column = column
        self.zc_columns = list(zc_columns)
        self.zc_mean = np.asarray(zc_mean, np.float64)
        self.zc_std = np.asarray(zc_std, np.float64)

    def fit_zero_cost(self, table: Table, target: str, ignore: Sequence[str] = ()) -> "ArchEncoder":
        """Takes the table's ``zc_*`` columns and their mean/std (features with ``zc`` only)."""
        if not self.with_zc:
            return self
        columns = zero_cost_columns(table, target, ignore)
        if not columns:
            raise PredictorError(
                f"{table.path}: features {self.features!r} need zero-cost proxy columns ({ZC_PREFIX}*, written "
                f"by `nas predictor sample RUN --zero-cost`); columns: {', '.join(table.header)}")
        self.zc_columns = columns
        self.zc_mean, self.zc_std = column_scale(_zero_cost_block(table, columns))
        return self

    def encode(self, arch) -> np.ndarray:
        """The space's feature vector of one architecture (no zero-cost proxies: they come from a
        table, or a search's supernet), float32."""
        if self.base == "onehot":
            return np.asarray(self.space.features(arch), np.float32)
        if self.base is None:
            return np.zeros(0, np.float32)
        return np.asarray(self.space.structure_features(arch), np.float32)

    def standardise_zero_cost(self, values: np.ndarray) -> np.ndarray:
        """Proxy values ``(n, len(zc_columns))`` as the features the model saw (fitted standardisation)."""
        return ((np.asarray(values, np.float64) - self.zc_mean) / self.zc_std).astype(np.float32)

    def transform(self, table: Table) -> np.ndarray:
        table.require(self.column, f"canonical architecture strings of space {self.space_name!r}")
        X = self._transform_archs(table)
        if not self.with_zc:
            return X
        return np.concatenate([X, self.standardise_zero_cost(_zero_cost_block(table, self.zc_columns))], 1)

    def _transform_archs(self, table: Table) -> np.ndarray:
        cache: dict[str, np.ndarray] = {}
        rows = []
        for i, text in enumerate(table.column(self.column)):
            if text not in cache:
                try:
                    cache[text] = self.encode(self.space.decode(text))
                except ArchError as e:
                    raise PredictorError(
                        f"{table.path}: line {_line(table, i)}, column {self.column!r}: {text!r} is not an "
                        f"architecture of space {self.space_name!r}: {e}"
                    ) from None
            rows.append(cache[text])
        return np.stack(rows)

    def feature_names(self) -> list[str]:
        if self.base == "onehot":
            names = list(self.space.feature_names())
        elif self.base is None:
            names = []
        else:
            names = list(self.space.structure_feature_names())
        return names + self.zc_columns

    def to_json(self) -> dict:
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}
        out = {"kind": self.kind, "space": self.space_name, "options": options, "features": self.features,
               "column": self.column}
        if self.with_zc:
            out.update(zc_columns=self.zc_columns, zc_mean=self.zc_mean.tolist(), zc_std=self.zc_std.tolist())
        return out


class TableEncoder:
    """One-hot over fitted values per column, plus an ordinal feature for numeric-looking columns."""

    kind = "table"

    def __init__(self, columns: Sequence[str], values: dict[str, list[str]], ranges: dict[str, list[float]]):
        self.columns = list(columns)
        self.values = {c: list(v) for c, v in values.items()}
        self.ranges = {c: list(r) for c, r in ranges.items()}  # numeric columns only: [lo, hi]

    @classmethod
    def fit(cls, table: Table, columns: Sequence[str]) -> "TableEncoder":
        values, ranges = {}, {}
        for col in columns:
            cells = table.column(col)
            for i, text in enumerate(cells):
                _check_cell(table, i, col, text)
            numbers = [_parse_float(t) for t in cells]
            if all(v is not None for v in numbers):
                # Numeric columns are ordered by value (so "10" comes after "9"), others by text.
                by_value = {}
                for text, v in zip(cells, numbers):
                    by_value.setdefault(text, v)
                values[col] = sorted(by_value, key=lambda t: (by_value[t], t))
                ranges[col] = [float(min(numbers)), float(max(numbers))]
            else:
                values[col] = sorted(set(cells))
        return cls(columns, values, ranges)

    def transform(self, table: Table) -> np.ndarray:
        for col in self.columns:
            table.require(col, "a feature column of this model")
        index = {c: {v: j for j, v in enumerate(self.values[c])} for c in self.columns}
        X = np.zeros((len(table.rows), len(self.feature_names())), np.float32)
        for i, row in enumerate(table.rows):
            offset = 0
            ordinals = []
            for col in self.columns:
                text = row[table.header.index(col)]
                _check_cell(table, i, col, text)
                j = index[col].get(text)
                if j is None:
                    seen = ", ".join(self.values[col][:20]) + (" ..." if len(self.values[col]) > 20 else "")
                    raise PredictorError(
                        f"{table.path}: line {_line(table, i)}, column {col!r}: value {text!r} was not seen "
                        f"in training; seen values: {seen}"
                    )
                X[i, offset + j] = 1.0
                offset += len(self.values[col])
                if col in self.ranges:
                    lo, hi = self.ranges[col]
                    ordinals.append((float(text) - lo) / (hi - lo) if hi > lo else 0.0)
            X[i, offset:] = ordinals
        return X

    def feature_names(self) -> list[str]:
        names = [f"{c}={v}" for c in self.columns for v in self.values[c]]
        return names + [c for c in self.columns if c in self.ranges]

    def to_json(self) -> dict:
        return {"kind": self.kind, "columns": self.columns, "values": self.values, "ranges": self.ranges}


def _check_cell(table: Table, i: int, col: str, text: str) -> None:
    where = f"{table.path}: line {_line(table, i)}, column {col!r}"
    if text == "":
        raise PredictorError(f"{where} is empty; fill it or ignore column {col!r} to leave it out of the features")
    if text.lower() in ("nan", "-nan", "+nan"):
        raise PredictorError(f"{where} is NaN; fill it or ignore column {col!r} to leave it out of the features")


def encoder_from_json(obj: dict):
    """Rebuilds an encoder from :meth:`to_json` output."""
    if obj.get("kind") == ArchEncoder.kind:
        # Encoders saved before the features field existed encoded the genome's one-hot.
        return ArchEncoder(obj["space"], obj.get("options"), features=obj.get("features", "onehot"),
                           column=obj.get("column", ARCH_COLUMN), zc_columns=obj.get("zc_columns", ()),
                           zc_mean=obj.get("zc_mean", ()), zc_std=obj.get("zc_std", ()))
    if obj.get("kind") == TableEncoder.kind:
        return TableEncoder(obj["columns"], obj["values"], obj["ranges"])
    raise PredictorError(f"unknown encoder kind {obj.get('kind')!r}; known kinds: arch, table")


def detect_space(table: Table, column: str = ARCH_COLUMN) -> str:
    """The one registered space whose ``decode`` accepts every string of the column ``column``."""
    archs = sorted(set(table.column(column)))
    names = space_names()
    matches = []
    for name in names:
        space = get_space(name)
        try:
            for text in archs:
                space.decode(text)
        except ArchError:
            continue
        matches.append(name)
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise PredictorError(
            f"{table.path}: no registered search space decodes every value of column {column!r} "
            f"(tried with default options: {', '.join(names) or 'none registered'}); name the space (or the "
            f"training run the subnets come from) to see why, or rename the column to use it as a generic "
            f"categorical feature"
        )
    raise PredictorError(
        f"{table.path}: column {column!r} decodes in several spaces ({', '.join(matches)}); "
        f"name the space to pick one"
    )


def arch_column(table: Table, target: str, ignore: Sequence[str] = ()) -> str | None:
    """The table's column of canonical strings (the first of :data:`ARCH_COLUMNS` that is neither
    the target nor ignored), or None."""
    for column in ARCH_COLUMNS:
        if column in table.header and column != target and column not in ignore:
            return column
    return None


def make_encoder(table: Table, target: str, space: str | tuple[str, dict] | None = None, ignore: Sequence[str] = (),
                 features: str = "structure"):
    """Chooses and fits the encoder of a training table (see the module docstring). ``space`` is a
    registered name (default options) or (name, options), e.g. a training run's space; ``features``
    (one of :data:`FEATURE_KINDS`) is what an arch table's features are (generic tables have one kind);
    with zero-cost proxies, the encoder takes the table's ``zc_*`` columns and standardises them by
    this table's statistics."""
    check_feature_kind(features)
    options = None
    if isinstance(space, tuple):
        space, options = space
    table.require(target, "the target column")
    for col in ignore:
        table.require(col, "named in ignore")
    column = arch_column(table, target, ignore)
    if space is not None or column is not None:
        if space is None:
            space = detect_space(table, column)
        else:
            SPACES.get(space)  # an unknown name lists the known ones
            table.require(column or ARCH_COLUMN, f"space {space!r} needs canonical architecture strings")
        return ArchEncoder(space, options, features=features, column=column or ARCH_COLUMN).fit_zero_cost(
            table, target, ignore)
    columns = [c for c in table.header if c != target and c not in ignore]
    if not columns:
        raise PredictorError(f"{table.path}: no feature columns left besides the target {target!r} and the ignored ones")
    return TableEncoder.fit(table, columns)
