"""``nas predictor fit/evaluate`` through CliRunner: round trips and one-line errors with exit 2."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from nas_cli.main import app
from search_spaces.base import SPACES, SpaceEntry
from test_predictors import ToySpace, toy_accuracy

SPACE = "toy-predictor-test"
runner = CliRunner()


def write_csv(path, header, rows):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def arch_rows(n, seed):
    space = ToySpace()
    rng = np.random.default_rng(seed)
    archs = [space.sample(rng) for _ in range(n)]
    return [[space.encode(a), f"{toy_accuracy(space, a):.6f}", i] for i, a in enumerate(archs)]


def generic_rows(n, seed):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k, w, act = rng.choice([3, 5, 7]), rng.choice([16, 32, 64]), rng.choice(["relu", "hswish"])
        acc = 0.5 + 0.02 * k + 0.003 * w + 0.05 * (act == "hswish") + 0.002 * rng.normal()
        rows.append([k, w, act, f"run{i}", f"{acc:.6f}"])
    return rows


GENERIC_HEADER = ["kernel", "width", "act", "run_id", "acc"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Registers the toy space for this module's tests; writes train/test CSVs of both kinds and fits a
    model on each."""
    d = tmp_path_factory.mktemp("predictor_cli")
    with SPACES.scoped(SPACE, SpaceEntry(ToySpace)):
        out = {
            "arch_train": write_csv(d / "arch_train.csv", ["arch", "accuracy", "id"], arch_rows(60, 1)),
            "arch_test": write_csv(d / "arch_test.csv", ["arch", "accuracy", "id"], arch_rows(40, 2)),
            "gen_train": write_csv(d / "gen_train.csv", GENERIC_HEADER, generic_rows(60, 1)),
            "gen_test": write_csv(d / "gen_test.csv", GENERIC_HEADER, generic_rows(40, 2)),
            "dir": d,
        }
        r = runner.invoke(app, ["predictor", "fit", str(out["arch_train"]), "--target", "accuracy",
                                "--model", "ridge", "--out", str(d / "arch_model"), "--json"])
        assert r.exit_code == 0, r.output
        out["arch_report"] = json.loads(r.stdout)
        r = runner.invoke(app, ["predictor", "fit", str(out["gen_train"]), "--target", "acc", "--ignore", "run_id",
                                "--model", "gp", "--out", str(d / "gen_model")])
        assert r.exit_code == 0, r.output
        out["gen_output"] = r.stdout
        yield out


def evaluate_json(model, data, target):
    r = runner.invoke(app, ["predictor", "evaluate", str(model), str(data), "--target", target, "--json"])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_arch_table_round_trip_detects_the_space(files):
    report = files["arch_report"]
    assert report["encoding"] == f"arch:{SPACE}"
    assert set(report["holdout"]) == {"kendall_tau", "spearman", "rmse", "n"}
    assert {"kendall_tau", "spearman", "rmse", "k"} <= set(report["cv"])
    metrics = evaluate_json(files["dir"] / "arch_model", files["arch_test"], "accuracy")
    assert list(metrics) == ["kendall_tau", "spearman", "rmse", "n"]
    assert metrics["n"] == 40 and metrics["kendall_tau"] > 0.6


def test_generic_table_round_trip(files):
    assert "held-out" in files["gen_output"] and "5-fold CV" in files["gen_output"]
    metrics = evaluate_json(files["dir"] / "gen_model", files["gen_test"], "acc")
    assert list(metrics) == ["kendall_tau", "spearman", "rmse", "n"]
    assert metrics["kendall_tau"] > 0.6


