"""What an export starts from: the model's Subject (a training run or a bare ``.keras`` file), seen
as the few plain facts the conversion worker process needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..core.errors import DataError, UsageError
from ..subject import Declared, Subject


@dataclass
class Source:
    model_path: str
    name: str  # a safe file-name part: artifacts are NAME_PRECISION.SUFFIX
    architecture: str | None
    run_dir: str | None
    calibration_path: str | None
    calibration_sha256: str | None
    calibration_raw: bool  # a user's file: raw data, preprocessed by the subject's one decision
    default_out: str
    model_sha256: str
    subject: dict  # Subject.as_dict(): the worker rebuilds the subject from it


def resolve_source(spec: str | Path, options, needs_calibration: bool = False) -> Source:
    """The model to convert, its name and calibration data; every input checked before work starts."""
    subject = Subject.resolve(spec, Declared.of(options), name=getattr(options, "name", None))
    path, ready = subject.calibration
    if path is not None:
        _check_calibration(str(path))
    if needs_calibration and path is None:
        raise UsageError(f"int8 export of {subject.model_path.name} needs calibration data and this model has no "
                         "training run", hint="pass --calibration data.npz (key x, or one key per input name), "
                                              "or a model card")
    return Source(
        model_path=str(subject.model_path),
        name=subject.name,
        architecture=subject.architecture,
        run_dir=str(subject.run_dir) if subject.run_dir else None,
        calibration_path=str(path) if path else None,
        calibration_sha256=subject.calibration_sha256,
        calibration_raw=path is not None and not ready,
        default_out=str(subject.default_exports),
        model_sha256=subject.model_sha256,
        subject=subject.as_dict(),
    )


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
