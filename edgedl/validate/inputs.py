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
from pathlib import Path

import numpy as np

from .. import data as data_lib
from ..core.errors import DataError


@dataclass
class Inputs:
    arrays: dict[str, np.ndarray]  # input name → model-ready samples, in the model's input order
    labels: dict[str, np.ndarray]  # output name → labels, for the outputs that have them
    evidence: str
    preprocessing: dict | None = None  # what was decided for raw data (None: already model inputs)

    @property
    def count(self) -> int:
        return len(next(iter(self.arrays.values())))

    @property
    def as_list(self) -> list[np.ndarray]:
        return list(self.arrays.values())


def gather_inputs(model_dir: Path | None, manifest: dict | None, specs: list, outputs: list[str], options,
                  context: dict, say=print) -> Inputs:
    """``specs``: the model's inputs (name, shape, dtype); ``context``: model facts, declared
    preprocessing and the data path a card may name."""
    data_path = options.data or context.get("heldout")
    if data_path:
        inputs = _from_user_data(Path(data_path), specs, outputs, options, manifest, model_dir, context, say)
    elif manifest and manifest.get("heldout") and not options.synthetic:
        arrays, labels = data_lib.read_named(model_dir / manifest["heldout"]["file"], [s.name for s in specs],
                                             outputs, options.samples, "held-out data")
        inputs = Inputs(arrays, labels, "held-out real data")
    else:
        x = _synthetic(model_dir, manifest, specs, options)
        inputs = Inputs({specs[0].name: x}, {}, "synthetic inputs in the calibration range (weaker evidence)")
        if len(specs) != 1:
            raise DataError(f"the model takes {len(specs)} inputs ({', '.join(s.name for s in specs)}); "
                            "synthetic inputs cover one", hint="pass --data with one array per input name")
    return _finish(inputs, specs, options)


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
    return Inputs(fitted, labels, inputs.evidence, inputs.preprocessing)


def _from_user_data(path: Path, specs: list, outputs: list[str], options, manifest, model_dir, context,
                    say) -> Inputs:
    raw, labels = data_lib.read_named(path, [s.name for s in specs], outputs, options.samples, "validation data")
    for spec in specs:  # the shape first: a wrong shape is the clearer message than the range it then has
        data_lib.fit_to_input(raw[spec.name][:1], tuple(spec.shape[1:]), f"validation {spec.name}", dtype=spec.dtype)
    facts = context.get("facts", {})
    first_float = next((raw[s.name] for s in specs if not s.dtype.startswith(("int", "uint"))), None)
    recorded = ((manifest or {}).get("dataset") or {}).get("preprocessing")
    preprocessing = None
    if first_float is not None:
        preprocessing = data_lib.decide_preprocessing(first_float.dtype, 1 / 255 if first_float.dtype == np.uint8
                                                      else 1.0, facts, context.get("declared"), recorded)
        say(f"input preprocessing: {preprocessing['reason']}")
    arrays = {}
    for spec in specs:
        integer = spec.dtype.startswith(("int", "uint"))
        arrays[spec.name] = raw[spec.name] if integer or preprocessing is None else \
            data_lib.apply_preprocessing(raw[spec.name], preprocessing)
        if not integer:
            data_lib.check_range(arrays[spec.name], reference_range(manifest, model_dir),
                                 f"validation input {spec.name!r} after preprocessing", "the training inputs")
    return Inputs(arrays, labels, "user data", preprocessing)


def reference_range(manifest: dict | None, model_dir: Path | None) -> list[float] | None:
    """The range of the inputs the model was fitted to: recorded at training, else its calibration set."""
    recorded = (((manifest or {}).get("dataset") or {}).get("preprocessing") or {}).get("input_range")
    if recorded:
        return recorded
    if manifest and manifest.get("calibration") and model_dir is not None:
        with np.load(model_dir / manifest["calibration"]["file"], allow_pickle=False) as archive:
            calibration = archive["x"]
        if calibration.dtype.kind == "f":
            return data_lib.value_range(calibration)
    return None


def _synthetic(model_dir, manifest, specs, options) -> np.ndarray:
    low, high = reference_range(manifest, model_dir) or (0.0, 1.0)
    count = options.synthetic or 256
    shape = tuple(d if d else 1 for d in specs[0].shape[1:])
    values = count * int(np.prod(shape, dtype=np.int64))
    if values * 4 > data_lib.max_data_bytes():
        raise DataError(f"--synthetic {count} samples of shape {shape} would need {values * 4 / 2**20:,.0f} MB",
                        hint="ask for fewer synthetic samples")
    rng = np.random.default_rng(options.seed)
    return rng.uniform(low, high, size=(count, *shape)).astype(np.float32)
