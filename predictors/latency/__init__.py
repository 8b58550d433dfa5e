"""Latency models of a space's static subnets: a measured lookup table and a learned correction.

>>> from predictors.latency import make_latency_space, profile_table, load_latency_model
>>> space, options = make_latency_space("resnet-tiny")
>>> profile_table(space, options=options).save("lut.json")
>>> load_latency_model("lut.json", space).predict(space.largest())  # ms at batch 1

Any registered supernet space works whose ``latency_pieces()`` / ``latency_keys(arch)`` list the
parts of its static model (:class:`search_spaces.base.LatencyPiece`); nothing here knows a space.

One job per module:

* :mod:`~predictors.latency.runtime`: what a latency runtime is (:class:`LatencyRuntime`) and
  :data:`RUNTIMES`, the registry that finds one by name.
* :mod:`~predictors.latency.timing`: the timing protocol (interleaved rounds, two halves, chunks
  of programs, a chunk's level) and the ``xla`` runtime (jit on the current JAX device).
* :mod:`~predictors.latency.measure`: end-to-end measurement at one device speed (reference
  subnets, levels), repeatability, the random subnets fits and validations draw, scores.
* :mod:`~predictors.latency.table`: :class:`LatencyTable` and :func:`profile_table`.
* :mod:`~predictors.latency.learned`: :class:`LearnedLatencyModel` and :func:`fit_latency_model`.
* :mod:`~predictors.latency.fileformat`: formats, version, reading with clear errors, checking a
  file against a space, :func:`load_latency_model`.
* :mod:`~predictors.latency.spaces`: :func:`make_latency_space` (a space from its options).
* :mod:`~predictors.latency.fewshot`: a device timed elsewhere: :func:`choose_probes`, priors
  (:func:`load_prior`), :class:`FewShotLatencyModel` and :func:`fit_fewshot_model`.
* :mod:`~predictors.latency.workflow`: one function per ``nas latency`` command
  (:func:`profile_latency`, :func:`validate_latency`, :func:`fit_latency`, :func:`fit_timings`,
  :func:`probe_latency`, :func:`predict_latency`).

Where things go:

* a new latency runtime (another compiler, a device over a wire): one new module here with a class
  following :class:`LatencyRuntime` that ends in ``RUNTIMES.register("name", TheRuntime())``, plus
  its import line below; every measurement takes ``runtime="name"``.
* a new kind of latency model: one new module with its class and a ``FORMATS.register(format,
  reader)`` line (as table.py and learned.py do), plus its import line below.

Library errors are :class:`LatencyError` (a :class:`search_spaces.errors.NasError`); messages name
values, never CLI flags.
"""

from predictors.latency.errors import LatencyError
from predictors.latency.runtime import DEFAULT_RUNTIME, RUNTIMES, LatencyRuntime, get_runtime, runtime_of

# Each import registers its runtime or file format.
from predictors.latency.timing import (  # noqa: E402  runtime "jax"
    compile_forward,
    compile_subnet,
    current_device,
    level_of,
    measure_dispatch,
    measure_latency,
    time_chunked,
    time_compiled,
    time_interleaved,
)
from predictors.latency.fileformat import (  # noqa: E402
    FORMATS,
    MODEL_FORMAT,
    TABLE_FORMAT,
    VERSION,
    check_space,
    load_latency_model,
    read_latency_file,
    space_spec,
)
from predictors.latency.spaces import has_latency_pieces, make_latency_space  # noqa: E402
from predictors.latency.measure import (  # noqa: E402
    FIT_STREAM,
    VALIDATE_STREAM,
    at_level,
    calibrated_predictions,
    common_level,
    mape,
    measure_archs,
    measure_as,
    measure_level,
    protocol_record,
    reference_archs,
    reference_space,
    references_of,
    repeatability,
    runtime_for,
    sample_archs,
    score,
    time_archs,
)
from predictors.latency.table import (  # noqa: E402  format "nas-latency-table"
    LatencyTable,
    calibration_archs,
    profile_steps,
    profile_table,
    time_pieces,
)
from predictors.latency.learned import (  # noqa: E402  format "nas-latency-model"
    MODEL_FEATURES,
    LearnedLatencyModel,
    fit_latency_model,
    piece_counts,
    piece_index,
)
from predictors.latency import ort  # noqa: E402,F401  runtime "onnxruntime" (needs the onnx extra to run)
from predictors.latency.fewshot import (  # noqa: E402  format "nas-latency-fewshot"
    EXTERNAL_RUNTIME,
    FEWSHOT_FORMAT,
    FewShotLatencyModel,
    choose_probes,
    fit_fewshot_model,
    load_prior,
    read_archs,
    read_timings,
)
from predictors.latency.workflow import (  # noqa: E402
    fit_latency,
    fit_timings,
    predict_latency,
    probe_latency,
    profile_latency,
    validate_latency,
)

__all__ = [
    "DEFAULT_RUNTIME",
    "EXTERNAL_RUNTIME",
    "FEWSHOT_FORMAT",
    "FIT_STREAM",
    "FORMATS",
    "MODEL_FEATURES",
    "MODEL_FORMAT",
    "RUNTIMES",
    "TABLE_FORMAT",
    "VALIDATE_STREAM",
    "VERSION",
    "FewShotLatencyModel",
    "LatencyError",
    "LatencyRuntime",
    "LatencyTable",
    "LearnedLatencyModel",
    "at_level",
    "calibrated_predictions",
    "calibration_archs",
    "check_space",
    "choose_probes",
    "common_level",
    "compile_forward",
    "compile_subnet",
    "current_device",
    "fit_latency",
    "fit_fewshot_model",
    "fit_latency_model",
    "fit_timings",
    "get_runtime",
    "has_latency_pieces",
    "level_of",
    "load_prior",
    "load_latency_model",
    "make_latency_space",
    "mape",
    "measure_archs",
    "measure_as",
    "measure_dispatch",
    "measure_latency",
    "measure_level",
    "piece_counts",
    "piece_index",
    "predict_latency",
    "probe_latency",
    "protocol_record",
    "profile_latency",
    "profile_steps",
    "profile_table",
    "read_archs",
    "read_latency_file",
    "read_timings",
    "reference_archs",
    "reference_space",
    "references_of",
    "repeatability",
    "runtime_for",
    "runtime_of",
    "sample_archs",
    "score",
    "space_spec",
    "time_archs",
    "time_chunked",
    "time_compiled",
    "time_interleaved",
    "time_pieces",
    "validate_latency",
]
