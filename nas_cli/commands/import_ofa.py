"""`nas import ofa`: parse options, then call nas_cli.importing.import_ofa."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from nas_cli.commands._common import user_errors

#: nas_cli.importing.PUBLISHED (kept here so that --help loads without JAX)
PUBLISHED = ("ofa_mbv3_d234_e346_k357_w1.0", "ofa_mbv3_d234_e346_k357_w1.2")


@user_errors
def import_ofa_cmd(
    checkpoint: Path = typer.Argument(..., help="Once-for-All's checkpoint (.pth, torch.save's zip format), e.g. "
                                      "the published ofa_mbv3_d234_e346_k357_w1.0; read without torch."),
    net: str = typer.Option(..., "--net", help=f"The network it holds: {' or '.join(PUBLISHED)}."),
    out: Path = typer.Option(..., "--out", help="Run folder to create (config.json, checkpoint/, final.json, "
                             "data.json, imported.json), used by nas search, finetune and export subnet."),
    dataset: str = typer.Option("folder", "--dataset", help="The data searches and fine-tuning use (folder: "
                                "DIR/train/<class>/ with one folder per ImageNet class, e.g. ImageNet's val images)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Where the data is; without it the run can "
                                            "only be exported (parity checked on synthetic images).",
                                            show_default="no data"),
    resolutions: Optional[str] = typer.Option(None, "--resolutions", help="Comma-separated input sides the search "
                                              "may choose.", show_default="128-224 step 4, Once-for-All's"),
    batch_size: int = typer.Option(64, "--batch-size", help="Batch of fine-tuning runs made from this run."),
    calib_images: int = typer.Option(2000, "--calib-images", help="BatchNorm recalibration images per subnet."),
    seed: int = typer.Option(0, "--seed", help="Seed of the validation/test hold-outs and calibration images."),
) -> None:
    """Import a Once-for-All pretrained MobileNetV3 supernet as a run (nothing is downloaded)."""
    from nas_cli.errors import UserError

    res = None
    if resolutions is not None:
        try:
            res = tuple(int(r) for r in resolutions.split(",") if r.strip())
        except ValueError:
            raise UserError(f"--resolutions {resolutions!r} must be comma-separated integers, e.g. 160,192,224") from None
        if not res or min(res) < 32 or max(res) > 1024:
            raise UserError(f"--resolutions {resolutions!r}: each side must be in 32..1024")
    from nas_cli.importing import import_ofa

    import_ofa(checkpoint, net, out, dataset=dataset, data_dir=None if data_dir is None else str(data_dir),
               resolutions=res, batch_size=batch_size, calib_images=calib_images, seed=seed,
               log=lambda m: typer.echo(m, err=True))
    if data_dir is not None:
        typer.echo(f"imported {net} into {out}: search it with `nas search {out} --latency-budget B`")
    else:
        typer.echo(f"imported {net} into {out} without data: `nas export subnet {out} --arch A` works now; "
                   "import it again with --data-dir to search or fine-tune it")


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="Import a pretrained supernet from another tool as a run.", no_args_is_help=True)
    group.command("ofa")(import_ofa_cmd)
    app.add_typer(group, name="import")
