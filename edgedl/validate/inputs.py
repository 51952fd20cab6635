"""What a validation runs on: the held-out split, a user's .npz, or seeded synthetic inputs.

In order of strength: the held-out split recorded at training (real data), a user's ``.npz``,
or seeded synthetic inputs inside the calibration range (reported as weaker evidence).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import data as data_lib
from ..core.errors import DataError


@dataclass
class Inputs:
    arrays: list[np.ndarray]
    labels: np.ndarray | None
    evidence: str


def gather_inputs(model_dir: Path | None, manifest: dict | None, input_shapes: list[tuple], options) -> Inputs:
    if options.data:
        x, y = data_lib.load_samples_npz(options.data, "validation data", count=options.samples)
        evidence = "user data"
    elif manifest and manifest.get("heldout") and not options.synthetic:
        with np.load(model_dir / manifest["heldout"]["file"], allow_pickle=False) as archive:
            x, y = archive["x"], archive["y"]
        evidence = "held-out real data"
    else:
        x, y = _synthetic(model_dir, manifest, input_shapes, options), None
        evidence = "synthetic inputs in the calibration range (weaker evidence)"
    if options.samples:
        x, y = x[: options.samples], (None if y is None else y[: options.samples])
    if len(x) == 0:
        raise DataError(f"no samples to validate on ({evidence})", hint="pass --data with at least one sample")
    if len(input_shapes) != 1:
        raise DataError(f"the model takes {len(input_shapes)} inputs; pass --data with one array per input")
    return Inputs([data_lib.fit_to_input(x, input_shapes[0], "validation")], y, evidence)


def _synthetic(model_dir, manifest, input_shapes, options) -> np.ndarray:
    low, high = 0.0, 1.0
    if manifest and manifest.get("calibration"):
        with np.load(model_dir / manifest["calibration"]["file"], allow_pickle=False) as archive:
            calib = archive["x"]
        low, high = float(calib.min()), float(calib.max())
    count = options.synthetic or 256
    shape = tuple(d if d else 1 for d in input_shapes[0])
    values = count * int(np.prod(shape, dtype=np.int64))
    if values * 4 > data_lib.max_data_bytes():
        raise DataError(f"--synthetic {count} samples of shape {shape} would need {values * 4 / 2**30:.1f} GiB",
                        hint="ask for fewer synthetic samples")
    rng = np.random.default_rng(options.seed)
    return rng.uniform(low, high, size=(count, *shape)).astype(np.float32)
