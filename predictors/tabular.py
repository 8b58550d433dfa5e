"""Fit and evaluate predictors on measurement tables: what ``nas predictor fit/evaluate`` run.

A saved table model is a predictor directory (see :mod:`predictors.base`) plus ``encoding.json``,
which says how CSV rows become features, so the same file can be evaluated on new tables.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from predictors.base import Predictor, check_predictor_name, get_predictor, load_predictor
from predictors.cross_validation import cross_validate
from predictors.data import ArchEncoder, Table, encoder_from_json, make_encoder, read_csv, targets
from predictors.errors import PredictorError
from predictors.files import atomic_write_json
from predictors.metrics import all_metrics
from predictors.pretrain import has_stats, random_pretrain_set

ENCODING_FILE = "encoding.json"


class TableModel:
    """An encoder (CSV rows to features) and a fitted predictor, saved and loaded together."""

    def __init__(self, encoder, predictor: Predictor, target: str):
        self.encoder = encoder
        self.predictor = predictor
        self.target = target

    def predict_table(self, table: Table) -> np.ndarray:
        return self.predictor.predict(self.encoder.transform(table))

    def save(self, path) -> None:
        """Writes the predictor's files and ``encoding.json`` into the directory ``path``."""
        self.predictor.save(path)
        atomic_write_json(Path(path) / ENCODING_FILE, {"target": self.target, "encoder": self.encoder.to_json()})


def load_table_model(path) -> TableModel:
    """Loads what :meth:`TableModel.save` wrote; a missing or foreign directory is a PredictorError."""
    path = Path(path)
    if not (path / ENCODING_FILE).is_file():
        raise PredictorError(f"{path} is not a saved predictor (no {ENCODING_FILE}); fit_table makes one")
    try:
        predictor = load_predictor(path)
        meta = json.loads((path / ENCODING_FILE).read_text())
        encoder = encoder_from_json(meta["encoder"])
    except (FileNotFoundError, ValueError, KeyError) as e:
        raise PredictorError(f"{path}: cannot load the predictor ({e})") from None
    return TableModel(encoder, predictor, meta.get("target", ""))


def fit_table(
    data: str | Path | Table,
    target: str,
    model: str = "auto",
    space: str | tuple[str, dict] | None = None,
    ignore: Sequence[str] = (),
    seed: int = 0,
    k: int = 5,
    holdout: float = 0.2,
    pretrain_samples: int = 0,
    features: str = "structure",
) -> tuple[TableModel, dict]:
    """Fits ``model`` on a CSV (a path, or a table :func:`read_csv` read) and reports held-out and
    k-fold tau, rho and RMSE.

    The held-out figures fit on a seeded ``1 - holdout`` split and score the rest; the k-fold
    figures cross-validate on all rows (for ``auto``: the CV of the model it chose, the same CV
    that chose it, so optimistic; the held-out figures include the choice and are not). The
    returned model is fitted on every row.

    Args:
      pretrain_samples: if > 0, pretrain on the FLOPs/params of this many random architectures of
        the table's space (arch tables of a space with FLOPs/params; every model: see
        ``Predictor.fit``).
      features: what an arch table's features are: ``structure`` (the space's structure
        features) or ``onehot`` (the genome's one-hot), each optionally ``+zc`` (with the table's
        zero-cost proxy columns ``zc_*``), or ``zc`` (the proxies alone); generic tables have one kind.

    Raises:
      PredictorError: a bad table, name or value (the message says which).
    """
    check_predictor_name(model, "model")
    if k < 2:
        raise PredictorError(f"folds {k}: k-fold cross-validation needs at least 2 folds")
    if not 0.0 < holdout < 1.0:
        raise PredictorError(f"holdout {holdout}: must be a fraction between 0 and 1")
    table = data if isinstance(data, Table) else read_csv(data)
    encoder = make_encoder(table, target, space=space, ignore=ignore, features=features)
    X = encoder.transform(table)
    y = targets(table, target)
    n = len(y)
    n_test = int(round(holdout * n))
    if n < 2 * k or n_test < 2 or n - n_test < 2 * k:
        raise PredictorError(
            f"{table.path}: {n} rows are too few to report held-out and {k}-fold figures; "
            f"need at least {int(np.ceil(2 * k / (1 - holdout))) + 1} rows"
        )
    pretrain = None
    if pretrain_samples > 0:
        if isinstance(encoder, ArchEncoder) and encoder.with_zc:
            raise PredictorError(f"features {encoder.features!r}: pretraining draws random architectures, which "
                                 "have no zero-cost proxies; pretrain with features structure or onehot")
        if not isinstance(encoder, ArchEncoder) or not has_stats(encoder.space):
            raise PredictorError("pretraining needs an arch table of a space that counts FLOPs/params")
        pretrain = random_pretrain_set(encoder.space, pretrain_samples, seed=seed)

    order = np.random.default_rng(seed).permutation(n)
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    options = {"k": k} if model == "auto" else {}
    held = get_predictor(model, seed=seed, **options).fit(X[train], y[train], pretrain=pretrain)
    report: dict = {
        "model": model,
        "target": target,
        "encoding": f"arch:{encoder.space_name}" if isinstance(encoder, ArchEncoder) else "table",
        "n": n,
        "features": int(X.shape[1]),
        "feature_kind": encoder.features if isinstance(encoder, ArchEncoder) else "table",
        "seed": seed,
        "holdout": all_metrics(y[test], held.predict(X[test])),
    }
    final = get_predictor(model, seed=seed, **options).fit(X, y, pretrain=pretrain)
    if model == "auto":
        chosen = final.chosen.name
        report["chosen"] = chosen
        report["candidates"] = final.scores
        if chosen == "ensemble":
            report["weights"] = final.chosen.weights
        cv = {m: final.scores[chosen][m] for m in ("kendall_tau", "spearman", "rmse")}
    else:
        cv = cross_validate(model, X, y, k=k, seed=seed, pretrain=pretrain)
        cv = {m: cv[m] for m in ("kendall_tau", "spearman", "rmse")}
    report["cv"] = {"k": k, **cv}
    return TableModel(encoder, final, target), report


def evaluate_table(model_path, path, target: str) -> dict:
    """``{"kendall_tau", "spearman", "rmse", "n"}`` of a saved model on a CSV."""
    model = load_table_model(model_path)
    table = read_csv(path)
    y = targets(table, target)
    if len(y) < 2:
        raise PredictorError(f"{table.path}: 1 row cannot be ranked; evaluate on at least 2 rows")
    return all_metrics(y, model.predict_table(table))
