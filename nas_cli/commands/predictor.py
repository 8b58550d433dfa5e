"""``nas predictor fit|evaluate|list``: accuracy predictors on measurement tables (CSV)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from nas_cli.commands._common import prepare_out, user_errors
from nas_cli.commands.help_texts import PREDICTORS

predictor_app = typer.Typer(
    help="Fit accuracy predictors on measured architectures (CSV) and evaluate them by Kendall tau.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _fmt(m: dict) -> str:
    return f"tau {m['kendall_tau']:.3f}  rho {m['spearman']:.3f}  rmse {m['rmse']:.4g}"


def _space(spec: Optional[str]):
    if spec is None:
        return None
    from nas_cli.runs import space_spec

    return space_spec(spec)


@predictor_app.command("fit")
@user_errors
def fit(
    data: Path = typer.Argument(..., help="CSV: a column `arch` of canonical strings, or any table of categorical columns."),
    target: str = typer.Option(..., "--target", help="Column to predict, e.g. accuracy."),
    out: Path = typer.Option(..., "--out", help="Directory to save the fitted predictor in."),
    model: str = typer.Option("auto", "--model", help=f"One of {', '.join(PREDICTORS)} "
                              "(auto: the one with the best k-fold tau)."),
    space: Optional[str] = typer.Option(None, "--space", help="Space of the `arch` column: a name, or the training run directory the subnets come from (its space's options).", show_default="detected"),
    ignore: List[str] = typer.Option([], "--ignore", help="Column to leave out of the features (repeatable)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the folds, the held-out rows and the model."),
    folds: int = typer.Option(5, "--folds", help="k of the k-fold cross-validation."),
    holdout: float = typer.Option(0.2, "--holdout", help="Fraction of rows held out for the held-out figures."),
    pretrain_samples: int = typer.Option(
        0, "--pretrain-samples", help="Pretrain on FLOPs/params of this many random archs (arch tables; mlp pretrains its own network, the other models get the learnt statistics as features)."
    ),
    features: str = typer.Option(
        "structure", "--features", help="Features of an arch table: structure (what the space knows of each "
        "architecture's structure, e.g. a cell after pruning dead edges) or onehot (the genome's one-hot); "
        "structure+zc / onehot+zc add the table's zero-cost proxy columns zc_* (`nas predictor sample "
        "--zero-cost`), zc uses them alone."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Fit a predictor on DATA, report held-out and k-fold tau/rho/RMSE, save it to --out."""
    from nas_cli.errors import UserError
    from predictors import check_predictor_name, fit_table, read_csv
    from predictors.data import FEATURE_KINDS

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a directory to save the predictor in")
    prepare_out(out, folder=True, create=False)  # a refused fit leaves no folder
    # The flags are checked here, so that their messages name them; the library checks the values.
    check_predictor_name(model, "model")
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    if not 0.0 < holdout < 1.0:
        raise UserError(f"--holdout must be a fraction between 0 and 1, got {holdout}")
    if features not in FEATURE_KINDS:
        raise UserError(f"--features must be one of {', '.join(FEATURE_KINDS)}, got {features!r}")
    table = read_csv(data)
    table.require(target, "the --target column")
    for col in ignore:
        table.require(col, "named by --ignore")
    table_model, report = fit_table(
        table, target, model=model, space=_space(space), ignore=ignore, seed=seed, k=folds, holdout=holdout,
        pretrain_samples=pretrain_samples, features=features,
    )
    table_model.save(out)
    report["out"] = str(out)
    if as_json:
        typer.echo(json.dumps(report))
        return
    chosen = f" (chose {report['chosen']})" if "chosen" in report else ""
    kind = "" if report["feature_kind"] == "table" else f", {report['feature_kind']}"
    typer.echo(f"{report['model']}{chosen} on {report['n']} rows, {report['features']} features "
               f"({report['encoding']}{kind})")
    typer.echo(f"held-out ({report['holdout']['n']} rows): {_fmt(report['holdout'])}")
    typer.echo(f"{report['cv']['k']}-fold CV:           {_fmt(report['cv'])}")
    typer.echo(f"saved to {out}")


