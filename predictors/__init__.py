"""Accuracy predictors: one fit/predict interface from an architecture encoding to a scalar.

>>> from predictors import get_predictor, kendall_tau
>>> p = get_predictor("gp", seed=0).fit(X_train, y_train)
>>> mean, std = p.predict(X), p.predict_std(X)

Registered names (``predictor_names()``): ``ridge``, ``rbf``, ``gp``, ``gbt``, ``mlp``, ``auto``.
``predict_std`` works for ``gp`` (posterior std) and ``mlp`` (ensemble spread), and for ``auto``
when it chose one of those; the others raise NotImplementedError. ``fit(..., pretrain=...)`` (FBNetV3-style
pretraining on free FLOPs/params) works for every model: ``mlp`` pretrains its own network, the
others get the statistics a separate network learnt as extra features.
"""

from predictors.base import Predictor, get_predictor, load_predictor, predictor_names, register_predictor
from predictors.metrics import all_metrics, cross_validate, kendall_tau, rmse, spearman

# Importing the model modules registers them, in this order (cheapest first).
from predictors import kernels as _kernels  # noqa: E402,F401  ridge, rbf, gp
from predictors import trees as _trees  # noqa: E402,F401  gbt
from predictors import mlp as _mlp  # noqa: E402,F401  mlp
from predictors import auto as _auto  # noqa: E402,F401  auto
from predictors.data import ArchEncoder, Table, TableEncoder, read_csv  # noqa: E402
from predictors.pretrain import arch_stats, random_pretrain_set  # noqa: E402
from predictors.tabular import TableModel, evaluate_table, fit_table, load_table_model  # noqa: E402
from predictors.latency import (  # noqa: E402
    LatencyTable,
    LearnedLatencyModel,
    fit_latency_model,
    load_latency_model,
    profile_table,
)

__all__ = [
    "ArchEncoder",
    "LatencyTable",
    "LearnedLatencyModel",
    "Predictor",
    "Table",
    "TableEncoder",
    "TableModel",
    "arch_stats",
    "evaluate_table",
    "fit_latency_model",
    "fit_table",
    "load_table_model",
    "random_pretrain_set",
    "read_csv",
    "all_metrics",
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
