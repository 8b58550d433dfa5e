"""Latency on a device that cannot run nas (few-shot): probes to time there, and a model fitted on
their timings that transfers from what is known of other devices (``nas latency probes|fit
--timings|predict``).

**Probes.** :func:`choose_probes` splits a pool of architectures (every one of a space that can list
them, else a seeded sample) into ``n`` equal-count strata of cost (the priors' mean standardised
log-latency, else log FLOPs) and takes one from each stratum: of a seeded handful, the one the
probes already chosen explain least in the space's widest additive cost basis (:func:`op_bases`;
greedy D-optimal), so probes spread over the cost range and pin down the per-operation costs.

**The model.** Features of an architecture: the priors' predicted latencies (other devices' latency
files, or benchmark-table columns), its FLOPs (where the space counts them), its gene features
(``space.features``) and its additive cost bases (:func:`op_bases`: counts of each operation in the
genome, and for a space with dead operations, in the live architecture). The candidates, each with a
small grid of settings, are scored by leave-one-out mean absolute error of log-latency on the
timings (:data:`CANDIDATES`); every configuration within :data:`ENSEMBLE_TOLERANCE` of the best one
is a member, and the members' log-latencies are averaged with weights (best error / its error)^2:

* ``op-costs``: latency = a basis @ non-negative per-operation costs, fitted on the timings alone
  (Huber relative error, or weighted towards absolute error: :data:`OP_WEIGHT_POWERS`): a device
  that runs one operation after another needs as many timings as it has costs (6 for
  NAS-Bench-201's genome counts), not one per cell;
* ``op-transfer``: the same costs as a mix of the priors' per-operation costs (each prior's costs
  fitted on its whole pool, :func:`prior_op_costs`) plus a penalised deviation: few timings fix
  the mix and move a cost only where they insist;
* ``log-ridge[...]``: a ridge regression of log-latency on the log of the priors (and log FLOPs,
  and gene features): a device that is a product of the priors' speeds per kind of work;
* ``rel-ridge[...]``: latency in ms as a linear combination of the priors' ms, FLOPs and per-choice
  gene counts, fitted for relative error;
* ``transfer-additive``: an additive model over gene features whose coefficients have a Gaussian
  prior estimated from the priors' own additive fits (their mean and covariance, plus an isotropic
  part), updated by the timings (Bayesian linear regression with relative noise).

A timing that every other timing says is far off (a unit slip, a failed run) is left out of the fit
and reported (:data:`OUTLIER_LOG`).

A fitted model is a latency file of format :data:`FEWSHOT_FORMAT`: it embeds its priors (a latency
file's contents, or a column's values), so it needs nothing else at run time, and works wherever a
latency file does (``nas search --latency-table``, ``nas latency validate|predict``). Its runtime is
:data:`EXTERNAL_RUNTIME` unless the timings' runtime is named: nothing here can check what timed them.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.optimize import nnls

from predictors.files import atomic_write_bytes, atomic_write_json, atomic_write_text
from predictors.latency.errors import LatencyError
from predictors.latency.fileformat import (
    FORMATS,
    VERSION,
    check_space,
    check_space_name,
    jsonable,
    read_latency_file,
    space_spec,
)
from search_spaces.base import SupernetSpace
from search_spaces.errors import ArchError

FEWSHOT_FORMAT = "nas-latency-fewshot"
#: the runtime recorded for timings taken elsewhere (the vendor's tool on a phone, a board)
EXTERNAL_RUNTIME = "external"
#: spaces with at most this many architectures are probed from all of them
POOL_ALL = 100_000
#: else a seeded sample of this many (plus the smallest and largest)
POOL_SAMPLE = 4000
#: candidates of each stratum compared for distance to the probes already chosen
STRATUM_CANDIDATES = 64
#: fewest distinct timed architectures a model is fitted on
MIN_TIMINGS = 3
#: a timing whose leave-one-out prediction is off by more than this factor (log), and twice as far
#: off as any other timing's, is left out of the fit (reported in the file's ``left_out``)
OUTLIER_LOG = math.log(3.0)

RIDGE_ALPHAS = (0.01, 0.1, 1.0, 10.0)
TRANSFER_TAUS = (0.03, 0.1, 0.3, 1.0)
TRANSFER_NOISE = (0.02, 0.05, 0.1, 0.2)
#: configurations whose leave-one-out error is within this factor of the best one's are averaged
ENSEMBLE_TOLERANCE = 3.0
#: the per-operation fits' squared relative errors are weighted by (latency / mean) ** (2 power):
#: 0 fits relative error, 1 absolute error (a device whose noise is in ms, not in percent)
OP_WEIGHT_POWERS = (0.0, 0.5, 1.0)
#: a prior's per-operation costs are refitted without the archs the additive fit misses by more than
#: this (log): a failed measurement, a structure no additive model holds
OP_FIT_KEEP = math.log(1.5)
#: deviation penalties of ``op-transfer`` (per cost, relative to the priors' size of it)
OP_TRANSFER_LAMS = (0.1, 1.0, 10.0)
#: Huber's threshold (robust standard deviations) and scale floor of the per-operation fits' relative
#: residuals, and the re-weighting iterations
HUBER_K = 1.345
HUBER_FLOOR = 0.01
HUBER_ITERATIONS = 8


# --- what the space says -------------------------------------------------------------------------

def fewshot_spec(space) -> dict:
    """:func:`space_spec`, also for a tabular space without a config (only its name)."""
    return space_spec(space) if hasattr(space, "config") else {"name": space.name, "config": {}}


def check_fewshot_space(spec: dict, space, source: str) -> None:
    """:func:`check_space` for a supernet space; a tabular space is checked by name."""
    if isinstance(space, SupernetSpace):
        check_space(spec, space, source)
    else:
        check_space_name(spec, space.name, source)


# NAS-Bench-201's CIFAR skeleton: a 3x3 stem (3 -> 16 channels, 32 px), three stages of 5 cells at
# 16/32/64 channels on 32/16/8 px, two ResNet reduction blocks between them, a linear head. Every
# non-`none` edge computes, whether or not it reaches the output (the benchmark's networks run
# dead edges too), so FLOPs count the genome's ops, not the pruned cell's. Multiply-accumulates.
_NB201_STAGES = ((16, 32), (32, 16), (64, 8))
_NB201_CELLS = 5
_NB201_FIXED = (3 * 16 * 9 * 32 * 32  # stem
                + sum(9 * cin * cout * s * s + 9 * cout * cout * s * s + cin * cout * s * s  # reductions
                      for cin, cout, s in ((16, 32, 16), (32, 64, 8)))
                + 64 * 10)  # head
_NB201_OP_MACS = {
    "none": 0, "skip_connect": 0,
    "nor_conv_1x1": _NB201_CELLS * sum(c * c * s * s for c, s in _NB201_STAGES),
    "nor_conv_3x3": _NB201_CELLS * sum(9 * c * c * s * s for c, s in _NB201_STAGES),
    "avg_pool_3x3": _NB201_CELLS * sum(9 * c * s * s for c, s in _NB201_STAGES),
}


def flops_of(space, archs: Sequence) -> np.ndarray | None:
    """FLOPs (multiply-accumulates at batch 1) of each arch, or None for a space that counts none."""
    if isinstance(space, SupernetSpace):
        return np.asarray([space.flops(a) for a in archs], np.float64)
    if space.name == "nas-bench-201":
        return np.asarray([_NB201_FIXED + sum(_NB201_OP_MACS[op] for op in a.ops) for a in archs], np.float64)
    return None


def gene_features(space, archs: Sequence) -> np.ndarray:
    """(n, d) ``space.features`` of each arch (one-hot per gene, ordinal values; inactive genes zero)."""
    return np.stack([np.asarray(space.features(a), np.float64) for a in archs])


def choice_counts(space, feats: np.ndarray) -> np.ndarray:
    """(n, c) how many genes take each choice, summed over genes with the same choices (a cell's
    count of each operation; a supernet's count of each kernel size, expand ratio...), read from the
    one-hot part of :func:`gene_features`."""
    groups: dict[tuple, list[int]] = {}
    col = 0
    for g in space.genes:
        groups.setdefault(tuple(g.choices), []).append(col)
        col += len(g.choices)
    out = []
    for choices, starts in groups.items():
        if len(starts) > 1:
            out.append(sum(feats[:, s:s + len(choices)] for s in starts))
    return np.concatenate(out, axis=1) if out else np.zeros((len(feats), 0))


def op_bases(space, archs: Sequence, genes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The space's additive cost bases of each arch, name -> (n, k) with a leading constant column:
    latency = basis @ per-operation costs, the physics of a device that runs one operation after
    another. ``counts``: how many genes take each choice (:func:`choice_counts`; a device that runs
    every operation of the genome). For a space whose archs can hold dead operations
    (``space.pruned``, ``space.connected``: a NAS-Bench-201 cell edge that reaches no output),
    ``live``: whether any path connects plus the counts of the pruned arch (a device whose runtime
    drops dead work), and ``counts+live`` (both). A space without shared choices: ``genes`` (one
    cost per gene choice)."""
    feats = gene_features(space, archs) if genes is None else genes
    one = np.ones((len(feats), 1))
    counts = choice_counts(space, feats)
    out = {"counts": np.concatenate([one, counts], 1)} if counts.shape[1] else {"genes": np.concatenate([one, feats], 1)}
    if counts.shape[1] and hasattr(space, "pruned") and hasattr(space, "connected"):
        live = choice_counts(space, gene_features(space, [space.pruned(a) for a in archs]))
        conn = np.asarray([[float(space.connected(a))] for a in archs])
        out["live"] = np.concatenate([one, conn, live], 1)
        out["counts+live"] = np.concatenate([one, conn, counts, live], 1)
    return out


def candidate_pool(space, seed: int) -> list:
    """Every architecture of a space that lists at most :data:`POOL_ALL`, else the smallest, the
    largest and :data:`POOL_SAMPLE` seeded random ones (distinct)."""
    if hasattr(space, "all_archs"):
        archs = space.all_archs()
        if len(archs) <= POOL_ALL:
            return archs
    rng = np.random.default_rng([seed, 0x9B0E])
    seen, pool = set(), []
    for a in [space.smallest(), space.largest()] + [space.sample(rng) for _ in range(POOL_SAMPLE)]:
        key = space.encode(a)
        if key not in seen:
            seen.add(key)
            pool.append(a)
    return pool


def _standardise(X: np.ndarray) -> np.ndarray:
    sd = X.std(0)
    return (X - X.mean(0)) / np.where(sd > 0, sd, 1.0)


def probe_cost(space, archs: Sequence, priors: Sequence = ()) -> tuple[np.ndarray, str]:
    """(cost of each arch for stratifying, what it is): the priors' mean standardised log-latency,
    else log FLOPs, else the sum of the gene features."""
    if priors:
        logs = np.log(np.stack([p.predict_many(archs) for p in priors], 1))
        return _standardise(logs).mean(1), "priors"
    flops = flops_of(space, archs)
    if flops is not None:
        return np.log1p(flops), "flops"
    return gene_features(space, archs).sum(1), "genes"


def choose_probes(space, n: int, seed: int, priors: Sequence = ()) -> tuple[list, str]:
    """(``n`` probe architectures, what they were stratified by), deterministic per seed (see the
    module's docstring)."""
    pool = candidate_pool(space, seed)
    if n < MIN_TIMINGS or n > len(pool):
        raise LatencyError(f"{n} probes: need at least {MIN_TIMINGS} (a fit needs them) and at most the "
                           f"{len(pool)} candidate architectures")
    cost, by = probe_cost(space, pool, priors)
    # the design: the widest additive cost basis, standardised; each stratum's probe is the candidate
    # the probes already chosen explain least (largest leverage x' M^-1 x, greedy D-optimal), so the
    # per-operation costs a fit estimates are pinned down by few timings
    basis = max(op_bases(space, pool).values(), key=lambda b: b.shape[1])
    Z = np.concatenate([np.ones((len(pool), 1)), _standardise(basis[:, 1:])], 1)
    M = 1e-3 * np.eye(Z.shape[1])
    rng = np.random.default_rng([seed, 0x960B])
    chosen: list[int] = []
    for stratum in np.array_split(np.argsort(cost, kind="stable"), n):
        cand = rng.choice(stratum, size=min(len(stratum), STRATUM_CANDIDATES), replace=False)
        leverage = np.einsum("ij,jk,ik->i", Z[cand], np.linalg.inv(M), Z[cand])
        pick = int(cand[int(np.argmax(leverage))])
        chosen.append(pick)
        M += np.outer(Z[pick], Z[pick])
    return [pool[i] for i in chosen], by


# --- priors --------------------------------------------------------------------------------------

def _genome_index(space, arch) -> int:
    """Position of ``arch`` in ``space.all_archs()`` (mixed-radix genome order)."""
    idx = 0
    for g, v in zip(space.genes, space.to_genome(arch)):
        idx = idx * len(g.choices) + int(v)
    return idx


class Prior:
    """What is known of another device: ``predict_many(archs)`` in ms, and its JSON record."""

    def __init__(self, source: str, record: dict, space):
        self.source = source
        self.record = record
        self.space = space
        if record["kind"] == "file":
            data = record["data"]
            check_fewshot_space(data.get("space", {}), space, f"prior {source}")
            self._model = FORMATS.get(data["format"])(data, space)
            self._lookup = None
        else:
            self._model = None
            if "ms_by_genome" in record:
                self._by_genome = np.asarray(record["ms_by_genome"], np.float64)
                self._lookup = None
            else:
                self._lookup = dict(zip(record["archs"], map(float, record["ms"])))

    def predict_many(self, archs: Sequence) -> np.ndarray:
        if self._model is not None:
            out = np.asarray(self._model.predict_many(list(archs)), np.float64)
        elif self._lookup is None:
            out = self._by_genome[[_genome_index(self.space, a) for a in archs]]
        else:
            keys = [self.space.encode(a) for a in archs]
            missing = next((k for k in keys if k not in self._lookup), None)
            if missing is not None:
                raise LatencyError(f"prior {self.source} has no latency for arch {missing!r} "
                                   f"(it covers {len(self._lookup)} architectures)")
            out = np.asarray([self._lookup[k] for k in keys], np.float64)
        if not np.all(np.isfinite(out) & (out > 0)):
            raise LatencyError(f"prior {self.source} predicts a non-positive or non-finite latency")
        return out

    def to_json(self) -> dict:
        return {"source": self.source, **self.record}


def _column_prior(path: Path, column: str, space, source: str) -> dict:
    rows, header = _read_csv(path, "prior table")
    arch_col = "arch" if "arch" in header else "arch_str" if "arch_str" in header else None
    if arch_col is None:
        raise LatencyError(f"prior table {path} has no column 'arch' (or 'arch_str'); columns: {', '.join(header)}")
    if column not in header:
        raise LatencyError(f"prior table {path} has no column {column!r}; columns: {', '.join(header)}")
    values: dict[str, float] = {}
    for line, row in rows:
        arch = _decode(space, row[arch_col], f"prior table {path} line {line}")
        ms = _positive(row[column], f"prior table {path} line {line} column {column!r}")
        values[space.encode(arch)] = ms
    if not values:
        raise LatencyError(f"prior table {path} has no rows")
    if hasattr(space, "all_archs") and len(values) == math.prod(len(g.choices) for g in space.genes):
        by_genome = [0.0] * len(values)
        for key, ms in values.items():
            by_genome[_genome_index(space, space.decode(key))] = ms
        return {"kind": "column", "column": column, "ms_by_genome": by_genome}
    return {"kind": "column", "column": column, "archs": list(values), "ms": list(values.values())}


def load_prior(spec: str, space) -> Prior:
    """A prior named on the command line: a latency file (``nas latency profile|fit``), or a
    benchmark table's column as ``TABLE.csv:COLUMN``; checked against ``space``.

    Raises:
      LatencyError: a missing or damaged file, a column or arch the table lacks, another space.
    """
    head, sep, column = spec.rpartition(":")
    if sep and head.lower().endswith(".csv"):
        path = Path(head)
        if not path.is_file():
            raise LatencyError(f"prior table {path} does not exist")
        return Prior(spec, _column_prior(path, column, space, spec), space)
    if spec.lower().endswith(".csv"):
        raise LatencyError(f"prior {spec} is a table: name its latency column as {spec}:COLUMN")
    data = read_latency_file(spec)
    check_fewshot_space(data.get("space", {}), space, f"prior {spec}")
    return Prior(spec, {"kind": "file", "data": data}, space)


# --- reading CSVs --------------------------------------------------------------------------------

def _read_csv(path: Path, what: str) -> tuple[list[tuple[int, dict]], list[str]]:
    """(rows with their file line numbers, header) of a CSV with a header line."""
    if not Path(path).is_file():
        raise LatencyError(f"{what} {path} does not exist")
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            rows = [(reader.line_num, row) for row in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise LatencyError(f"{what} {path} is not a readable CSV ({e})") from None
    return rows, header


def _decode(space, text, where: str):
    try:
        return space.decode((text or "").strip())
    except ArchError as e:
        raise LatencyError(f"{where}: {e}") from None


def _positive(text, where: str) -> float:
    try:
        v = float(text)
    except (TypeError, ValueError):
        raise LatencyError(f"{where}: latency {text!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise LatencyError(f"{where}: latency {text!r} must be a positive finite number of ms")
    return v


def read_timings(path, space) -> tuple[list, np.ndarray, list[str]]:
    """(archs, latency_ms, warnings) of a timings CSV (columns ``arch``, ``latency_ms``; others are
    ignored). An arch timed more than once is averaged (with a warning when the timings differ).

    Raises:
      LatencyError: a missing column, a malformed or unknown arch or a latency that is not a
        positive finite number (the line is named), fewer than :data:`MIN_TIMINGS` distinct archs.
    """
    path = Path(path)
    rows, header = _read_csv(path, "timings")
    for col in ("arch", "latency_ms"):
        if col not in header:
            raise LatencyError(f"timings {path} has no column {col!r}; columns: {', '.join(header) or 'none'} "
                               "(write arch,latency_ms)")
    seen: dict[str, list[float]] = {}
    archs: dict[str, object] = {}
    for line, row in rows:
        arch = _decode(space, row["arch"], f"timings {path} line {line}")
        ms = _positive(row["latency_ms"], f"timings {path} line {line}")
        key = space.encode(arch)
        archs.setdefault(key, arch)
        seen.setdefault(key, []).append(ms)
    notes = [f"timings {path}: arch {k} was timed {len(v)} times with different latencies "
             f"({', '.join(f'{x:g}' for x in v)} ms); using their mean" for k, v in seen.items() if len(set(v)) > 1]
    if len(seen) < MIN_TIMINGS:
        raise LatencyError(f"timings {path} has {len(seen)} distinct architecture(s); need at least {MIN_TIMINGS} "
                           "(time the probes from `nas latency probes`)")
    return list(archs.values()), np.asarray([float(np.mean(v)) for v in seen.values()]), notes


def read_archs(path, space) -> list:
    """The archs of a CSV's ``arch`` (or ``arch_str``) column, in order (a bad one names its line)."""
    path = Path(path)
    rows, header = _read_csv(path, "archs")
    col = "arch" if "arch" in header else "arch_str" if "arch_str" in header else None
    if col is None:
        raise LatencyError(f"archs {path} has no column 'arch'; columns: {', '.join(header) or 'none'}")
    return [_decode(space, row[col], f"archs {path} line {line}") for line, row in rows]


# --- the models ----------------------------------------------------------------------------------

def _ridge(X: np.ndarray, y: np.ndarray, alpha: float, weights: np.ndarray | None = None) -> dict:
    """Ridge regression on standardised columns, intercept unpenalised (weighted when given)."""
    w = np.ones(len(y)) if weights is None else weights / weights.mean()
    mu = np.average(X, axis=0, weights=w)
    sd = np.sqrt(np.average((X - mu) ** 2, axis=0, weights=w))
    sd = np.where(sd > 1e-12, sd, 1.0)
    Z = (X - mu) / sd
    ym = float(np.average(y, weights=w))
    A = Z.T @ (Z * w[:, None]) + alpha * np.eye(Z.shape[1])
    coef = np.linalg.solve(A, Z.T @ (w * (y - ym)))
    return {"mu": mu, "sd": sd, "coef": coef, "intercept": ym}


def _ridge_apply(p: dict, X: np.ndarray) -> np.ndarray:
    return ((X - np.asarray(p["mu"])) / np.asarray(p["sd"])) @ np.asarray(p["coef"]) + float(p["intercept"])


class Inputs:
    """Every feature block of a list of archs: priors' ms, FLOPs, gene features, choice counts."""

    def __init__(self, space, archs: Sequence, priors: Sequence[Prior]):
        self.priors = np.stack([p.predict_many(archs) for p in priors], 1) if priors else np.zeros((len(archs), 0))
        self.flops = flops_of(space, archs)
        self.genes = gene_features(space, archs)
        self.counts = choice_counts(space, self.genes)
        self.bases = op_bases(space, archs, self.genes)

    def block(self, name: str, log: bool) -> np.ndarray:
        if name == "priors":
            return np.log(self.priors) if log else self.priors
        if name == "flops":
            f = self.flops[:, None]
            return np.log1p(f) if log else f
        if name == "genes":
            return self.genes
        if name == "counts":
            return self.counts
        raise AssertionError(name)

    def matrix(self, blocks: Sequence[str], log: bool) -> np.ndarray:
        return np.concatenate([self.block(b, log) for b in blocks], axis=1)


#: (name, feature blocks, target) of each ridge candidate, in order of simplicity
RIDGES = (
    ("log-ridge[priors]", ("priors",), "log"),
    ("log-ridge[priors,flops]", ("priors", "flops"), "log"),
    ("log-ridge[priors,flops,genes]", ("priors", "flops", "genes"), "log"),
    ("log-ridge[flops]", ("flops",), "log"),
    ("log-ridge[flops,genes]", ("flops", "genes"), "log"),
    ("rel-ridge[priors,flops,counts]", ("priors", "flops", "counts"), "ms"),
)
#: every candidate family :func:`fit_fewshot_model` chooses between
CANDIDATES = tuple(name for name, _, _ in RIDGES) + ("transfer-additive", "op-costs", "op-transfer")


def _floor(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Predictions kept positive (a linear model can extrapolate below zero)."""
    return np.maximum(pred, 1e-3 * float(np.min(y)))


def fit_ridge(X, y, target: str, alpha: float) -> dict:
    if target == "log":
        return _ridge(X, np.log(y), alpha)
    return _ridge(X, y, alpha, weights=1.0 / y ** 2)  # relative error


def apply_ridge(p: dict, X, target: str) -> np.ndarray:
    out = _ridge_apply(p, X)
    return np.exp(out) if target == "log" else out


def prior_coefficients(space, priors: Sequence[Prior], seed: int) -> np.ndarray:
    """(priors, 1 + d): each prior's additive model over [1, gene features], fitted on the candidate
    pool and divided by its mean latency (so devices of any speed are comparable)."""
    pool = candidate_pool(space, seed)
    phi = np.concatenate([np.ones((len(pool), 1)), gene_features(space, pool)], 1)
    A = phi.T @ phi + 1e-3 * np.eye(phi.shape[1])
    out = []
    for p in priors:
        y = p.predict_many(pool)
        out.append(np.linalg.solve(A, phi.T @ (y / y.mean())))
    return np.asarray(out)


def _transfer(U: np.ndarray, phi: np.ndarray, y: np.ndarray, tau: float, noise: float) -> np.ndarray:
    """Posterior mean of an additive model's coefficients: prior N(s*mean(U), s^2 (cov(U) + tau^2
    diag(mean U^2))), observations with noise ``noise * y``; ``s`` the timings' median ratio to the
    prior mean's predictions."""
    mu = U.mean(0)
    C = (np.cov(U.T, ddof=0) if len(U) > 1 else np.zeros((len(mu), len(mu)))) + tau ** 2 * np.diag(
        np.mean(U ** 2, 0) + 1e-6)
    base = phi @ mu
    s = float(np.median(y / np.where(np.abs(base) > 1e-12, base, 1e-12)))
    m0, C = s * mu, s * s * C
    K = C @ phi.T @ np.linalg.inv(phi @ C @ phi.T + np.diag((noise * y) ** 2))
    return m0 + K @ (y - phi @ m0)


def _huber_weights(r: np.ndarray) -> np.ndarray:
    """Huber's weights of relative residuals ``r``: 1 within :data:`HUBER_K` robust standard
    deviations (the median absolute residual / 0.6745, at least :data:`HUBER_FLOOR`), less beyond."""
    scale = max(float(np.median(np.abs(r))) / 0.6745, HUBER_FLOOR)
    a = np.abs(r) / (HUBER_K * scale)
    return np.where(a <= 1.0, 1.0, 1.0 / np.maximum(a, 1e-12))


def robust_fit(solve, X: np.ndarray, y: np.ndarray, power: float = 0.0,
            iterations: int = HUBER_ITERATIONS) -> np.ndarray:
    """``solve(X, y, weights)`` re-weighted by :func:`_huber_weights` of its relative residuals: one
    timing that no additive model holds (a cell the device runs oddly, a glitch) pulls the costs
    less than squares would let it, which matters with 10 timings. ``power`` (one of
    :data:`OP_WEIGHT_POWERS`) moves the squares from relative error (0) towards absolute error (1):
    each timing's squared relative error is weighted by ``(y / mean y) ** (2 power)``."""
    base = (y / float(np.mean(y))) ** (2.0 * power)
    w = base
    for _ in range(iterations):
        c = solve(X, y, w)
        w = base * _huber_weights(X @ c / y - 1.0)
    return c


def nnls_weighted(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    r = np.sqrt(w) / y
    return nnls(X * r[:, None], y * r)[0]


def _relative_fit(X: np.ndarray, y: np.ndarray, power: float = 0.0) -> np.ndarray:
    """Per-operation costs ``c >= 0`` minimising the (Huber) relative error of ``X @ c`` against
    ``y``, weighted by ``power`` (:func:`robust_fit`; non-negative least squares: an operation never
    makes a network faster)."""
    return robust_fit(nnls_weighted, X, y, power)


def prior_op_costs(space, priors: Sequence[Prior], seed: int) -> dict[str, np.ndarray]:
    """basis name -> (priors, k): each prior's per-operation costs in each of :func:`op_bases`,
    fitted for relative error on the candidate pool, refitted without the archs it misses by more
    than :data:`OP_FIT_KEEP` (a failed measurement, a structure no additive model holds), and
    divided by its mean prediction on the pool (devices of any speed comparable)."""
    pool = candidate_pool(space, seed)
    bases = op_bases(space, pool)
    out = {}
    for name, X in bases.items():
        rows = []
        for p in priors:
            y = p.predict_many(pool)
            keep = np.ones(len(y), bool)
            for _ in range(3):
                c = np.linalg.lstsq(X[keep] / y[keep, None], np.ones(int(keep.sum())), rcond=None)[0]
                pred = X @ c
                keep = np.abs(np.log(np.maximum(pred, 1e-9 * y.max()) / y)) < OP_FIT_KEEP
            rows.append(c / float(np.mean(pred)))
        out[name] = np.asarray(rows)
    return out


def _op_transfer(X: np.ndarray, y: np.ndarray, costs: np.ndarray, lam: float, power: float = 0.0) -> np.ndarray:
    return robust_fit(lambda X, y, w: _op_transfer_weighted(X, y, costs, lam, w), X, y, power)


def _op_transfer_weighted(X: np.ndarray, y: np.ndarray, costs: np.ndarray, lam: float,
                          weights: np.ndarray) -> np.ndarray:
    """Per-operation costs of the target: a mix of the priors' (``costs``, (priors, k)) plus a
    deviation penalised by ``lam`` per cost, relative to the priors' typical size of that cost, so
    few timings fit the mix and move a cost away from it only where the timings insist. Fitted
    for relative error."""
    mix = X @ costs.T  # (n, priors): each prior's prediction, mean ~1 on the pool
    scale = float(np.mean(y)) * (np.abs(costs).mean(0) + 0.01 * float(np.abs(costs).mean(0).max()))
    w = np.sqrt(weights) / y
    A = np.concatenate([np.concatenate([mix, X], 1) * w[:, None],
                        np.concatenate([np.zeros((X.shape[1], len(costs))), np.diag(math.sqrt(lam) / scale)], 1)])
    b = np.concatenate([y * w, np.zeros(X.shape[1])])
    sol = np.linalg.lstsq(A, b, rcond=None)[0]
    return sol[:len(costs)] @ costs + sol[len(costs):]


def _loo(fit_predict, n: int, y: np.ndarray) -> np.ndarray:
    """Each timing's leave-one-out error of log-latency (log predicted / timed)."""
    errs = []
    for i in range(n):
        keep = np.arange(n) != i
        pred = float(fit_predict(keep, i))
        errs.append(math.log(max(pred, 1e-3 * float(np.min(y[keep]))) / y[i]))
    return np.asarray(errs)


def _rms(errors: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(errors))))


def select_model(space, archs: Sequence, y: np.ndarray, priors: Sequence[Prior], seed: int = 0,
                 coefficients: np.ndarray | None = None, op_costs: dict | None = None,
                 candidates: Sequence[str] = CANDIDATES) -> tuple[dict, list, np.ndarray]:
    """(the model's parameters, every configuration's leave-one-out error, the best one's errors):
    every configuration of every family in ``candidates`` (:data:`CANDIDATES`) is scored by its
    leave-one-out mean absolute error of log-latency, and every one within
    :data:`ENSEMBLE_TOLERANCE` of the best is a member, averaged in log space."""
    inputs = Inputs(space, archs, priors)
    n = len(y)
    scores = []
    for name, blocks, target in RIDGES:
        if ("priors" in blocks and not priors) or ("flops" in blocks and inputs.flops is None) or name not in candidates:
            continue
        X = inputs.matrix(blocks, target == "log")
        for alpha in RIDGE_ALPHAS:
            def fp(keep, i, X=X, target=target, alpha=alpha):
                return apply_ridge(fit_ridge(X[keep], y[keep], target, alpha), X[i:i + 1], target)[0]
            scores.append({"model": name, "alpha": alpha, "loo": _loo(fp, n, y)})
    if "op-costs" in candidates:
        for basis, X in inputs.bases.items():
            for power in OP_WEIGHT_POWERS:
                def fp(keep, i, X=X, power=power):
                    return X[i] @ _relative_fit(X[keep], y[keep], power)
                scores.append({"model": "op-costs", "basis": basis, "power": power, "loo": _loo(fp, n, y)})
    if priors and "op-transfer" in candidates:
        op_costs = prior_op_costs(space, priors, seed) if op_costs is None else op_costs
        for basis, X in inputs.bases.items():
            for lam in OP_TRANSFER_LAMS:
                for power in OP_WEIGHT_POWERS:
                    def fp(keep, i, X=X, C=op_costs[basis], lam=lam, power=power):
                        return X[i] @ _op_transfer(X[keep], y[keep], C, lam, power)
                    scores.append({"model": "op-transfer", "basis": basis, "lam": lam, "power": power,
                                   "loo": _loo(fp, n, y)})
    U = None
    if priors and "transfer-additive" in candidates:
        U = prior_coefficients(space, priors, seed) if coefficients is None else coefficients
        phi = np.concatenate([np.ones((n, 1)), inputs.genes], 1)
        for tau in TRANSFER_TAUS:
            for noise in TRANSFER_NOISE:
                def fp(keep, i, tau=tau, noise=noise):
                    return phi[i] @ _transfer(U, phi[keep], y[keep], tau, noise)
                scores.append({"model": "transfer-additive", "tau": tau, "noise": noise, "loo": _loo(fp, n, y)})
    best = min(scores, key=lambda sc: float(np.mean(np.abs(sc["loo"]))))["loo"]
    for sc in scores:
        errors = sc.pop("loo")
        sc["loo_log_mae"] = float(np.mean(np.abs(errors)))
        sc["loo_log_rmse"] = _rms(errors)
    floor = 1e-3 * float(np.min(y))
    # every configuration within ENSEMBLE_TOLERANCE of the best one, averaged in log space with
    # weights (best error / its error)^2: with 10 timings, leave-one-out errors are too noisy to pick
    # one configuration, or one per family, and the weighted average of the plausible ones ranked
    # better than any such pick (bench/RESULTS.md, issue 33)
    top = max(min(sc["loo_log_mae"] for sc in scores), 1e-9)
    members = [{**_member(sc, inputs, y, op_costs, U), "weight": (top / max(sc["loo_log_mae"], top)) ** 2}
               for sc in scores if sc["loo_log_mae"] <= ENSEMBLE_TOLERANCE * top]
    families = list(dict.fromkeys(m["model"] for m in members))
    return {"model": "+".join(families), "members": members, "floor_ms": floor}, scores, best


def _member(sc: dict, inputs: Inputs, y: np.ndarray, op_costs: dict | None, U: np.ndarray | None) -> dict:
    """One configuration of :func:`select_model` refitted on every timing, as stored in the file."""
    name = sc["model"]
    config = {k: v for k, v in sc.items() if k not in ("loo_log_mae", "loo_log_rmse")}
    errors = {"loo_log_mae": sc["loo_log_mae"], "loo_log_rmse": sc["loo_log_rmse"]}
    if name == "op-costs":
        return {**config, **errors, "coef": _relative_fit(inputs.bases[sc["basis"]], y, sc["power"]).tolist()}
    if name == "op-transfer":
        coef = _op_transfer(inputs.bases[sc["basis"]], y, op_costs[sc["basis"]], sc["lam"], sc["power"])
        return {**config, **errors, "coef": coef.tolist()}
    if name == "transfer-additive":
        phi = np.concatenate([np.ones((len(y), 1)), inputs.genes], 1)
        return {**config, **errors, "coef": _transfer(U, phi, y, sc["tau"], sc["noise"]).tolist()}
    _, blocks, target = next(r for r in RIDGES if r[0] == name)
    p = fit_ridge(inputs.matrix(blocks, target == "log"), y, target, sc["alpha"])
    return {**config, **errors, "blocks": list(blocks), "target": target,
            **{k: np.asarray(v).tolist() for k, v in p.items()}}


class FewShotLatencyModel:
    """A latency model of a device fitted on timings taken there (:func:`fit_fewshot_model`);
    ``predict(arch) -> ms`` like a table."""

    def __init__(self, data: dict, space):
        self.data = data
        self.space = space
        try:
            self.priors = [Prior(p["source"], {k: v for k, v in p.items() if k != "source"}, space)
                           for p in data["priors"]]
            self.params = data["model"]
            for member in self.params["members"]:
                if member["model"] not in CANDIDATES:
                    raise KeyError(member["model"])
        except (KeyError, TypeError) as e:
            raise LatencyError(f"few-shot latency file is damaged or from another version ({e!r}); re-fit it "
                               "with `nas latency fit --timings`") from None

    @property
    def batch(self) -> int:
        return int(self.data.get("batch", 1))

    @property
    def options(self) -> dict:
        return dict(self.data.get("options") or {})

    @property
    def device(self) -> dict | None:
        return self.data.get("device")

    @property
    def reference(self) -> dict | None:
        """None: timings taken elsewhere record no level of this machine."""
        return None

    def predict_many(self, archs: Sequence) -> np.ndarray:
        archs = list(archs)
        if not archs:
            return np.zeros(0)
        return self.predict_inputs(Inputs(self.space, archs, self.priors))

    def predict_inputs(self, inputs: Inputs) -> np.ndarray:
        """:meth:`predict_many` of archs whose :class:`Inputs` (with this model's priors) are given:
        a benchmark that predicts the same archs with many models computes them once."""
        floor = float(self.params["floor_ms"])
        logs, weights = [], []
        for p in self.params["members"]:
            weights.append(float(p.get("weight", 1.0)))
            if p["model"] == "transfer-additive":
                phi = np.concatenate([np.ones((len(inputs.genes), 1)), inputs.genes], 1)
                out = phi @ np.asarray(p["coef"])
            elif p["model"] in ("op-costs", "op-transfer"):
                out = inputs.bases[p["basis"]] @ np.asarray(p["coef"])
            else:
                out = apply_ridge(p, inputs.matrix(p["blocks"], p["target"] == "log"), p["target"])
            logs.append(np.log(np.maximum(out, floor)))
        return np.exp(np.average(logs, axis=0, weights=weights))

    def predict(self, arch) -> float:
        return float(self.predict_many([arch])[0])

    def save(self, path) -> None:
        atomic_write_json(path, self.data)


FORMATS.register(FEWSHOT_FORMAT, FewShotLatencyModel)


def fit_fewshot_model(space, archs: Sequence, latency_ms, priors: Sequence[Prior] = (), *, seed: int = 0,
                      options: dict | None = None, runtime: dict | None = None, device: dict | None = None,
                      batch: int = 1, candidates: Sequence[str] = CANDIDATES) -> FewShotLatencyModel:
    """Fits the few-shot model of a device on its timings ``latency_ms`` of ``archs`` (at least
    :data:`MIN_TIMINGS`, positive and finite), choosing among :data:`CANDIDATES` by leave-one-out."""
    y = np.asarray(latency_ms, np.float64)
    if len(archs) < MIN_TIMINGS or len(archs) != len(y):
        raise LatencyError(f"{len(archs)} timed architectures: need at least {MIN_TIMINGS}")
    if not np.all(np.isfinite(y) & (y > 0)):
        raise LatencyError("latencies must be positive finite numbers of ms")
    archs = list(archs)
    unknown = sorted(set(candidates) - set(CANDIDATES))
    if unknown or not candidates:
        raise LatencyError(f"unknown model families {unknown}; known: {', '.join(CANDIDATES)}")
    U = prior_coefficients(space, priors, seed) if priors and "transfer-additive" in candidates else None
    C = prior_op_costs(space, priors, seed) if priors and "op-transfer" in candidates else None
    params, scores, loo = select_model(space, archs, y, priors, seed, U, C, candidates)
    left_out = []
    # a timing far from what every other timing predicts (a unit slip, a failed run) is left out,
    # one at a time, while enough remain
    while len(y) - 1 >= MIN_TIMINGS + 1 and len(left_out) < max(1, len(y) // 5):
        i = int(np.argmax(np.abs(loo)))
        rest = np.delete(np.abs(loo), i)
        if not (abs(loo[i]) > OUTLIER_LOG and abs(loo[i]) > 2 * float(np.max(rest))):
            break
        left_out.append({"arch": space.encode(archs[i]), "latency_ms": float(y[i]),
                         "predicted_ms": float(y[i] * math.exp(loo[i]))})
        archs, y = archs[:i] + archs[i + 1:], np.delete(y, i)
        params, scores, loo = select_model(space, archs, y, priors, seed, U, C, candidates)
    model = FewShotLatencyModel({
        "format": FEWSHOT_FORMAT,
        "version": VERSION,
        "space": fewshot_spec(space),
        "options": jsonable(options or {}),
        "batch": batch,
        "runtime": runtime or {"name": EXTERNAL_RUNTIME},
        "device": device or {"platform": EXTERNAL_RUNTIME, "kind": "unknown"},
        "priors": [p.to_json() for p in priors],
        "timings": {"archs": [space.encode(a) for a in archs], "latency_ms": y.tolist()},
        "model": params,
        "cross_validation": scores,
        "left_out": left_out,
    }, space)
    return model


def write_probes(space, archs: Sequence, out_dir, *, files: Sequence[dict] = (), blobs: dict | None = None,
                 priors: Sequence[Prior] = ()) -> Path:
    """Writes ``out_dir/probes.csv`` (``probe,arch``, ``flops`` where the space counts them, each
    probe's model file names from ``files``, each prior's predicted ms) and the model files
    (``blobs``: file name -> bytes)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for fname, blob in (blobs or {}).items():
        atomic_write_bytes(out_dir / fname, blob)
    flops = flops_of(space, archs)
    predicted = [p.predict_many(archs) for p in priors]
    file_cols = list(files[0]) if files else []
    header = ["probe", "arch"] + (["flops"] if flops is not None else []) + file_cols
    header += [f"prior{i}_ms" for i in range(len(priors))]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for i, a in enumerate(archs):
        row = [probe_name(i, len(archs)), space.encode(a)] + ([int(flops[i])] if flops is not None else [])
        row += [files[i][c] for c in file_cols] + [f"{p[i]:.6g}" for p in predicted]
        writer.writerow(row)
    path = out_dir / "probes.csv"
    atomic_write_text(path, buf.getvalue())
    return path


def probe_name(i: int, n: int) -> str:
    """``probe-07``: the name of row ``i`` of ``n`` (zero-padded so the files sort in row order)."""
    return f"probe-{i:0{max(2, len(str(n - 1)))}d}"
