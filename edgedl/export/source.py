"""What an export starts from: a training run folder (with its manifest) or a bare ``.keras`` file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import ModelError
from ..core.files import sha256_file
from ..core.layout import EXPORTS, MANIFEST, load_run


@dataclass
class Source:
    model_path: str
    name: str
    architecture: str | None
    run_dir: str | None
    calibration_path: str | None
    calibration_sha256: str | None
    default_out: str
    model_sha256: str


def resolve_source(spec: str | Path, options) -> Source:
    path = Path(spec)
    if path.is_dir():
        if not (path / MANIFEST).exists():
            raise ModelError(f"{path} is a folder without a training manifest",
                             hint="pass a .keras file or the --out folder of `edgedl train`")
        manifest = load_run(path)  # checks sha256 of model, calibration and held-out files
        calibration = manifest.get("calibration") or {}
        return Source(
            model_path=str(path / manifest["model"]["file"]),
            name=manifest.get("architecture") or path.name,
            architecture=manifest.get("architecture"),
            run_dir=str(path),
            calibration_path=options.calibration or (str(path / calibration["file"]) if calibration else None),
            calibration_sha256=None if options.calibration else calibration.get("sha256"),
            default_out=str(path / EXPORTS),
            model_sha256=manifest["model"]["sha256"],
        )
    if not path.exists():
        raise ModelError(f"model not found: {path}", hint="pass a .keras file or a training run folder")
    if path.suffix != ".keras":
        raise ModelError(f"{path} is not a .keras file or a training run folder (suffix {path.suffix or 'none'})")
    return Source(
        model_path=str(path),
        name=path.stem,
        architecture=None,
        run_dir=None,
        calibration_path=options.calibration,
        calibration_sha256=None,
        default_out=str(path.parent / EXPORTS),
        model_sha256=sha256_file(path),
    )
