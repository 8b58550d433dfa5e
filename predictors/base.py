"""The one fit/predict interface of every accuracy predictor, its registry, its state and its file format.

A predictor maps an architecture encoding (a float matrix, one row per architecture, as given by
``SearchSpace.features`` or by :class:`predictors.data.TableEncoder`) to one scalar per row.

A fitted predictor's state is a public value: ``meta, arrays = p.to_state()`` (JSON-able metadata
and named numpy arrays) and ``from_state(meta, arrays)`` rebuilds a predictor that predicts exactly
as ``p``. Every predictor takes ``targets="standard"|"rank"``: fit the targets as they are, or
the normal scores of their ranks (:mod:`predictors.targets`); old files without the field are
``"standard"``. Saved predictors are that state in a directory: ``predictor.json`` (the metadata) and
``arrays.npz`` (numbers only, loaded with ``allow_pickle=False``), never a pickle. Models that hold
a predictor of their own (``auto``, the learned latency model) store its state the same way.
"""

from __future__ import annotations

import abc
import io
import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from predictors.errors import PredictorError
from predictors.files import atomic_write_bytes, atomic_write_json
from predictors.pretrain import StatFeatures
from predictors.targets import RankTransform, check_targets
from search_spaces.errors import UnknownNameError
from search_spaces.registry import Registry

FORMAT = "nas-predictor"
FORMAT_VERSION = 1
META_FILE = "predictor.json"
ARRAYS_FILE = "arrays.npz"


