"""An export folder's record (``subnet.json``) and the checksums of its files: what the exporter writes
and every loader (``load_subnet``, ``load_onnx``) checks, in a module of its own so that neither
loader imports the other's module."""

from __future__ import annotations

from pathlib import Path

from nas_cli.errors import UserError
from predictors.files import read_json

SUBNET_JSON = "subnet.json"


def export_checksums(folder: Path, names: list[str]) -> dict[str, str]:
    """SHA-256 of each exported file (a folder's files by their path under ``folder``)."""
    from nas_cli.runs.identity import file_hashes, file_sha256

    out: dict[str, str] = {}
    for name in names:
        path = folder / name
        if path.is_dir():
            out.update({f"{name}/{rel}": h for rel, h in file_hashes(path).items()})
        else:
            out[name] = file_sha256(path)
    return out


def read_export_info(folder: Path) -> dict:
    """An export folder's ``subnet.json``.

    Raises:
      UserError: it is missing, cut or damaged, or records no checksums, naming it.
    """
    path = Path(folder) / SUBNET_JSON
    if not path.is_file():
        raise UserError(f"{folder} is not an exported subnet (no {SUBNET_JSON})")
    info = read_json(path, "export record", "export the subnet again")
    if not isinstance(info, dict) or not isinstance(info.get("files"), dict):
        raise UserError(f"export record {path} is damaged or records no checksums of the exported files "
                        "(written by an older version); export the subnet again")
    return info


def check_export_files(folder: Path, info: dict, name: str) -> None:
    """Checks the exported file (or folder) ``name`` against ``info``'s checksums.

    Raises:
      UserError: a recorded file is missing or differs, naming it; ``name`` was not exported.
    """
    from nas_cli.runs.identity import file_sha256

    folder = Path(folder)
    recorded = {k: v for k, v in info["files"].items() if k == name or k.startswith(name + "/")}
    if not recorded:
        raise UserError(f"{folder / SUBNET_JSON} records no {name}; it was not exported in this folder "
                        "(see --format)")
    for rel, digest in sorted(recorded.items()):
        path = folder / rel
        if not path.is_file():
            raise UserError(f"{path} is missing; export the subnet again")
        if file_sha256(path) != digest:
            raise UserError(f"{path} is damaged (it differs from its checksum in {folder / SUBNET_JSON}); "
                            "export the subnet again")
