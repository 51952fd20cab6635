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


def load_calibration(path: str, samples: int | None, model, raw: dict | None = None) -> tuple[list[np.ndarray], dict]:
    """One array per model input (fitted to its shape), and what was used: path, sha256, count.

    A training run's own calibration set is already in the model's input space. A user's file is raw
    data: ``raw`` then carries what decides its preprocessing (``declared`` by flags or a card,
    ``recorded`` at training, the run's ``input_range``); the decision is applied, checked against the
    training range (a mismatch stops the export, with the numbers) and recorded in the returned info.
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
    for r, t in zip(found, model.inputs, strict=True):  # the shape first: clearer than the range it then has
        data_lib.fit_to_input(r[:1], tuple(t.shape[1:]), "calibration", dtype=str(t.dtype))
    if raw is not None:
        found, info["preprocessing"] = _preprocess(found, model, raw)
    fitted = [data_lib.fit_to_input(r[:count], tuple(t.shape[1:]), "calibration", dtype=str(t.dtype))
              for r, t in zip(found, model.inputs, strict=True)]
    return fitted, info


def _preprocess(found: list[np.ndarray], model, raw: dict) -> tuple[list[np.ndarray], dict | None]:
    from ..runners.modelio import model_facts

    facts = model_facts(model)
    floats = [x for x, integer in zip(found, facts["integer_inputs"], strict=True) if not integer]
    if not floats:
        return found, None
    natural = 1 / 255 if floats[0].dtype == np.uint8 else 1.0
    decision = data_lib.decide_preprocessing(floats[0].dtype, natural, facts, raw.get("declared"), raw.get("recorded"))
    scaled = [x if integer else data_lib.apply_preprocessing(x, decision)
              for x, integer in zip(found, facts["integer_inputs"], strict=True)]
    for x, integer in zip(scaled, facts["integer_inputs"], strict=True):
        if not integer:
            data_lib.check_range(x, raw.get("input_range"), "the calibration data after preprocessing",
                                 "the training inputs")
    return scaled, decision
