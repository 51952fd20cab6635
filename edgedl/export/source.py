"""What an export starts from: a training run folder (with its manifest) or a bare ``.keras`` file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import DataError, ModelError, UsageError
from ..core.files import sha256_file
from ..core.layout import EXPORTS, MANIFEST, load_run
from ..core.outputs import name_from_reference, safe_name


@dataclass
class Source:
    model_path: str
    name: str  # a safe file-name part: artifacts are NAME_PRECISION.SUFFIX
    architecture: str | None
    run_dir: str | None
    calibration_path: str | None
    calibration_sha256: str | None
    calibration_raw: dict | None  # for a user's calibration file: what decides its preprocessing
    default_out: str
    model_sha256: str


def resolve_source(spec: str | Path, options, needs_calibration: bool = False) -> Source:
    """The model to convert, its name and calibration data; every input checked before work starts."""
    path = Path(spec)
    if options.calibration:
        _check_calibration(options.calibration)
    if path.is_dir():
        if not (path / MANIFEST).exists():
            raise ModelError(f"{path} is a folder without a training manifest",
                             hint="pass a .keras file or the --out folder of `edgedl train`")
        manifest = load_run(path)  # checks sha256 of model, calibration and held-out files
        calibration = manifest.get("calibration") or {}
        architecture = manifest.get("architecture")
        name = manifest.get("name") or (name_from_reference(architecture) if architecture else path.name)
        return Source(
            model_path=str(path / manifest["model"]["file"]),
            name=safe_name(getattr(options, "name", None) or name),
            architecture=architecture,
            run_dir=str(path),
            calibration_path=options.calibration or (str(path / calibration["file"]) if calibration else None),
            calibration_sha256=None if options.calibration else calibration.get("sha256"),
            calibration_raw=_raw(options, manifest) if options.calibration else None,
            default_out=str(path / EXPORTS),
            model_sha256=manifest["model"]["sha256"],
        )
    if not path.exists():
        raise ModelError(f"model not found: {path}", hint="pass a .keras file or a training run folder")
    if path.suffix != ".keras":
        raise ModelError(f"{path} is not a .keras file or a training run folder (suffix {path.suffix or 'none'})")
    if needs_calibration and not options.calibration:
        card_path = getattr(options, "card", None) or _card_beside(path)
        options.calibration = _card_calibration(card_path)
        if options.calibration:
            _check_calibration(options.calibration)
    if needs_calibration and not options.calibration:
        raise UsageError(f"int8 export of {path.name} needs calibration data and this model has no training run",
                         hint="pass --calibration data.npz (key x, or one key per input name), or a model card")
    return Source(
        model_path=str(path),
        name=safe_name(getattr(options, "name", None) or path.stem),
        architecture=None,
        run_dir=None,
        calibration_path=options.calibration,
        calibration_sha256=None,
        calibration_raw=_raw(options, None, path) if options.calibration else None,
        default_out=str(path.parent / EXPORTS),
        model_sha256=sha256_file(path),
    )


def _card_beside(path: Path) -> Path | None:
    from ..core.card import find_card

    return find_card(path)


def _card_calibration(card_path) -> str | None:
    from ..core.card import load_card

    if not card_path:
        return None
    card = load_card(card_path)
    return str(card.calibration) if card.calibration else None


def _raw(options, manifest: dict | None, model_path: Path | None = None) -> dict:
    """What decides how a user's raw calibration data becomes model input (data.decide_preprocessing)."""
    from ..core.card import find_card, load_card, with_flags

    card_path = getattr(options, "card", None) or (find_card(model_path) if model_path else None)
    card = with_flags(load_card(card_path) if card_path else None, input_scale=getattr(options, "input_scale", None),
                      input_offset=getattr(options, "input_offset", None))
    recorded = ((manifest or {}).get("dataset") or {}).get("preprocessing")
    return {"declared": card.preprocessing, "recorded": recorded, "input_range": (recorded or {}).get("input_range")}


def _check_calibration(path: str) -> None:
    """A readable .npz of numbers, found before any conversion starts (the samples are read later)."""
    from ..data import Npz

    with Npz(path, "calibration file") as archive:
        if not archive.files:
            raise DataError(f"calibration file {path} holds no arrays")
        for key in archive.files:
            if archive.dtype(key).kind not in "uifb":
                raise DataError(f"calibration file {path}: array {key!r} is {archive.dtype(key)}, not numbers")
            if archive.shape(key) and archive.shape(key)[0] == 0:
                raise DataError(f"calibration file {path}: array {key!r} has 0 samples",
                                 hint="int8 needs at least 8 samples (a few hundred is typical)")
