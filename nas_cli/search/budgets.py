"""Parsing the user's budgets and objectives, and resolving relative budgets against real subnets."""

from __future__ import annotations

import dataclasses
import math
import re

from nas_cli.errors import FieldError, UserError
from nas_cli.evaluation import METRICS

#: metrics that can carry a budget, with the unit shown in messages
BUDGET_UNITS = {"latency": "ms", "flops": "", "params": ""}
_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9}


@dataclasses.dataclass(frozen=True)
class Budget:
    """An upper bound on one metric: ``value`` in the metric's unit, or a percentage of the largest subnet's."""

    metric: str
    value: float
    relative: bool  # True: value is a percentage of the largest subnet's value
    text: str  # what the user typed, for messages and pareto.json

    def resolve(self, largest_value: float) -> float:
        """The absolute bound, given the largest subnet's measured value of this metric."""
        return self.value / 100.0 * largest_value if self.relative else self.value


def _forms(metric: str) -> str:
    if metric == "latency":
        return "milliseconds like '3.5ms' or '3.5', or a percentage of the largest subnet's latency like '60%'"
    return f"a count like '300M', '1.2G', '5e6', or a percentage of the largest subnet's {metric} like '60%'"


def parse_budget(metric: str, text: str) -> Budget:
    """Parses ``3.5ms``/``3.5``/``60%`` (latency) or ``300M``/``1.2G``/``60%`` (flops, params).

    Raises:
      FieldError: naming the bad value, its field (``latency_budget``: the CLI's ``--latency-budget``)
        and the accepted forms.
    """
    if metric not in BUDGET_UNITS:
        raise UserError(f"no budget can be set on {metric!r}; budget metrics: {', '.join(BUDGET_UNITS)}")
    raw = str(text).strip()
    s = raw.lower().replace(" ", "")
    relative = s.endswith("%")
    if relative:
        s = s[:-1]
    elif metric == "latency":
        s = s.removesuffix("ms")
    else:
        m = re.fullmatch(r"(.*?)([kmg]?)", s)
        s, scale = m.group(1), _SUFFIX[m.group(2)]
    try:
        value = float(s)
    except ValueError:
        raise FieldError(f"{{{metric}_budget}} {raw!r} is not understood; use {_forms(metric)}") from None
    if not relative and metric != "latency":
        value *= scale
    if not math.isfinite(value) or value <= 0:
        raise FieldError(f"{{{metric}_budget}} {raw!r} must be a positive finite number; use {_forms(metric)}")
    return Budget(metric, value, relative, raw)


def parse_objectives(text: str) -> tuple[tuple[str, str | None], ...]:
    """Parses ``accuracy,latency`` or ``accuracy=COL,latency=COL`` into ``((metric, column|None), ...)``.

    Raises:
      UserError: unknown or repeated metric, or fewer than two objectives.
    """
    out: list[tuple[str, str | None]] = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, column = part.partition("=")
        name, column = name.strip(), column.strip()
        if name not in METRICS:
            raise UserError(f"unknown objective {name!r} in {text!r}; known objectives: {', '.join(METRICS)}")
        if sep and not column:
            raise UserError(f"objective {part!r} names no column; write {name}=COLUMN")
        if name in [n for n, _ in out]:
            raise UserError(f"objective {name!r} is given twice in {text!r}")
        out.append((name, column or None))
    if len(out) < 2:
        raise UserError(
            f"objectives {text!r} name {len(out)} metric(s); a multi-objective search needs at least two "
            f"of: {', '.join(METRICS)}"
        )
    return tuple(out)
