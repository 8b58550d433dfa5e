"""The learned latency model (``nas latency fit``): a registered predictor fitted on end-to-end
measurements of random subnets.

Its inputs are ``space.features(arch)``, the count of each table piece in the subnet (so a linear
model learns each piece's cost inside the whole program, fusion and all, instead of alone), and the
table's sum when a table is given; it then predicts the residual ``measured - table`` (so the
table's error is what it learns).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from predictors.base import check_predictor_name, from_state, get_predictor
from predictors.files import atomic_write_json
from predictors.latency.errors import LatencyError
from predictors.latency.fileformat import FORMATS, MODEL_FORMAT, VERSION, space_spec
from predictors.latency.table import LatencyTable

#: what a learned model's inputs are; a file fitted on other features must be re-fitted
MODEL_FEATURES = "genes+piece-counts"


def piece_index(space) -> dict[str, int]:
    """Column of each of ``space.latency_pieces()`` in :func:`piece_counts`."""
    return {p.key: i for i, p in enumerate(space.latency_pieces())}


def piece_counts(space, archs: Sequence, index: dict[str, int]) -> np.ndarray:
    """(n, pieces): how many times each piece of ``index`` (:func:`piece_index`) runs in each arch."""
    out = np.zeros((len(archs), len(index)), np.float32)
    for row, arch in enumerate(archs):
        for key in space.latency_keys(arch):
            out[row, index[key]] += 1
    return out


class LearnedLatencyModel:
    """A predictor on ``space.features(arch)`` and piece counts (+ the table's sum), predicting the
    table's residual."""

    def __init__(self, space, predictor, table: LatencyTable | None, meta: dict | None = None):
        self.space = space
        self.predictor = predictor
        self.table = table
        self.meta = dict(meta or {})
        self._pieces = piece_index(space)  # planned once: search predicts one arch at a time

    @property
    def batch(self) -> int:
        """The batch size its training subnets were timed at."""
        return int(self.meta.get("batch", self.table.batch if self.table is not None else 1))

    @property
    def options(self) -> dict:
        """The space options it was fitted with."""
        return dict(self.meta.get("options") or {})

    @property
    def device(self) -> dict | None:
        """``{"platform", "kind"}`` of the device its training subnets (else its table) were timed on."""
        return self.meta.get("device") or (self.table.device if self.table is not None else None)

    @property
    def reference(self) -> dict | None:
        """``{"archs", "level_ms"}`` of its training measurements (None when fitted on given numbers)."""
        return self.meta.get("reference")

    def table_scale(self) -> float:
        """The table's figures are at the table's level; the model's targets at the model's."""
        mine, theirs = self.reference, self.table.reference
        return float(mine["level_ms"]) / float(theirs["level_ms"]) if mine and theirs else 1.0

    def features(self, archs: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """(inputs of the predictor, the table's predictions at this model's level or zeros)."""
        X = np.stack([self.space.features(a) for a in archs]).astype(np.float32)
        X = np.concatenate([X, piece_counts(self.space, archs, self._pieces)], axis=1)
        if self.table is None:
            return X, np.zeros(len(archs))
        base = self.table.predict_many(archs) * self.table_scale()
        return np.concatenate([X, base[:, None].astype(np.float32)], axis=1), base

    def predict_many(self, archs: Sequence) -> np.ndarray:
        X, base = self.features(list(archs))
        return base + self.predictor.predict(X)

    def predict(self, arch) -> float:
        return float(self.predict_many([arch])[0])

    def to_json(self) -> dict:
        meta, arrays = self.predictor.to_state()
        return {
            "format": MODEL_FORMAT,
            "version": VERSION,
            "features": MODEL_FEATURES,
            "space": space_spec(self.space),
            "options": self.meta.get("options", {}),
            "meta": self.meta,
            "runtime": self.meta.get("runtime"),
            "predictor": {
                **meta,
                "arrays": {k: {"dtype": str(np.asarray(v).dtype), "shape": list(np.shape(v)),
                               "values": np.asarray(v).ravel().tolist()} for k, v in arrays.items()},
            },
            "table": self.table.data if self.table is not None else None,
        }

    @classmethod
    def from_json(cls, data: dict, space) -> "LearnedLatencyModel":
        if data.get("features") != MODEL_FEATURES:
            raise LatencyError(f"latency model was fitted on features {data.get('features', 'genes')!r}; this nas "
                               f"uses {MODEL_FEATURES!r}: re-fit it with `nas latency fit`")
        fitted = data.get("space", {}).get("config", {}).get("resolutions")
        if fitted != list(space.config.resolutions):
            # the resolution gene is one of its features: another set of resolutions is another input
            raise LatencyError(f"latency model was fitted on resolutions {fitted}; the space uses "
                               f"{list(space.config.resolutions)}: use those resolutions or re-fit it")
        try:
            p = data["predictor"]
            arrays = {k: np.asarray(a["values"], a["dtype"]).reshape(a["shape"]) for k, a in p["arrays"].items()}
            predictor = from_state(p, arrays)
        except (KeyError, TypeError, ValueError) as e:
            raise LatencyError(f"latency model file is damaged or from another version ({e!r})") from None
        table = LatencyTable(data["table"], space) if data.get("table") else None
        return cls(space, predictor, table, data.get("meta"))

    def save(self, path) -> None:
        atomic_write_json(path, self.to_json())


FORMATS.register(MODEL_FORMAT, LearnedLatencyModel.from_json)


def fit_latency_model(space, archs: Sequence, measured_ms, *, table: LatencyTable | None = None,
                      model: str = "ridge", seed: int = 0, meta: dict | None = None) -> LearnedLatencyModel:
    """Fits ``model`` (a registered predictor) to end-to-end latencies of ``archs``."""
    check_predictor_name(model, "model")
    archs = list(archs)
    y = np.asarray(measured_ms, np.float64)
    if len(archs) < 2 or len(archs) != len(y):
        raise LatencyError(f"need at least 2 measured subnets to fit a latency model, got {len(archs)}")
    learned = LearnedLatencyModel(space, get_predictor(model, seed=seed), table, meta)
    X, base = learned.features(archs)
    learned.predictor.fit(X, y - base)
    return learned