def test_fit_auto_and_explicit_space(files):
    out = files["dir"] / "auto_model"
    r = runner.invoke(app, ["predictor", "fit", str(files["arch_train"]), "--target", "accuracy", "--space", SPACE,
                            "--folds", "3", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["model"] == "auto" and report["chosen"] in report["candidates"]
    assert evaluate_json(out, files["arch_test"], "accuracy")["kendall_tau"] > 0.5


@pytest.mark.parametrize("model", ["mlp", "gp"])
def test_fit_with_pretraining(files, model):
    out = files["dir"] / f"{model}_pre"
    r = runner.invoke(app, ["predictor", "fit", str(files["arch_train"]), "--target", "accuracy", "--model", model,
                            "--pretrain-samples", "200", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["holdout"]["kendall_tau"] > 0.3
    # the saved model carries its pretraining: evaluate needs nothing else
    assert evaluate_json(out, files["arch_test"], "accuracy")["kendall_tau"] > 0.3


def _bad(files, name):
    d = files["dir"]
    header = ["arch", "accuracy", "id"]
    good = arch_rows(3, 5)
    cases = {
        # name: (command after "predictor", text the one-line error must contain)
        "missing file": (["fit", str(d / "nope.csv"), "--target", "accuracy"], "no such file"),
        "empty file": (["fit", str(_empty(d)), "--target", "accuracy"], "the file is empty"),
        "header only": (["fit", str(write_csv(d / "hdr.csv", header, [])), "--target", "accuracy"], "no data rows"),
        "missing target": (["fit", str(files["arch_train"]), "--target", "top1"], "no column 'top1'"),
        "NaN target": (["fit", str(write_csv(d / "nan.csv", header, good[:1] + [[good[1][0], "nan", 1]])),
                        "--target", "accuracy"], "line 3, column 'accuracy' is nan"),
        "text target": (["fit", str(write_csv(d / "txt.csv", header, good[:1] + [[good[1][0], "high", 1]])),
                         "--target", "accuracy"], "'high' is not a number"),
        "ragged row": (["fit", str(write_csv(d / "rag.csv", header, good[:1] + [[good[1][0]]])),
                        "--target", "accuracy"], "line 3 has 1 fields but the header has 3"),
        "bad arch": (["fit", str(write_csv(d / "arch.csv", header, good + [["k9-k3-w8-w8-relu-d1", "0.5", 9]])),
                      "--target", "accuracy", "--space", SPACE], "k1: 'k9' is not one of k3, k5, k7"),
        "undetectable arch": (["fit", str(write_csv(d / "arch2.csv", header, [["resnet50", "0.7", 1]] * 3)),
                               "--target", "accuracy"], "no registered search space decodes"),
        "unknown space": (["fit", str(files["arch_train"]), "--target", "accuracy", "--space", "vgg"],
                          "unknown search space 'vgg'"),
        "one fold": (["fit", str(files["gen_train"]), "--target", "acc", "--folds", "1"], "--folds must be at least 2"),
        "out is a file": (["fit", str(files["gen_train"]), "--target", "acc", "--out", str(files["gen_train"])],
                          "is a file; pass a directory"),
        "unknown model": (["fit", str(files["arch_train"]), "--target", "accuracy", "--model", "xgb"],
                          "known models: ridge, rbf, gp, gbt, rf, extra_trees, mlp, ensemble, auto"),
        "bad features": (["fit", str(files["arch_train"]), "--target", "accuracy", "--features", "paths"],
                         "--features must be one of structure, onehot, structure+zc, onehot+zc, zc, got 'paths'"),
        "unknown ignore": (["fit", str(files["gen_train"]), "--target", "acc", "--ignore", "runid"],
                           "no column 'runid' (named by --ignore)"),
        "empty feature": (["fit", str(write_csv(d / "ef.csv", GENERIC_HEADER, [[3, 16, "", "r", "0.5"]] * 12)),
                           "--target", "acc"], "column 'act' is empty"),
        "too few rows": (["fit", str(write_csv(d / "few.csv", header, good)), "--target", "accuracy",
                          "--space", SPACE], "too few"),
        "pretrain generic": (["fit", str(files["gen_train"]), "--target", "acc", "--model", "mlp",
                              "--pretrain-samples", "50"], "pretraining needs an arch table"),
        "unseen choice": (["evaluate", str(d / "gen_model"),
                           str(write_csv(d / "unseen.csv", GENERIC_HEADER, [[3, 16, "gelu", "r", "0.5"]] * 2)),
                           "--target", "acc"], "column 'act': value 'gelu' was not seen in training; seen values: hswish, relu"),
        "unseen number": (["evaluate", str(d / "gen_model"),
                           str(write_csv(d / "unseen2.csv", GENERIC_HEADER, [[9, 16, "relu", "r", "0.5"]] * 2)),
                           "--target", "acc"], "column 'kernel': value '9' was not seen in training; seen values: 3, 5, 7"),
        "missing feature column": (["evaluate", str(d / "gen_model"),
                                    str(write_csv(d / "nocol.csv", ["kernel", "width", "acc"], [[3, 16, "0.5"]] * 2)),
                                    "--target", "acc"], "no column 'act' (a feature column of this model)"),
        "missing model": (["evaluate", str(d / "no_model"), str(files["gen_test"]), "--target", "acc"],
                          "is not a saved predictor"),
        "evaluate NaN target": (["evaluate", str(d / "gen_model"),
                                 str(write_csv(d / "enan.csv", GENERIC_HEADER, [[3, 16, "relu", "r", "NaN"]] * 2)),
                                 "--target", "acc"], "column 'acc' is NaN"),
    }
    return cases[name]


def _empty(d):
    path = d / "really_empty.csv"
    path.write_text("")
    return path


BAD_CASES = [
    "missing file", "empty file", "header only", "missing target", "NaN target", "text target", "ragged row",
    "bad arch", "undetectable arch", "unknown space", "one fold", "out is a file", "unknown model", "bad features",
    "unknown ignore", "empty feature",
    "too few rows", "pretrain generic", "unseen choice", "unseen number", "missing feature column",
    "missing model", "evaluate NaN target",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_input_is_one_line_error_with_exit_2(files, case):
    args, expected = _bad(files, case)
    if args[0] == "fit" and "--out" not in args:
        args = args + ["--out", str(files["dir"] / "never")]
    r = runner.invoke(app, ["predictor", *args])
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    err = r.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    assert expected in err, err
    assert not (files["dir"] / "never").exists()


# --- features: the space's structure features by default, the genome's one-hot on request -------
def nb201_rows(n, seed):
    """NAS-Bench-201 cells under the benchmark's own column name, with a target that only the cell
    after pruning explains (3x3 convolutions on live edges; broken cells at chance)."""
    from search_spaces import get_space

    space = get_space("nas-bench-201")
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        cell = space.sample(rng)
        live = space.pruned(cell).ops
        acc = 10.0 if not space.connected(cell) else 50.0 + 5 * live.count("nor_conv_3x3") + live.count("nor_conv_1x1")
        rows.append([i, space.encode(cell), f"{acc + 0.1 * rng.normal():.4f}", f"{rng.uniform(1, 9):.3f}"])
    return rows


NB201_HEADER = ["arch_index", "arch_str", "cifar100_test_acc", "lat_ms_pixel2"]


@pytest.fixture(scope="module")
def nb201(tmp_path_factory):
    d = tmp_path_factory.mktemp("nb201_cli")
    return {"train": write_csv(d / "train.csv", NB201_HEADER, nb201_rows(80, 1)),
            "test": write_csv(d / "test.csv", NB201_HEADER, nb201_rows(60, 2)), "dir": d}


def _fit_nb201(nb201, features):
    """Fits a gp on the table with ``features`` into ``model_{features}``: (folder, the fit's report)."""
    out = nb201["dir"] / f"model_{features}"
    args = ["predictor", "fit", str(nb201["train"]), "--target", "cifar100_test_acc", "--model", "gp",
            "--out", str(out), "--json"] + (["--features", features] if features == "onehot" else [])
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    return out, json.loads(r.stdout)


@pytest.mark.parametrize("features, width", [("structure", None), ("onehot", 30)])
def test_fit_features_option_on_an_arch_str_table(nb201, features, width):
    from search_spaces import get_space

    out, report = _fit_nb201(nb201, features)
    assert report["encoding"] == "arch:nas-bench-201" and report["feature_kind"] == features
    assert report["features"] == (width or len(get_space("nas-bench-201").structure_feature_names()))
    saved = json.loads((out / "encoding.json").read_text())["encoder"]
    assert saved["features"] == features and saved["column"] == "arch_str"
    assert evaluate_json(out, nb201["test"], "cifar100_test_acc")["n"] == 60


def test_structure_features_rank_what_the_one_hot_cannot(nb201):
    taus = {}
    for features in ("structure", "onehot"):
        out = nb201["dir"] / f"model_{features}"
        if not (out / "encoding.json").exists():  # the fit test ran in another worker (pytest-xdist)
            out, _ = _fit_nb201(nb201, features)
        taus[features] = evaluate_json(out, nb201["test"], "cifar100_test_acc")
    assert taus["structure"]["kendall_tau"] > taus["onehot"]["kendall_tau"] + 0.1, taus


def test_encoder_saved_without_features_field_is_one_hot(nb201, tmp_path):
    """Models saved before the option existed encoded the genome's one-hot and still do."""
    from predictors import fit_table, load_table_model, read_csv
    from predictors.data import ArchEncoder

    model, _ = fit_table(nb201["train"], "cifar100_test_acc", model="ridge", features="onehot")
    model.save(tmp_path / "m")
    encoding = json.loads((tmp_path / "m" / "encoding.json").read_text())
    del encoding["encoder"]["features"]  # what an encoder of an earlier version wrote
    (tmp_path / "m" / "encoding.json").write_text(json.dumps(encoding))
    old = load_table_model(tmp_path / "m")
    assert old.encoder.features == "onehot"
    table = read_csv(nb201["test"])
    np.testing.assert_array_equal(old.predict_table(table), model.predict_table(table))
    with pytest.raises(ValueError, match="features 'paths' is not one of structure, onehot"):
        ArchEncoder("nas-bench-201", features="paths")


# --- zero-cost proxy columns as features -------------------------------------------------------
def nb201_zc_rows(n, seed):
    """nb201_rows plus two proxy columns: zc_good follows the target (with noise), zc_junk does not."""
    rng = np.random.default_rng(seed + 100)
    rows = []
    for row in nb201_rows(n, seed):
        acc = float(row[2])
        rows.append(row + [f"{acc + 0.5 * rng.normal():.4f}", f"{rng.normal():.4f}"])
    return rows


ZC_HEADER = NB201_HEADER + ["zc_good", "zc_junk"]


@pytest.fixture(scope="module")
def nb201_zc(tmp_path_factory):
    d = tmp_path_factory.mktemp("nb201_zc")
    return {"train": write_csv(d / "train.csv", ZC_HEADER, nb201_zc_rows(80, 1)),
            "test": write_csv(d / "test.csv", ZC_HEADER, nb201_zc_rows(60, 2)), "dir": d}


def test_fit_with_zero_cost_columns_beside_the_structure(nb201_zc):
    from predictors import load_table_model, read_csv
    from search_spaces import get_space

    out = nb201_zc["dir"] / "model_zc"
    r = runner.invoke(app, ["predictor", "fit", str(nb201_zc["train"]), "--target", "cifar100_test_acc", "--model",
                            "ridge", "--features", "structure+zc", "--out", str(out), "--json"])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["feature_kind"] == "structure+zc"
    assert report["features"] == len(get_space("nas-bench-201").structure_feature_names()) + 2
    saved = json.loads((out / "encoding.json").read_text())["encoder"]
    assert saved["zc_columns"] == ["zc_good", "zc_junk"] and len(saved["zc_mean"]) == len(saved["zc_std"]) == 2
    # the proxies are standardised by the training table's statistics, saved and reused on new tables
    train = np.asarray([[float(x) for x in row[4:]] for row in nb201_zc_rows(80, 1)])
    np.testing.assert_allclose(saved["zc_mean"], train.mean(0), rtol=1e-6)
    model = load_table_model(out)
    X = model.encoder.transform(read_csv(nb201_zc["test"]))
    assert X.shape == (60, report["features"]) and np.all(np.isfinite(X))
    assert evaluate_json(out, nb201_zc["test"], "cifar100_test_acc")["n"] == 60


def test_zero_cost_columns_alone_rank_by_the_proxy(nb201_zc):
    taus = {}
    for features in ("zc", "onehot"):
        out = nb201_zc["dir"] / f"model_{features.replace('+', '_')}"
        r = runner.invoke(app, ["predictor", "fit", str(nb201_zc["train"]), "--target", "cifar100_test_acc",
                                "--model", "ridge", "--features", features, "--out", str(out)])
        assert r.exit_code == 0, r.output
        taus[features] = evaluate_json(out, nb201_zc["test"], "cifar100_test_acc")["kendall_tau"]
    assert taus["zc"] > 0.6 and taus["zc"] > taus["onehot"] + 0.1, taus


@pytest.mark.parametrize("case", ["no_columns", "not_finite", "missing_at_evaluate", "pretrain"])
def test_zero_cost_features_errors_name_the_problem(nb201_zc, nb201, tmp_path, case):
    target = ["--target", "cifar100_test_acc"]
    if case == "no_columns":
        args = ["predictor", "fit", str(nb201["train"]), *target, "--features", "structure+zc",
                "--out", str(tmp_path / "m")]
        expected = "need zero-cost proxy columns (zc_*, written by `nas predictor sample RUN --zero-cost`)"
    elif case == "not_finite":
        rows = nb201_zc_rows(30, 3)
        rows[4][-2] = "inf"
        bad = write_csv(tmp_path / "bad.csv", ZC_HEADER, rows)
        args = ["predictor", "fit", str(bad), *target, "--features", "onehot+zc", "--out", str(tmp_path / "m")]
        expected = "line 6, column 'zc_good': 'inf' is not a finite number"
    elif case == "missing_at_evaluate":
        args = ["predictor", "evaluate", str(nb201_zc["dir"] / "model_zc"), str(nb201["test"]), *target]
        expected = "no column 'zc_good' (a zero-cost proxy column of this model"
    else:
        args = ["predictor", "fit", str(nb201_zc["train"]), *target, "--features", "structure+zc",
                "--pretrain-samples", "50", "--out", str(tmp_path / "m")]
        expected = "random architectures, which have no zero-cost proxies"
    if case == "missing_at_evaluate" and not (nb201_zc["dir"] / "model_zc").exists():
        pytest.skip("needs test_fit_with_zero_cost_columns_beside_the_structure's model")
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert expected in r.output and "Traceback" not in r.output


def test_sample_zero_cost_batch_is_checked_before_the_run_is_opened(tmp_path):
    r = runner.invoke(app, ["predictor", "sample", str(tmp_path / "no-run"), "--n", "5", "--zero-cost",
                            "--zero-cost-batch", "1", "--out", str(tmp_path / "s.csv")])
    assert r.exit_code == 2 and "--zero-cost-batch 1 / --zero-cost-batches 1: use at least 2 images" in r.output
