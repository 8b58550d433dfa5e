"""Accuracy predictors: one fit/predict interface from an architecture encoding to a scalar.

>>> from predictors import get_predictor, kendall_tau
>>> p = get_predictor("gp", seed=0).fit(X_train, y_train)
>>> mean, std = p.predict(X), p.predict_std(X)
>>> meta, arrays = p.to_state(); same = from_state(meta, arrays)  # the fit as a public value

Registered names (``predictor_names()``, the registry ``PREDICTORS``): ``ridge``, ``rbf``, ``gp``,
``gbt``, ``mlp``, ``auto``. ``predict_std`` works for ``gp`` (posterior std) and ``mlp`` (ensemble
spread), and for ``auto`` when it chose one of those; the others raise NotImplementedError.
Also ``rf`` and ``extra_trees`` (std: their trees' spread) and ``ensemble`` (members weighted by
their cross-validated Kendall tau, std: the mixture's), registered after ``gbt`` and ``mlp``; ``auto``
chooses among all of them. Every model takes ``targets="rank"`` (fit normal scores of the targets'
ranks, :mod:`predictors.targets`); ``ensemble`` and ``auto`` fit their members so by default.
``fit(..., pretrain=...)`` (FBNetV3-style pretraining on free FLOPs/params) works for every model:
``mlp`` pretrains its own network, the others get the statistics a separate network learnt as
extra features.

Where things go:

* a new predictor: one new module ``predictors/<name>.py`` with a :class:`Predictor` subclass
  decorated ``@register_predictor`` (``_fit``, ``_predict``, ``_state``/``_restore``), plus one
  import line below (the order is the registration order, cheapest first).
* the ensemble-MLP numerics (init, padded row buckets, the jitted training loop, layer packing):
  :mod:`predictors.ensemble_mlp`; cross-validation by name: :mod:`predictors.cross_validation`;
  CSV tables: :mod:`predictors.data` and :mod:`predictors.tabular`; atomic writes:
  :mod:`predictors.files`; latency models: :mod:`predictors.latency`.
"""

from predictors.base import (
    PREDICTORS,
    Predictor,
    check_predictor_name,
    from_state,
    get_predictor,
    load_predictor,
    predictor_names,
    register_predictor,
)
from predictors.cross_validation import cross_validate, out_of_fold
from predictors.errors import PredictorError
from predictors.metrics import all_metrics, kendall_tau, rmse, spearman
from predictors.targets import TARGETS, RankTransform

# Importing the model modules registers them, in this order (cheapest first).
from predictors import kernels as _kernels  # noqa: E402,F401  ridge, rbf, gp
from predictors import trees as _trees  # noqa: E402,F401  gbt
from predictors import forests as _forests  # noqa: E402,F401  rf, extra_trees
from predictors import mlp as _mlp  # noqa: E402,F401  mlp
from predictors import ensemble as _ensemble  # noqa: E402,F401  ensemble
from predictors import auto as _auto  # noqa: E402,F401  auto
from predictors.ensemble import select_weights  # noqa: E402
from predictors.data import ArchEncoder, Table, TableEncoder, read_csv  # noqa: E402
from predictors.pretrain import StatFeatures, arch_stats, random_pretrain_set  # noqa: E402
from predictors.tabular import TableModel, evaluate_table, fit_table, load_table_model  # noqa: E402
from predictors.latency import (  # noqa: E402
    LatencyTable,
    LearnedLatencyModel,
    fit_latency_model,
    load_latency_model,
    profile_table,
)

__all__ = [
    "PREDICTORS",
    "TARGETS",
    "RankTransform",
    "out_of_fold",
    "select_weights",
    "ArchEncoder",
    "LatencyTable",
    "LearnedLatencyModel",
    "Predictor",
    "PredictorError",
    "StatFeatures",
    "Table",
    "TableEncoder",
    "TableModel",
    "arch_stats",
    "evaluate_table",
    "fit_latency_model",
    "fit_table",
    "from_state",
    "load_table_model",
    "random_pretrain_set",
    "read_csv",
    "all_metrics",
    "check_predictor_name",
    "cross_validate",
    "get_predictor",
    "kendall_tau",
    "load_latency_model",
    "load_predictor",
    "predictor_names",
    "profile_table",
    "register_predictor",
    "rmse",
    "spearman",
]
