"""What a validation runs on: the held-out split, a user's .npz, or seeded synthetic inputs.

In order of strength: the held-out split recorded at training (real data, already in the model's
input space), a user's ``.npz`` (raw data: its preprocessing is decided, printed and recorded, and
its range is checked against what the model was fitted to), or seeded synthetic inputs inside the
calibration range (reported as weaker evidence).

Arrays are matched to the model by name: one array per input (``x`` for a single input, else the
input's name or ``x_<name>``), labels per output (``y`` for the first output, or ``y_<name>``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import data as data_lib
from ..core.errors import DataError


@dataclass
class Inputs:
    arrays: dict[str, np.ndarray]  # input name → model-ready samples, in the model's input order
    labels: dict[str, np.ndarray]  # output name → labels, for the outputs that have them
    evidence: str
    preprocessing: dict | None = None  # what was decided for raw data (None: already model inputs)
    raw_dtype: str | None = None  # the dtype the user's data came in (uint8: pixels)

    @property
    def count(self) -> int:
        return len(next(iter(self.arrays.values())))

    @property
    def as_list(self) -> list[np.ndarray]:
        return list(self.arrays.values())


def gather_inputs(subject, specs: list, outputs: list[str], options, facts: dict, say=print) -> Inputs:
    """``specs``: the model's inputs (name, shape, dtype); ``facts``: the Keras model's own facts
    ({} for a saved reference); ``subject``: what is known of the model (run, card, flags)."""
    path, ready = subject.heldout
    classes = _classes(outputs, facts)
    if path is not None and not (ready and options.synthetic):
        raw, labels = subject.read(path, specs, outputs, options.samples,
                                   "held-out data" if ready else "validation data", facts, classes)
        if ready:
            inputs = Inputs(raw, labels, "held-out real data")
        else:
            arrays, decision = subject.to_model(raw, specs, facts, "validation", say)
            inputs = Inputs(arrays, labels, "user data", decision, str(next(iter(raw.values())).dtype))
    else:
        if len(specs) != 1:
            raise DataError(f"the model takes {len(specs)} inputs ({', '.join(s.name for s in specs)}); "
                            "synthetic inputs cover one", hint="pass --data with one array per input name")
        x = _synthetic(subject, specs, options)
        inputs = Inputs({specs[0].name: x}, {}, "synthetic inputs in the calibration range (weaker evidence)")
    return _finish(inputs, specs, options)


def _classes(outputs: list[str], facts: dict) -> dict:
    """Class count per output, where the model's output shape says it (labels beyond it are refused)."""
    return {name: n for name, n in zip(outputs, facts.get("output_classes") or [], strict=False) if n}


def _finish(inputs: Inputs, specs: list, options) -> Inputs:
    limit = options.samples
    arrays = {name: x[:limit] if limit else x for name, x in inputs.arrays.items()}
    labels = {name: y[:limit] if limit else y for name, y in inputs.labels.items()}
    counts = {len(x) for x in arrays.values()} | {len(y) for y in labels.values()}
    if len(counts) > 1:
        raise DataError(f"the arrays of {inputs.evidence} hold different numbers of samples: {sorted(counts)}")
    if not counts or counts == {0}:
        raise DataError(f"no samples to validate on ({inputs.evidence})", hint="pass --data with at least one sample")
    fitted = {spec.name: data_lib.fit_to_input(arrays[spec.name], tuple(spec.shape[1:]), f"validation {spec.name}",
                                               dtype=spec.dtype) for spec in specs}
    return Inputs(fitted, labels, inputs.evidence, inputs.preprocessing, inputs.raw_dtype)


def _synthetic(subject, specs, options) -> np.ndarray:
    low, high = subject.input_range() or (0.0, 1.0)
    count = options.synthetic or 256
    shape = tuple(d if d else 1 for d in specs[0].shape[1:])
    values = count * int(np.prod(shape, dtype=np.int64))
    if values * 4 > data_lib.max_data_bytes():
        raise DataError(f"--synthetic {count} samples of shape {shape} would need {values * 4 / 2**20:,.0f} MB",
                        hint="ask for fewer synthetic samples")
    rng = np.random.default_rng(options.seed)
    return rng.uniform(low, high, size=(count, *shape)).astype(np.float32)
