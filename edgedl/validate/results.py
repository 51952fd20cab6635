"""Saved runner outputs: ``NAME.npz`` (arrays) + ``NAME.json`` (what produced them, on which inputs).

Producing outputs and judging them are separate: a comparison takes two saved results, so a
new export can be checked against last week's reference without loading Keras again.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..core.errors import ArtifactError
from ..core.files import read_json, write_json, write_npz
from ..data import array_sha256


@dataclass
class RunResult:
    """Outputs of one runner on one input set."""

    source: str  # the model or artifact file that produced them
    backend: str
    outputs: list[np.ndarray]
    output_names: list[str]
    inputs_sha256: str
    info: dict = field(default_factory=dict)  # artifact facts (format, precision, quantization...)
    seconds: float = 0.0


def _files(path: str | Path) -> tuple[Path, Path]:
    """NAME.npz and NAME.json for a result called NAME (which may itself hold dots: mlp_int8.tflite)."""
    path = Path(path)
    if path.suffix in (".npz", ".json"):
        path = path.with_suffix("")
    return path.with_name(path.name + ".npz"), path.with_name(path.name + ".json")


def save_result(result: RunResult, path: str | Path) -> None:
    arrays_path, meta_path = _files(path)
    arrays = {f"output_{i}": array for i, array in enumerate(result.outputs)}
    write_npz(arrays_path, **arrays)
    write_json(meta_path, {
        "edgedl": "run-result/1", "source": result.source, "backend": result.backend,
        "output_names": result.output_names, "inputs_sha256": result.inputs_sha256,
        "info": result.info, "seconds": result.seconds,
    })


def load_result(path: str | Path) -> RunResult:
    arrays_path, meta_path = _files(path)
    meta = read_json(meta_path, "saved result")
    try:
        names = meta["output_names"]
        with np.load(arrays_path, allow_pickle=False) as archive:
            outputs = [archive[f"output_{i}"] for i in range(len(names))]
        info = {"source": meta["source"], "backend": meta["backend"], "inputs_sha256": meta["inputs_sha256"]}
    except (OSError, KeyError, ValueError, TypeError, zipfile.BadZipFile) as exc:
        raise ArtifactError(f"saved result {arrays_path} is missing or corrupt: {exc.__class__.__name__}: {exc}") \
            from exc
    return RunResult(source=info["source"], backend=info["backend"], outputs=outputs,
                     output_names=names, inputs_sha256=info["inputs_sha256"],
                     info=meta.get("info", {}), seconds=meta.get("seconds", 0.0))


def inputs_sha256(inputs: list[np.ndarray]) -> str:
    return array_sha256(*inputs)
