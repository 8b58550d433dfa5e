"""`nas export subnet`: extract one subnet as a standalone model (see nas_cli.export)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nas_cli.commands._common import prepare_out, removed_if_refused, user_errors

export_app = typer.Typer(help="Export models from a training run.", no_args_is_help=True, rich_markup_mode=None)


@export_app.command("subnet")
@user_errors
def export_subnet_cmd(
    run_dir: Path = typer.Argument(..., help="The training run (from `nas train-supernet --out`)."),
    out: Path = typer.Option(..., "--out", help="Folder to write: model/ (orbax NNX state), model.onnx, model.stablehlo, subnet.json."),
    arch: Optional[str] = typer.Option(None, "--arch", help="Canonical architecture string, as in pareto.csv."),
    rank: Optional[int] = typer.Option(None, "--rank", help="Take the K-th subnet of the search's pareto.json (1 = most accurate within budget)."),
    search_dir: Optional[Path] = typer.Option(None, "--search-dir", help="Where `nas search` wrote pareto.json.", show_default="RUN_DIR/search"),
    force: bool = typer.Option(False, "--force", help="Replace an existing export in --out."),
    format: str = typer.Option("all", "--format", help="onnx (model.onnx, checked in onnxruntime; needs the "
                               "'onnx' extra), stablehlo (model.stablehlo), or all."),
    quantize: str = typer.Option("none", "--quantize", help="int8: also write model.int8.onnx (onnxruntime's "
                                 "static quantization, QDQ, per-channel weights) and record its accuracy beside "
                                 "the float model's in subnet.json; none: the float model only.", show_default=True),
    int8_calib_images: int = typer.Option(256, "--int8-calib-images", help="Training images (seeded) that "
                                          "calibrate the int8 activation ranges.", show_default=True),
    int8_max_drop: float = typer.Option(1.0, "--int8-max-drop", help="Accuracy points the int8 model may lose "
                                        "before the export warns.", show_default=True),
) -> None:
    """Extract one subnet with its inherited weights and recalibrated BatchNorm, check it against
    the supernet (max |logit diff| <= 1e-4), and write it as a standalone model."""
    from nas_cli import runs
    from nas_cli.errors import UserError
    from nas_cli.export import export_subnet

    if (arch is None) == (rank is None):  # before anything is created
        raise UserError("give exactly one of --arch ARCH or --rank K")
    with removed_if_refused(out):
        prepare_out(out, folder=True)
        runs.enable_compilation_cache()
        info = export_subnet(run_dir, out, arch=arch, rank=rank, search_dir=search_dir, force=force,
                             format=format, log=lambda m: typer.echo(m, err=True), quantize=quantize,
                             int8_calib_images=int8_calib_images, int8_max_drop=int8_max_drop)
    accuracy = ("no data: accuracy not measured" if info["accuracy"] is None else
                f"val accuracy {info['accuracy']:.4f}, test accuracy {info['test_accuracy']:.4f}")
    typer.echo(f"exported {info['arch']}: {accuracy}, latency {info['latency_ms']:.3f} ms, "
               f"{info['flops'] / 1e6:.2f} MMACs, {info['params']} params")
    typer.echo(latency_line(info))
    if info["onnx_parity_max_abs_diff"] is not None:
        typer.echo(f"model.onnx parity in onnxruntime: max |logit diff| {info['onnx_parity_max_abs_diff']:.3e}")
    typer.echo(f"exported subnet written to {out}")


def latency_line(info: dict) -> str:
    """What the export's latency is, beside the search's figure for the same subnet."""
    p = info.get("latency_protocol") or {}
    rt = (p.get("runtime") or {}).get("name", "jax")
    at = "put at the search's device speed" if p.get("level_ms") is not None else "as timed"
    line = f"latency {info['latency_ms']:.3f} ms: measured here (batch {p.get('batch', 1)}, {rt}, {at})"
    search = info.get("search_latency")
    if search and search.get("latency_ms") is not None:
        kind = "measured the same way" if search["same_protocol"] else (search.get("label") or "another protocol")
        line += f"; the search reported {search['latency_ms']:.3f} ms ({kind})"
    return line


def register(app: typer.Typer) -> None:
    app.add_typer(export_app, name="export")
