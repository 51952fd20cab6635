"""Calibration data for int8: the representative inputs a quantizer measures activation ranges on.

Public, because per-layer drift (validate) re-runs the quantization debugger on the same samples.
"""

from __future__ import annotations

import numpy as np

from .. import data as data_lib
from ..core.errors import DataError
from ..core.files import sha256_file
from ..runners.modelio import input_names
from .plan import MIN_CALIBRATION


def load_calibration(path: str, samples: int | None, model) -> tuple[list[np.ndarray], dict]:
    """One array per model input (fitted to its shape), and what was used: path, sha256, count."""
    names = input_names(model)
    arrays = data_lib.read_npz(path, "calibration file", keys=names, count=samples)
    if all(name in arrays for name in names):
        raw = [arrays[name] for name in names]
    elif len(names) == 1:
        x, _ = data_lib.load_samples_npz(path, "calibration file", count=samples)
        raw = [x]
    else:
        raise DataError(f"calibration file {path} needs one array per model input: {', '.join(names)}")
    count = min(len(r) for r in raw)
    if samples:
        count = min(count, samples)
    if count < MIN_CALIBRATION:
        raise DataError(f"calibration set {path} has {count} samples; int8 needs at least {MIN_CALIBRATION} "
                        "(a few hundred is typical)", hint="pass --calibration with more samples")
    fitted = [data_lib.fit_to_input(r[:count], tuple(t.shape[1:]), "calibration")
              for r, t in zip(raw, model.inputs, strict=True)]
    return fitted, {"path": path, "sha256": sha256_file(path), "count": count}
