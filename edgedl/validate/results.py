"""Saved runner outputs: ``NAME.npz`` (arrays) + ``NAME.json`` (what produced them, on which inputs).

Producing outputs and judging them are separate: a comparison takes two saved results, so a
new export can be checked against last week's reference without loading Keras again.
"""

from __future__ import annotations

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


def save_result(result: RunResult, path: str | Path) -> None:
    path = Path(path)
    arrays = {f"output_{i}": array for i, array in enumerate(result.outputs)}
    write_npz(path.with_suffix(".npz"), **arrays)
    write_json(path.with_suffix(".json"), {
        "edgedl": "run-result/1", "source": result.source, "backend": result.backend,
        "output_names": result.output_names, "inputs_sha256": result.inputs_sha256,
        "info": result.info, "seconds": result.seconds,
    })


def load_result(path: str | Path) -> RunResult:
    path = Path(path)
    meta = read_json(path.with_suffix(".json"), "saved result")
    try:
        with np.load(path.with_suffix(".npz"), allow_pickle=False) as archive:
            outputs = [archive[f"output_{i}"] for i in range(len(meta["output_names"]))]
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"saved result {path.with_suffix('.npz')} is missing or corrupt: {exc}") from exc
    return RunResult(source=meta["source"], backend=meta["backend"], outputs=outputs,
                     output_names=meta["output_names"], inputs_sha256=meta["inputs_sha256"],
                     info=meta.get("info", {}), seconds=meta.get("seconds", 0.0))


def inputs_sha256(inputs: list[np.ndarray]) -> str:
    return array_sha256(*inputs)
