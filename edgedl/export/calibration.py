"""Calibration data for int8: the representative inputs a quantizer measures activation ranges on.

Public, because per-layer drift (validate) re-runs the quantization debugger on the same samples.
"""

from __future__ import annotations

import numpy as np

from .. import data as data_lib
from ..core.errors import DataError
from ..core.files import sha256_file
from ..runners.base import TensorInfo
from ..runners.modelio import input_names, model_facts
from .plan import MIN_CALIBRATION


def load_calibration(path: str, samples: int | None, model, subject=None, say=print) -> tuple[list[np.ndarray], dict]:
    """One array per model input (fitted to its shape), and what was used: path, sha256, count.

    A training run's own calibration set is already in the model's input space. A user's file is raw
    data: its ``subject`` (edgedl/subject.py) then makes the one preprocessing decision, applies it, checks
    it against the training range (a mismatch stops the export, with the numbers), and the decision is
    recorded in the returned info.
    """
    names = input_names(model)
    arrays = data_lib.read_npz(path, "calibration file", keys=names, count=samples)
    if all(name in arrays for name in names):
        found = [arrays[name] for name in names]
    elif len(names) == 1:
        x, _ = data_lib.load_samples_npz(path, "calibration file", count=samples)
        found = [x]
    else:
        raise DataError(f"calibration file {path} needs one array per model input: {', '.join(names)}")
    count = min(len(r) for r in found)
    if samples:
        count = min(count, samples)
    if count < MIN_CALIBRATION:
        raise DataError(f"calibration set {path} has {count} samples; int8 needs at least {MIN_CALIBRATION} "
                        "(a few hundred is typical)", hint="pass --calibration with more samples")
    info = {"path": path, "sha256": sha256_file(path), "count": count}
    specs = [TensorInfo(name, tuple(t.shape), str(t.dtype)) for name, t in zip(names, model.inputs, strict=True)]
    raw = {spec.name: r[:count] for spec, r in zip(specs, found, strict=True)}
    _check_finite(raw, path)
    if subject is not None:
        arrays, info["preprocessing"] = subject.to_model(raw, specs, model_facts(model), "calibration", say=say)
    else:  # a run's own calibration set: already model inputs
        arrays = {s.name: data_lib.fit_to_input(raw[s.name], tuple(s.shape[1:]), "calibration", dtype=s.dtype)
                  for s in specs}
    return [arrays[s.name] for s in specs], info



def _check_finite(raw: dict, path: str) -> None:
    """NaN or Inf in calibration data is the data's fault: say so, before the converter turns it into an
    error of its own."""
    for name, values in raw.items():
        if values.dtype.kind in "fc" and not np.isfinite(values).all():
            bad = int(np.count_nonzero(~np.isfinite(values)))
            raise DataError(f"calibration file {path}: input {name!r} holds {bad:,} NaN or Inf values; int8 "
                            "activation ranges cannot be measured from them", hint="remove or replace those samples")
