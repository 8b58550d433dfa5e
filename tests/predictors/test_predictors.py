"""Conformance suite over every registered predictor, plus the ranking metrics."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import predictors
from predictors import (
    cross_validate,
    get_predictor,
    kendall_tau,
    load_predictor,
    predictor_names,
    rmse,
    spearman,
)
from search_spaces.base import ArchError, Gene, SearchSpace


# --- a toy space, so these tests depend on no real one --------------------------------------
@dataclasses.dataclass(frozen=True)
class ToyArch:
    genome: tuple[int, ...]


class ToySpace(SearchSpace):
    """Six genes; canonical strings like ``k3-k5-w8-w32-relu-d2``; FLOPs/params for pretraining."""

    name = "toy"
    _genes = (
        Gene("k1", (3, 5, 7)),
        Gene("k2", (3, 5, 7)),
        Gene("w1", (8, 16, 24, 32)),
        Gene("w2", (8, 16, 24, 32)),
        Gene("act", ("relu", "hswish")),
        Gene("d", (1, 2, 3, 4)),
    )
    _prefix = ("k", "k", "w", "w", "", "d")

    @property
    def genes(self):
        return self._genes

    def from_genome(self, genome):
        return ToyArch(tuple(int(g) for g in genome))

    def to_genome(self, arch):
        return np.asarray(arch.genome)

    def encode(self, arch):
        return "-".join(f"{p}{g.choices[i]}" for p, g, i in zip(self._prefix, self._genes, arch.genome))

    def decode(self, text):
        parts = text.split("-")
        if len(parts) != len(self._genes):
            raise ArchError(f"{text!r} has {len(parts)} fields; expected {len(self._genes)}")
        genome = []
        for part, p, g in zip(parts, self._prefix, self._genes):
            choices = [f"{p}{c}" for c in g.choices]
            if part not in choices:
                raise ArchError(f"{g.name}: {part!r} is not one of {', '.join(choices)}")
            genome.append(choices.index(part))
        return ToyArch(tuple(genome))

    def values(self, arch):
        return {g.name: g.choices[i] for g, i in zip(self._genes, arch.genome)}

    def flops(self, arch):
        v = self.values(arch)
        return v["d"] * (v["k1"] ** 2 * v["w1"] + v["k2"] ** 2 * v["w2"]) * 100

    def params(self, arch):
        v = self.values(arch)
        return v["d"] * (v["w1"] * v["w2"] + v["k1"] * v["k2"]) * 10


def toy_accuracy(space: ToySpace, arch) -> float:
    """A known, mostly monotone target with one interaction (what a predictor must rank)."""
    v = space.values(arch)
    size = np.log(space.flops(arch))
    return float(0.5 + 0.04 * size + 0.03 * (v["act"] == "hswish") + 0.002 * v["w1"] * v["d"] / 4 - 0.004 * v["k2"])


def toy_data(n: int, seed: int):
    space = ToySpace()
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(n)]
    X = np.stack([space.features(a) for a in archs]).astype(np.float32)
    y = np.array([toy_accuracy(space, a) for a in archs])
    return X, y


TRAIN = toy_data(100, seed=1)
TEST = toy_data(100, seed=2)
ORDER = ["ridge", "rbf", "gp", "gbt", "rf", "extra_trees", "mlp", "ensemble", "auto"]
EXPECTED = set(ORDER)
TAU_THRESHOLD = 0.6


@pytest.fixture(scope="module")
def fitted():
    return {name: get_predictor(name, seed=0).fit(*TRAIN) for name in predictor_names()}


def test_registry_lists_every_model():
    assert set(predictor_names()) == EXPECTED


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="known predictors: " + ", ".join(ORDER)):
        get_predictor("xgboost")


def test_unknown_option_lists_known_options():
    with pytest.raises(ValueError, match="known options: .*members"):
        get_predictor("mlp", layers=3)


@pytest.mark.parametrize("name", predictor_names())  # the conformance suite: every registered predictor
def test_ranks_held_out_data(fitted, name):
    pred = fitted[name].predict(TEST[0])
    assert pred.shape == (len(TEST[1]),) and np.all(np.isfinite(pred))
    assert kendall_tau(TEST[1], pred) >= TAU_THRESHOLD


@pytest.mark.parametrize("name", predictor_names())  # the conformance suite: every registered predictor
def test_deterministic_per_seed(fitted, name):
    again = get_predictor(name, seed=0).fit(*TRAIN)
    np.testing.assert_array_equal(again.predict(TEST[0]), fitted[name].predict(TEST[0]))


def test_mlp_seed_changes_the_fit(fitted):
    other = get_predictor("mlp", seed=1).fit(*TRAIN)
    assert not np.array_equal(other.predict(TEST[0]), fitted["mlp"].predict(TEST[0]))


@pytest.mark.parametrize("name", predictor_names())  # the conformance suite: every registered predictor
def test_save_load_gives_identical_predictions(fitted, name, tmp_path):
    fitted[name].save(tmp_path / name)
    loaded = load_predictor(tmp_path / name)
    assert loaded.name == name
    np.testing.assert_array_equal(loaded.predict(TEST[0]), fitted[name].predict(TEST[0]))
    if fitted[name].supports_std:
        np.testing.assert_array_equal(loaded.predict_std(TEST[0]), fitted[name].predict_std(TEST[0]))


@pytest.mark.parametrize("name", predictor_names())  # the conformance suite: every registered predictor
def test_state_is_a_value_that_rebuilds_the_predictor(fitted, name):
    meta, arrays = fitted[name].to_state()
    json.dumps(meta)  # the metadata is JSON, the arrays are numpy arrays
    assert all(isinstance(a, np.ndarray) for a in arrays.values())
    again = predictors.from_state(meta, arrays)
    np.testing.assert_array_equal(again.predict(TEST[0]), fitted[name].predict(TEST[0]))


def test_registering_a_taken_name_is_an_error():
    class AnotherRidge(type(get_predictor("ridge"))):
        name = "ridge"

    with pytest.raises(ValueError, match="registered already"):
        predictors.register_predictor(AnotherRidge)
    assert predictor_names() == ORDER


@pytest.mark.parametrize("name", predictor_names())  # the conformance suite: every registered predictor
def test_predict_std_where_supported(fitted, name):
    p = fitted[name]
    if p.supports_std:
        std = p.predict_std(TEST[0])
        assert std.shape == (len(TEST[1]),) and np.all(np.isfinite(std)) and np.all(std >= 0)
        assert std.max() > 0
    else:
        with pytest.raises(NotImplementedError, match="predictors that do: gp, rf, extra_trees, mlp"):
            p.predict_std(TEST[0])


def test_gp_std_is_small_at_training_points_and_larger_away():
    X, y = TRAIN
    gp = get_predictor("gp").fit(X[:50], y[:50])
    assert gp.predict_std(X[:50]).mean() < gp.predict_std(X[50:]).mean()


@pytest.fixture(scope="module")
def pretrain():
    return predictors.random_pretrain_set(ToySpace(), 500, seed=0)


@pytest.mark.parametrize("name", predictor_names())  # the conformance suite: every registered predictor
def test_every_model_pretrains_saves_and_reloads(name, pretrain, tmp_path):
    p = get_predictor(name, seed=0).fit(TRAIN[0][:30], TRAIN[1][:30], pretrain=pretrain)
    pred = p.predict(TEST[0])
    assert np.all(np.isfinite(pred))
    # natively pretrained models keep their own network; the others carry the stat network
    assert (p.stat_features is None) == p.native_pretrain
    p.save(tmp_path / name)
    np.testing.assert_array_equal(load_predictor(tmp_path / name).predict(TEST[0]), pred)
    if name != "mlp":  # the stat features changed the fit: pretraining is not a no-op
        plain = get_predictor(name, seed=0).fit(TRAIN[0][:30], TRAIN[1][:30]).predict(TEST[0])
        assert not np.allclose(plain, pred)


def test_stat_features_learn_the_statistics(pretrain):
    """The separate network predicts log FLOPs of unseen archs (what the appended columns hold)."""
    from predictors.pretrain import StatFeatures, arch_stats

    space = ToySpace()
    feats = StatFeatures(seed=0).fit(*pretrain)
    rng = np.random.default_rng(7)
    archs = [space.sample(rng) for _ in range(200)]
    X = np.stack([space.features(a) for a in archs]).astype(np.float32)
    out = feats.transform(X)
    assert out.shape == (200, X.shape[1] + 2)
    np.testing.assert_array_equal(out[:, : X.shape[1]], X)
    assert kendall_tau(arch_stats(space, archs)[:, 0], out[:, X.shape[1]]) > 0.85


def test_ridge_pretraining_helps_with_few_samples(pretrain):
    """A linear model cannot form FLOPs (a product of genes) from one-hot genes; the learnt
    statistics hand it that feature, which ranks better with 16 labels."""
    X, y = TRAIN
    taus = {}
    for label, extra in (("plain", None), ("pretrained", pretrain)):
        p = get_predictor("ridge", seed=0).fit(X[:16], y[:16], pretrain=extra)
        taus[label] = kendall_tau(TEST[1], p.predict(TEST[0]))
    assert taus["pretrained"] > taus["plain"] + 0.05, taus


def test_mlp_pretraining_helps_with_few_samples(pretrain):
    """FBNetV3-style: with 16 labels, pretraining on FLOPs/params of 500 free archs ranks better."""
    X, y = TRAIN
    taus = {}
    for label, extra in (("plain", None), ("pretrained", pretrain)):
        p = get_predictor("mlp", seed=0).fit(X[:16], y[:16], pretrain=extra)
        taus[label] = kendall_tau(TEST[1], p.predict(TEST[0]))
    assert taus["pretrained"] > taus["plain"], taus


def test_mlp_does_not_recompile_for_nearby_sizes():
    """Padded row buckets: the training loop and the forward of 70 and 75 rows are one program each."""
    import jax

    from kernels.tests.compilations import count_compilations
    import predictors.ensemble_mlp as engine

    X, y = TRAIN
    params = engine.init_members(jax.random.split(jax.random.key(0), 5), (X.shape[1], 64, 64, 1))

    def fit_rows(n):
        Xp, Yp = engine.pad_rows(X[:n]), engine.pad_rows(y[:n].astype(np.float32)[:, None])
        weights = np.pad(np.ones((5, n), np.float32), ((0, 0), (0, len(Xp) - n)))
        return Xp, Yp, weights

    def run(Xp, Yp, weights):
        fitted = engine.train(params, Xp, Yp, weights, steps=400, lr=3e-3, weight_decay=1e-2)
        return engine.predict_members(fitted, Xp)

    run(*fit_rows(70))
    inputs = fit_rows(75)
    with count_compilations() as c:
        run(*inputs)
    assert c.n == 0


def test_mlp_fits_of_other_feature_widths_share_one_program():
    """A search fits its accuracy model on fewer columns than its latency model: the columns are
    padded (on zero first-layer weights), so the second width compiles nothing, and the fit
    predicts as the unpadded network it stores."""
    from kernels.tests.compilations import count_compilations
    import predictors.ensemble_mlp as engine

    X, y = TRAIN
    narrow = get_predictor("mlp", seed=3).fit(X[:70, :4], y[:70])
    narrow.predict(X[:70, :4])
    with count_compilations() as c:
        wide = get_predictor("mlp", seed=3).fit(X[:75], y[:75])
        wide.predict(X[:75])
    assert c.n == 0
    assert wide._params[0][0].shape[1] == X.shape[1] and narrow._params[0][0].shape[1] == 4
    plain = np.mean([engine.forward_numpy([(w[m], b[m]) for w, b in wide._params], X[:75])[:, 0]
                     for m in range(wide.config["members"])], axis=0)
    np.testing.assert_allclose(wide.predict(X[:75]), wide.to_target(plain), rtol=1e-5, atol=1e-5)


def test_bad_inputs_say_what_to_do(fitted):
    with pytest.raises(ValueError, match="not fitted; call fit"):
        get_predictor("ridge").predict(TEST[0])
    with pytest.raises(ValueError, match="fitted on"):
        fitted["ridge"].predict(TEST[0][:, :5])
    with pytest.raises(ValueError, match="one target per row"):
        get_predictor("ridge").fit(TRAIN[0], TRAIN[1][:10])
    with pytest.raises(ValueError, match="non-finite"):
        get_predictor("ridge").fit(TRAIN[0], np.full(len(TRAIN[1]), np.nan))


def test_load_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a saved predictor"):
        load_predictor(tmp_path / "nothing")


# --- metrics ------------------------------------------------------------------------------
def test_metrics_on_known_rankings():
    y = np.array([1.0, 2.0, 3.0, 4.0])
    assert kendall_tau(y, y * 10) == pytest.approx(1.0)
    assert kendall_tau(y, -y) == pytest.approx(-1.0)
    assert spearman(y, y**3) == pytest.approx(1.0)
    assert kendall_tau(y, np.zeros(4)) == 0.0  # constant predictions rank nothing
    assert rmse(y, y + 2.0) == pytest.approx(2.0)
    assert predictors.all_metrics(y, y) == {"kendall_tau": 1.0, "spearman": 1.0, "rmse": 0.0, "n": 4}


def test_cross_validate_reports_means_and_is_deterministic():
    X, y = TRAIN
    a = cross_validate("ridge", X, y, k=5, seed=0)
    b = cross_validate("ridge", X, y, k=5, seed=0)
    assert a == b
    assert {"kendall_tau", "spearman", "rmse", "kendall_tau_std", "folds"} <= set(a)
    assert len(a["folds"]) == 5 and sum(f["n"] for f in a["folds"]) == len(y)
    with pytest.raises(ValueError, match="too few"):
        cross_validate("ridge", X[:6], y[:6], k=5)


# --- every predictor on every registered space's features -------------------------------------
def space_feature_sets():
    """(space, kind) for every registered space and both feature kinds (one kind where they agree)."""
    from search_spaces import get_space, space_names

    out = []
    for name in space_names():
        space = get_space(name)
        out.append((name, "structure"))
        if space.structure_feature_names() != space.feature_names():
            out.append((name, "onehot"))
    return out


def space_data(name: str, kind: str, n: int = 30, seed: int = 0):
    """Features of ``n`` random archs of space ``name`` and a smooth synthetic target of them."""
    from predictors.data import ArchEncoder

    encoder = ArchEncoder(name, features=kind)
    rng = np.random.default_rng(seed)
    X = np.stack([encoder.encode(encoder.space.sample(rng)) for _ in range(2 * n)])
    assert X.shape[1] == len(encoder.feature_names()) and np.all(np.isfinite(X))
    w = np.random.default_rng(99).normal(size=X.shape[1])
    y = np.tanh(X @ w / np.sqrt(X.shape[1])) + 0.1 * (X @ w) ** 2 / X.shape[1]
    return (X[:n], y[:n]), X[n:]


@pytest.mark.parametrize("space_kind", space_feature_sets(), ids=lambda sk: f"{sk[0]}-{sk[1]}")
@pytest.mark.parametrize("name", predictor_names())
def test_every_predictor_fits_every_space(name, space_kind, tmp_path):
    (X, y), X_new = space_data(*space_kind)
    p = get_predictor(name, seed=0).fit(X, y)
    pred = p.predict(X_new)
    assert pred.shape == (len(X_new),) and np.all(np.isfinite(pred))
    np.testing.assert_array_equal(get_predictor(name, seed=0).fit(X, y).predict(X_new), pred)
    p.save(tmp_path / name)
    loaded = load_predictor(tmp_path / name)
    np.testing.assert_array_equal(loaded.predict(X_new), pred)
    if p.supports_std:
        std = p.predict_std(X_new)
        assert np.all(np.isfinite(std)) and np.all(std >= 0)
        np.testing.assert_array_equal(loaded.predict_std(X_new), std)


# --- rank targets -------------------------------------------------------------------------
def test_rank_transform_is_monotone_and_exact_on_the_training_targets():
    from predictors.targets import RankTransform, normal_scores

    y = np.array([3.0, 1.0, 2.0, 2.0, 10.0, 0.5])
    t = RankTransform.fit(y)
    np.testing.assert_allclose(t.forward(y), normal_scores(y))
    np.testing.assert_allclose(t.inverse(t.forward(y)), y)
    z = np.linspace(-6, 6, 241)  # far beyond the knots: extrapolated, never clamped
    back = t.inverse(z)
    assert np.all(np.diff(back) > 0)
    assert back[0] < y.min() and back[-1] > y.max()
    assert normal_scores(y)[2] == normal_scores(y)[3]  # ties share a score


@pytest.mark.parametrize("name", ["gp", "rf"])
def test_rank_targets_round_trip_and_keep_units(name, tmp_path):
    X, y = TRAIN
    p = get_predictor(name, seed=0, targets="rank").fit(X, y * 100)
    pred = p.predict(TEST[0])
    assert kendall_tau(TEST[1], pred) >= TAU_THRESHOLD
    assert 0.5 * 100 * TEST[1].min() < np.median(pred) < 2 * 100 * TEST[1].max()  # target units, not scores
    p.save(tmp_path / name)
    loaded = load_predictor(tmp_path / name)
    assert loaded.targets == "rank"
    np.testing.assert_array_equal(loaded.predict(TEST[0]), pred)
    np.testing.assert_array_equal(loaded.predict_std(TEST[0]), p.predict_std(TEST[0]))


@pytest.mark.parametrize("name", ["ridge", "ensemble", "auto"])
def test_state_without_targets_is_a_standard_fit(fitted, name):
    """Files saved before the option existed have no ``targets``: they fitted the targets as they were.
    ``ensemble`` and ``auto`` map their members' targets themselves and keep that map in their own
    state, so they rebuild from the model's state and config alone too (as the learned latency model
    stores them)."""
    meta, arrays = fitted[name].to_state()
    del meta["targets"]
    again = predictors.from_state(meta, arrays)
    assert again.targets == "standard"
    np.testing.assert_array_equal(again.predict(TEST[0]), fitted[name].predict(TEST[0]))


def test_unknown_targets_option_says_what_is_allowed():
    with pytest.raises(ValueError, match="targets 'log' is not one of standard, rank"):
        get_predictor("gp", targets="log")


# --- ensemble and auto ---------------------------------------------------------------------
def test_greedy_selection_starts_from_the_best_member_and_weights_sum_to_one():
    from predictors.metrics import kfold_indices

    rng = np.random.default_rng(0)
    y = rng.normal(size=60)
    folds = kfold_indices(60, 5, 0)
    good, noisy, bad = y + 0.3 * rng.normal(size=60), y + 1.0 * rng.normal(size=60), rng.normal(size=60)
    w = predictors.select_weights({"bad": bad, "noisy": noisy, "good": good}, y, folds)
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["good"] == max(w.values()) and w["bad"] == 0.0
    assert predictors.select_weights({"a": y, "b": y}, y, folds) == {"a": 1.0, "b": 0.0}  # ties: the first


def test_ensemble_with_given_weights_skips_cross_validation():
    X, y = TRAIN
    e = get_predictor("ensemble", seed=0, members=["ridge", "gp"], weights={"ridge": 1, "gp": 3},
                      member_targets="standard").fit(X, y)
    assert e.weights == {"ridge": 0.25, "gp": 0.75} and e.scores == {}
    parts = [get_predictor(m, seed=0).fit(X, y).predict(TEST[0]) for m in ("ridge", "gp")]
    np.testing.assert_allclose(e.predict(TEST[0]), 0.25 * parts[0] + 0.75 * parts[1])


@pytest.mark.parametrize("config, message", [
    ({"members": []}, "at least one member"),
    ({"members": ["gp", "auto"]}, "cannot be a member"),
    ({"members": ["gp", "xgb"]}, "unknown predictor 'xgb'"),
    ({"members": ["gp"], "weights": {"rf": 1.0}}, "name only members"),
    ({"members": ["gp"], "weights": {"gp": -1.0}}, "non-negative"),
    ({"members": ["gp"], "member_targets": "log"}, "targets 'log' is not one of standard, rank"),
])
def test_bad_ensemble_config_says_what_is_wrong(config, message):
    with pytest.raises(ValueError, match=message):
        get_predictor("ensemble", **config)


def test_auto_considers_the_new_models_and_the_ensemble(fitted):
    auto = fitted["auto"]
    assert {"rf", "extra_trees", "ensemble"} <= set(auto.scores)
    ensemble = auto.scores["ensemble"]
    assert sum(ensemble["weights"].values()) == pytest.approx(1.0)
    best_single = max(v["kendall_tau"] for k, v in auto.scores.items() if k != "ensemble")
    assert ensemble["kendall_tau"] >= best_single  # greedy selection starts from the best single model
    chosen = auto.chosen.name
    assert auto.scores[chosen]["kendall_tau"] == max(v["kendall_tau"] for v in auto.scores.values())


def test_auto_that_chose_the_ensemble_saves_and_reloads(tmp_path):
    X, y = TRAIN
    auto = get_predictor("auto", seed=0, candidates=["ridge", "gbt", "ensemble"]).fit(X, y)
    # ridge and gbt rank this target differently well; force the ensemble to be checked either way
    assert set(auto.scores) == {"ridge", "gbt", "ensemble"}
    auto.save(tmp_path / "auto")
    np.testing.assert_array_equal(load_predictor(tmp_path / "auto").predict(TEST[0]), auto.predict(TEST[0]))
    with pytest.raises(ValueError, match="combines its other candidates"):
        get_predictor("auto", candidates=["ensemble"])


def test_mlp_fit_compiles_nothing_for_another_row_count_of_its_bucket():
    """A whole fit (bootstrap weights, training, prediction) of 70 rows and then 75 rows: the second
    compiles nothing. Drawing the weights at the real rows' shape compiled anew for every fold of a
    cross-validation and every iteration of a search."""
    import jax

    from kernels.tests.compilations import count_compilations

    X, y = TRAIN
    get_predictor("mlp", seed=0).fit(X[:70], y[:70]).predict(TEST[0])
    with count_compilations() as c:
        p = get_predictor("mlp", seed=1).fit(X[:75], y[:75])
        p.predict(TEST[0])
    assert c.n == 0
    w = np.asarray(p._weights(jax.random.key(0), 128, 75))
    assert w.shape == (5, 128) and np.all(w[:, 75:] == 0) and np.allclose(w[:, :75].mean(1), 1.0)


@pytest.mark.parametrize("name", ["auto", "ensemble"])
def test_selection_refits_the_choice_without_cross_validating(name, monkeypatch):
    """``selection()`` makes a fresh predictor fit what this one chose by cross-validation; with it
    nothing is cross-validated, and on the same data it predicts as the one that chose."""
    import predictors.auto as auto_module
    import predictors.ensemble as ensemble_module

    X, y = TRAIN
    kw = {"candidates": ["ridge", "gbt", "ensemble"]} if name == "auto" else {"members": ["ridge", "gbt"]}
    chooser = get_predictor(name, seed=0, **kw).fit(X, y)
    chosen = chooser.selection()
    assert chosen and json.loads(json.dumps(chosen)) == chosen  # JSON-able: it goes in predictor.json

    def no_cv(*args, **kwargs):
        raise AssertionError("cross-validated again")

    monkeypatch.setattr(auto_module, "out_of_fold_many", no_cv)
    monkeypatch.setattr(ensemble_module, "out_of_fold_many", no_cv)
    again = get_predictor(name, seed=0, **kw, **chosen).fit(X, y)
    np.testing.assert_allclose(again.predict(TEST[0]), chooser.predict(TEST[0]))
    assert again.selection() == chosen
    # on other data it refits the same choice
    other = get_predictor(name, seed=1, **kw, **chosen).fit(X[:60], y[:60])
    assert other.selection() == chosen
    assert get_predictor("gp").fit(X, y).selection() == {}


def test_auto_choice_must_name_a_predictor():
    with pytest.raises(ValueError, match="unknown predictor 'nope'"):
        get_predictor("auto", choice={"name": "nope", "options": {}})
    with pytest.raises(ValueError, match="must be"):
        get_predictor("auto", choice="gp")