class Predictor(abc.ABC):
    """Fits ``X (N, F) -> y (N,)`` and predicts, deterministically per ``seed``.

    Subclasses see targets standardised to mean 0 and std 1 (the base class undoes it) and
    implement ``_fit``, ``_predict`` and ``_state``/``_restore`` (their own part of :meth:`to_state`).

    Args:
      seed: the seed of every random choice of the fit.
      targets: ``"standard"`` fits the targets; ``"rank"`` fits the normal scores of their ranks and
        maps predictions back through the training targets (monotone, so the ranking is the
        model's).
      config: the model's options, among ``defaults``.
    """

    name: ClassVar[str]
    #: default config; keyword options to the constructor must be among these keys
    defaults: ClassVar[dict[str, Any]] = {}
    #: whether :meth:`predict_std` works (``auto`` answers for the model it chose)
    supports_std: ClassVar[bool] = False
    #: every model accepts ``fit(..., pretrain=(X_unlabelled, stats))``; this says whether it
    #: pretrains a network of its own (``mlp``: FBNetV3's network learns the free
    #: statistics, then its head is swapped); the others get the statistics that a separate network
    #: learnt as extra features (:class:`predictors.pretrain.StatFeatures`)
    native_pretrain: ClassVar[bool] = False
    #: whether fitting chooses a model by cross-validation (``auto``, ``ensemble``), which
    #: :meth:`selection` hands to a later fit so that it need not choose again
    chooses: ClassVar[bool] = False
    def __init__(self, seed: int = 0, targets: str = "standard", **config):
        unknown = sorted(set(config) - set(self.defaults))
        if unknown:
            raise PredictorError(
                f"unknown option(s) {', '.join(unknown)} for predictor {self.name!r}; "
                f"known options: {', '.join(sorted(self.defaults)) or '(none)'}"
            )
        self.seed = int(seed)
        self.targets = check_targets(targets)
        self.config = {**self.defaults, **config}
        self.n_features: int | None = None
        self._pretrained: StatFeatures | None = None  # when fitted with pretrain and no native pretraining
        self._y_mean = 0.0
        self._y_std = 1.0
        self._rank: RankTransform | None = None  # fitted when targets == "rank"

    # --- public interface ---------------------------------------------------------------------
    def fit(self, X, y, *, pretrain: tuple | None = None) -> "Predictor":
        """Fits on ``X (N, F)`` and targets ``y (N,)``; returns ``self``.

        Args:
          pretrain: optional ``(X_unlabelled (M, F), stats (M, S))``: free statistics (FLOPs,
            params, ...) of many more architectures, learnt first (FBNetV3-style): by the model's
            own network where it has one (``native_pretrain``), else by a separate network whose
            predicted statistics become extra features (:class:`predictors.pretrain.StatFeatures`).

        Raises:
          PredictorError: shapes disagree, values are not finite, or fewer than 2 samples.
        """
        X = _as_features(X)
        y = np.asarray(y, np.float64).reshape(-1)
        if len(y) != len(X):
            raise PredictorError(f"X has {len(X)} rows but y has {len(y)} values; pass one target per row")
        if len(y) < 2:
            raise PredictorError(f"need at least 2 samples to fit a predictor, got {len(y)}")
        if not np.all(np.isfinite(y)):
            raise PredictorError(f"y has non-finite values at rows {np.flatnonzero(~np.isfinite(y))[:5].tolist()}")
        self._pretrained = None
        if pretrain is not None:
            Xu, stats = pretrain
            Xu = _as_features(Xu)
            stats = np.asarray(stats, np.float64)
            stats = stats.reshape(len(stats), -1)
            if Xu.shape[1] != X.shape[1] or len(stats) != len(Xu):
                raise PredictorError(
                    f"pretrain X has shape {Xu.shape} and stats {stats.shape}; need (M, {X.shape[1]}) and (M, S)"
                )
            if not np.all(np.isfinite(stats)):
                raise PredictorError("pretrain stats have non-finite values")
            pretrain = (Xu, stats)
            if not self.native_pretrain:
                self._pretrained = StatFeatures(seed=self.seed).fit(Xu, stats)
                pretrain = None
        self.n_features = X.shape[1]
        self._rank = None
        if self.targets == "rank":
            self._rank = RankTransform.fit(y)
            y = self._rank.forward(y)
        self._y_mean = float(y.mean())
        std = float(y.std())
        self._y_std = std if std > 0 else 1.0
        self._fit(self._model_input(X), (y - self._y_mean) / self._y_std, pretrain)
        return self

    def predict(self, X) -> np.ndarray:
        """Predicted targets, shape ``(N,)`` float64."""
        X = self._model_input(self._check_predict_input(X))
        return self.to_target(self._predict(X))

    def predict_std(self, X) -> np.ndarray:
        """Predictive standard deviation in target units, shape ``(N,)``.

        Raises:
          NotImplementedError: the model has no notion of uncertainty (see ``supports_std``).
        """
        if not self.supports_std:
            raise NotImplementedError(
                f"predictor {self.name!r} gives no predictive std; predictors that do: "
                f"{', '.join(n for n in predictor_names() if PREDICTORS.get(n).supports_std)}"
            )
        X = self._model_input(self._check_predict_input(X))
        std = self._predict_std(X) * self._y_std
        if self._rank is None:
            return std
        return self._rank.inverse_spread(self._predict(X) * self._y_std + self._y_mean, std)

    def selection(self) -> dict[str, Any]:
        """Options under which a fresh predictor of this name fits the model this one chose by
        cross-validation, without cross-validating again (``{}``: this model chooses nothing).

        ``get_predictor(p.name, seed, targets=..., **p.selection()).fit(X, y)`` refits the choice on
        new data at the cost of one fit: what a search does between its (expensive) re-selections.
        """
        return {}

    def to_target(self, z) -> np.ndarray:
        """What the model fitted (standardised, maybe rank-scored targets) back in target units.

        ``predict(X) == to_target(<the model's raw output on X>)``.
        """
        y = np.asarray(z, np.float64) * self._y_std + self._y_mean
        return y if self._rank is None else self._rank.inverse(y)

    @property
    def stat_features(self) -> StatFeatures | None:
        """The separate statistics network fitted with ``pretrain`` (None for native pretraining or none)."""
        return self._pretrained

    def to_state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The fitted predictor as ``(meta, arrays)``: what :func:`from_state` rebuilds it from.

        ``meta`` (JSON-able) holds ``name``, ``seed``, ``targets``, ``config``, ``n_features``,
        ``y_mean``, ``y_std``, the model's own ``state`` and, when fitted with a separate statistics
        network, ``pretrained``; ``arrays`` maps names to numpy arrays (that network's start with
        ``pretrain_``, the rank map's with ``target_``).

        Raises:
          PredictorError: the predictor is not fitted.
        """
        if self.n_features is None:
            raise PredictorError(f"predictor {self.name!r} is not fitted; call fit first")
        state, arrays = self._state()
        meta = {
            "name": self.name,
            "seed": self.seed,
            "targets": self.targets,
            "config": self.config,
            "n_features": self.n_features,
            "y_mean": self._y_mean,
            "y_std": self._y_std,
            "state": state,
        }
        if self._pretrained is not None:
            meta["pretrained"], pre_arrays = self._pretrained.to_state()
            arrays = {**arrays, **pre_arrays}
        if self._rank is not None:
            arrays = {**arrays, **self._rank.to_arrays()}
        return meta, arrays

    def save(self, path) -> None:
        """Writes :meth:`to_state` as ``path/predictor.json`` and ``path/arrays.npz`` (each atomically)."""
        meta, arrays = self.to_state()
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        path = Path(path)
        atomic_write_bytes(path / ARRAYS_FILE, buf.getvalue())
        atomic_write_json(
            path / META_FILE,
            {"format": FORMAT, "version": FORMAT_VERSION, **meta, "pretrained": meta.get("pretrained")},
        )

    # --- for subclasses ---------------------------------------------------------------------
    @abc.abstractmethod
    def _fit(self, X: np.ndarray, y: np.ndarray, pretrain: tuple | None) -> None: ...

    @abc.abstractmethod
    def _predict(self, X: np.ndarray) -> np.ndarray: ...

    def _predict_std(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @abc.abstractmethod
    def _state(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The model's own JSON-able metadata and named arrays, that :meth:`_restore` rebuilds the fit from."""

    @abc.abstractmethod
    def _restore(self, meta: dict, arrays: dict[str, np.ndarray]) -> None: ...

    def _model_input(self, X: np.ndarray) -> np.ndarray:
        """What ``_fit``/``_predict`` see: ``X``, with the pretrained statistics appended if any."""
        return X if self._pretrained is None else self._pretrained.transform(X)

    def _check_predict_input(self, X) -> np.ndarray:
        if self.n_features is None:
            raise PredictorError(f"predictor {self.name!r} is not fitted; call fit first")
        X = _as_features(X)
        if X.shape[1] != self.n_features:
            raise PredictorError(f"X has {X.shape[1]} features but the predictor was fitted on {self.n_features}")
        return X

    def __repr__(self) -> str:
        return f"{type(self).__name__}(seed={self.seed}, {self.config})"


def _as_features(X) -> np.ndarray:
    X = np.asarray(X, np.float32)
    if X.ndim != 2:
        raise PredictorError(f"X must be a 2-D (N, F) feature matrix, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise PredictorError("X has non-finite values")
    return X


#: every accuracy predictor class, by name, in registration order (cheapest first)
PREDICTORS: Registry[type[Predictor]] = Registry("predictor")


def register_predictor(cls: type[Predictor]) -> type[Predictor]:
    """Class decorator adding a predictor under ``cls.name`` (a taken name is an error)."""
    return PREDICTORS.register(cls.name, cls)


def predictor_names() -> list[str]:
    """Registered predictor names, in registration order (cheapest first)."""
    return PREDICTORS.names()


def prefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """A nested model's arrays under ``prefix`` (so they cannot collide with its container's)."""
    return {prefix + key: a for key, a in arrays.items()}


def unprefixed(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays :func:`prefixed` stored under ``prefix``, with their own names again."""
    return {key[len(prefix):]: a for key, a in arrays.items() if key.startswith(prefix)}


def check_predictor_name(name: str, noun: str = "predictor") -> None:
    """Raises UnknownNameError ("unknown <noun> ...; known <noun>s: ...") unless ``name`` is registered."""
    if name not in PREDICTORS:
        raise UnknownNameError(f"unknown {noun} {name!r}; known {noun}s: {', '.join(predictor_names())}")


def get_predictor(name: str, seed: int = 0, **config) -> Predictor:
    """A fresh predictor registered as ``name`` (``config``: ``targets`` and the model's options);
    unknown names raise UnknownNameError listing known ones."""
    check_predictor_name(name)
    return PREDICTORS.get(name)(seed=seed, **config)


def load_predictor(path) -> Predictor:
    """Loads what :meth:`Predictor.save` wrote; predictions equal the saved predictor's exactly.

    Raises:
      FileNotFoundError: ``path`` holds no saved predictor.
      PredictorError: the files are not a predictor this version can read.
    """
    path = Path(path)
    meta_path, arrays_path = path / META_FILE, path / ARRAYS_FILE
    if not meta_path.is_file() or not arrays_path.is_file():
        raise FileNotFoundError(f"{path} is not a saved predictor (expected {META_FILE} and {ARRAYS_FILE} in it)")
    try:
        meta = json.loads(meta_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PredictorError(f"{meta_path} is not valid JSON ({e})") from None
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise PredictorError(f"{meta_path} is not a {FORMAT} v{FORMAT_VERSION} file")
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except Exception as e:  # noqa: BLE001 - a damaged zip raises BadZipFile, ValueError, EOFError, zlib.error...
        raise PredictorError(f"{arrays_path} is damaged ({type(e).__name__}: {str(e)[:100]}); fit the predictor "
                             "again with `nas predictor fit`") from None
    try:
        return from_state(meta, arrays)
    except (KeyError, TypeError, ValueError) as e:
        raise PredictorError(f"{path} is damaged: its {META_FILE} and {ARRAYS_FILE} do not make a predictor "
                             f"({type(e).__name__}: {str(e)[:100]}); fit it again with `nas predictor fit`") from None


def from_state(meta: dict, arrays: dict[str, np.ndarray]) -> Predictor:
    """The predictor whose :meth:`Predictor.to_state` was ``(meta, arrays)``; predicts exactly as that one."""
    targets = meta.get("targets", "standard")  # files from before the option fitted the targets as they are
    predictor = get_predictor(meta["name"], seed=meta["seed"], targets=targets, **meta["config"])
    predictor.n_features = int(meta["n_features"])
    predictor._y_mean = float(meta["y_mean"])
    predictor._y_std = float(meta["y_std"])
    if predictor.targets == "rank":
        predictor._rank = RankTransform.from_arrays(arrays)
    if meta.get("pretrained"):
        predictor._pretrained = StatFeatures.from_state(meta["pretrained"], arrays)
    predictor._restore(meta["state"], arrays)
    return predictor