@predictor_app.command("sample")
@user_errors
def sample(
    run_dir: Path = typer.Argument(..., help="Training run directory (from `nas train-supernet`)."),
    n: int = typer.Option(..., "--n", help="Number of distinct random subnets to measure."),
    out: Path = typer.Option(..., "--out", help="CSV to write: arch, accuracy, flops, params[, latency_ms]."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random subnets."),
    latency: bool = typer.Option(False, "--latency", help="Also time each static subnet here (batch 1), all of "
                                 "them interleaved beside reference subnets and put at one device speed."),
    zero_cost: bool = typer.Option(False, "--zero-cost", help="Also compute each subnet's zero-cost proxies "
                                   "through the supernet (columns zc_grad_norm, zc_synflow, zc_jacob_cov: "
                                   "features for `nas predictor fit --features structure+zc`) "
                                   "and report their seconds per subnet."),
    zero_cost_batch: int = typer.Option(32, "--zero-cost-batch", help="Training images per batch of the proxies "
                                        "(a fixed subset drawn by the run's seed)."),
    zero_cost_batches: int = typer.Option(1, "--zero-cost-batches", help="Batches the proxies are averaged over."),
) -> None:
    """Measure N random subnets through the supernet (inherited weights, BatchNorm recalibrated,
    validation accuracy) into a CSV for `nas predictor fit`. Re-running continues an interrupted sample."""
    import csv
    import io

    from nas_cli.commands._progress import StepProgress
    from nas_cli.errors import UserError
    from predictors.data import ZC_PREFIX
    from predictors.files import atomic_write_text
    from nas_cli.evaluation.supernet import open_run_evaluator, sample_subnets
    from search_spaces.zero_cost import zero_cost_of_run

    if n < 1:
        raise UserError(f"--n {n} must be at least 1")
    if zero_cost and (zero_cost_batch < 2 or zero_cost_batches < 1):
        raise UserError(f"--zero-cost-batch {zero_cost_batch} / --zero-cost-batches {zero_cost_batches}: "
                        "use at least 2 images per batch and 1 batch")
    prepare_out(out, folder=False)
    evaluator = open_run_evaluator(run_dir)
    with StepProgress("measuring", item="subnet") as display:
        rows = sample_subnets(evaluator, n, seed=seed, latency=latency, progress=display)
    if zero_cost:
        zc = zero_cost_of_run(evaluator.run, batch_size=zero_cost_batch, batches=zero_cost_batches)
        with StepProgress("zero-cost proxies", item="subnet") as display:
            values = zc.many([evaluator.space.decode(r["arch"]) for r in rows], display)
        for row, v in zip(rows, values):
            row.update({ZC_PREFIX + name: x for name, x in v.items()})
        cost = zc.cost()
        typer.echo(f"zero-cost proxies: {cost['seconds_per_subnet']:.3f} s per subnet after "
                   f"{cost['compile_seconds']:.1f} s for the first (compiling; one program per resolution)")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out, buf.getvalue())
    typer.echo(f"wrote {len(rows)} measured subnets to {out}")


@predictor_app.command("evaluate")
@user_errors
def evaluate(
    model: Path = typer.Argument(..., help="Directory written by `nas predictor fit`."),
    data: Path = typer.Argument(..., help="CSV with the same feature columns (or `arch`) and the target."),
    target: str = typer.Option(..., "--target", help="Column holding the measured values."),
    as_json: bool = typer.Option(False, "--json", help="Print {kendall_tau, spearman, rmse, n} as JSON."),
) -> None:
    """Score a saved predictor on DATA by Kendall tau, Spearman rho and RMSE."""
    from predictors import evaluate_table

    metrics = evaluate_table(model, data, target)
    if as_json:
        typer.echo(json.dumps({k: metrics[k] for k in ("kendall_tau", "spearman", "rmse", "n")}))
    else:
        typer.echo(f"{metrics['n']} rows: {_fmt(metrics)}")


@predictor_app.command("list")
def list_models() -> None:
    """List the registered predictor models."""
    from predictors import PREDICTORS
    for name in PREDICTORS.names():
        p = PREDICTORS.get(name)()
        flags = [f for f, on in (("std", p.supports_std), ("native pretraining", p.native_pretrain)) if on]
        typer.echo(name + (f"  ({', '.join(flags)})" if flags else ""))


def register(app: typer.Typer) -> None:
    app.add_typer(predictor_app, name="predictor")
