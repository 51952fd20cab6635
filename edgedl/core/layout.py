"""Where things live: the training-run folder, artifact files and their JSON sidecars.

Every stage reads and writes these names, so they are defined here once, below all of them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from .errors import ModelError, UsageError
from .files import read_json, verify_sha256

# A training run folder (`edgedl train --out RUN`).
MANIFEST = "manifest.json"
MODEL_FILE = "model.keras"
CALIBRATION_FILE = "calibration.npz"
HELDOUT_FILE = "heldout.npz"
HISTORY_FILE = "history.json"
EXPORTS = "exports"

# An export folder.
INDEX = "artifacts.json"
VALIDATION_REPORT = "validation.json"

FORMAT_BY_SUFFIX = {".tflite": "tflite", ".onnx": "onnx", ".keras": "keras"}
SUFFIX = {"tflite": ".tflite", "onnx": ".onnx"}
ARTIFACT_SUFFIXES = tuple(SUFFIX.values())
# int16x8: 16-bit activations, 8-bit weights; mixed: int8 with chosen layers kept in float (--keep-float)
PRECISIONS = ("fp32", "fp16", "dynamic", "int8", "int16x8", "mixed")
# An artifact is NAME_PRECISION[-TAG].SUFFIX (a tag marks a variant, e.g. int8-calibrated): what follows NAME
# The tag of a TFLite artifact whose recurrent layers are written out over their fixed timesteps
# (export/unrolled.py): NAME_dynamic-unrolled.tflite; recipe target "tflite:dynamic:unrolled"
UNROLLED_TAG = "unrolled"
_PRECISION_TAIL = re.compile(rf"_(?:{'|'.join(sorted(PRECISIONS, key=len, reverse=True))})(?:-[A-Za-z0-9]+)?$")


def load_run(run_dir: str | Path) -> dict:
    """Read a training run's manifest and check its files are the ones it names."""
    run_dir = Path(run_dir)
    manifest_path = run_dir / MANIFEST
    if not manifest_path.exists():
        raise ModelError(f"{run_dir} is not a training run folder (no {MANIFEST})",
                         hint="pass a .keras file or the --out folder of `edgedl train`")
    manifest = read_json(manifest_path, "training manifest")
    for key in ("model", "calibration", "heldout"):
        entry = manifest.get(key)
        if entry:
            verify_sha256(run_dir / entry["file"], entry.get("sha256"), what=key)
    return manifest


def is_run(path: str | Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def format_of(path: str | Path) -> str:
    """tflite, onnx or keras, by the file's suffix (the one place suffixes are mapped)."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMAT_BY_SUFFIX:
        raise UsageError(f"{path}: unknown artifact type {suffix or '(no suffix)'}",
                         hint="edgedl reads .tflite, .onnx and .keras files")
    return FORMAT_BY_SUFFIX[suffix]


def find_artifacts(paths: list[str | Path], suffixes: tuple[str, ...] = ARTIFACT_SUFFIXES) -> list[Path]:
    """Files as given; folders expand to the artifact files inside them, sorted.

    Hidden files are skipped: edgedl's temporary files are hidden and never count as artifacts.
    """
    from .errors import ArtifactError

    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir()
                                if p.suffix in suffixes and p.is_file() and not p.name.startswith(".")))
        elif path.is_file():
            found.append(path)
        else:
            raise ArtifactError(f"artifact not found: {path}")
    if not found:
        raise UsageError(f"no {' or '.join(suffixes)} files in {', '.join(map(str, paths))}",
                         hint="run `edgedl export` first, or name the artifact files")
    return found


def relative_to(path: str | Path, folder: str | Path) -> str:
    """``path`` as written in a file that lives in ``folder``: relative to it, with '/' separators."""
    return Path(os.path.relpath(Path(path).resolve(), Path(folder).resolve())).as_posix()


def resolve_from(recorded: str, folder: str | Path) -> Path:
    """A path recorded by ``relative_to`` (or an absolute one from older files), made usable again."""
    path = Path(recorded)
    return path if path.is_absolute() else Path(folder) / path


def sidecar_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + ".json")


def read_sidecar(artifact: Path) -> dict:
    """The artifact's JSON sidecar written by export, or {} for a foreign file."""
    path = sidecar_path(artifact)
    return read_json(path, "artifact manifest") if path.exists() else {}


def precision_of(artifact: Path, facts: dict | None = None) -> str | None:
    """The precision the sidecar records, else the one the file name spells; None if neither says."""
    facts = read_sidecar(artifact) if facts is None else facts
    if facts.get("precision"):
        return facts["precision"]
    if artifact.suffix == ".keras":
        return "keras"
    return next((token for token in ("int16x8", "mixed", "int8", "dynamic", "fp16", "fp32") if token in artifact.stem),
                None)


def model_key(artifact: str | Path) -> str:
    """The artifact's name without its precision: what groups the precisions of one model."""
    path = Path(artifact)
    return _PRECISION_TAIL.sub("", path.stem) + path.suffix
