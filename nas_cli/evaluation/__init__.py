"""What a search evaluates architectures with. :class:`Evaluator` (:mod:`.base`) declares every
capability the search reads, with its default; the implementations are a training run's supernet
(:mod:`.supernet`, one subnet's accuracy through :mod:`.subnet`), a benchmark table (:mod:`.table`,
which exposes its own truth) and the multi-process spread, a wrapping evaluator (:mod:`.spread`).

Each public name of the modules is re-exported here."""

from __future__ import annotations

from nas_cli.evaluation.base import (  # noqa: F401
    METRICS,
    SEARCH_ROUNDS,
    SEARCH_REPEATS,
    ALONE_REPEATS,
    Evaluator,
    CAPABILITIES,
    Wrapping,
    latency_record,
)
from nas_cli.evaluation.subnet import (  # noqa: F401
    preprocess_recorded,
    SubnetEvaluator,
)
from nas_cli.evaluation.supernet import (  # noqa: F401
    ACCURACY_CACHE,
    LATENCY_CALIBRATION,
    RunEvaluator,
    model_calibration,
    open_run_evaluator,
    sample_subnets,
)
from nas_cli.evaluation.table import (  # noqa: F401
    ARCH_COLUMN,
    CHEAP,
    TableEvaluator,
    synthetic_nasbench201_rows,
    write_table,
    open_table_evaluator,
)
from nas_cli.evaluation.spread import (  # noqa: F401
    share,
    merge,
    SpreadMeasurer,
    SpreadEvaluator,
)

__all__ = [
    "ACCURACY_CACHE",
    "ALONE_REPEATS",
    "ARCH_COLUMN",
    "CAPABILITIES",
    "CHEAP",
    "Evaluator",
    "LATENCY_CALIBRATION",
    "METRICS",
    "RunEvaluator",
    "SEARCH_REPEATS",
    "SEARCH_ROUNDS",
    "SpreadEvaluator",
    "SpreadMeasurer",
    "SubnetEvaluator",
    "TableEvaluator",
    "Wrapping",
    "latency_record",
    "merge",
    "model_calibration",
    "open_run_evaluator",
    "open_table_evaluator",
    "preprocess_recorded",
    "sample_subnets",
    "share",
    "synthetic_nasbench201_rows",
    "write_table",
]
