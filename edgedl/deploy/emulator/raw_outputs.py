"""Runs on the (emulated) device: raw output tensors of a bundle's model for given inputs.

    python raw_outputs.py BUNDLE_DIR INPUTS.npy OUT.npy

Uses the bundle's own run.py (interpreter choice, quantized I/O, state reset), so what is checked
is exactly what an app on the device runs. Needs only numpy and a TFLite interpreter.
"""

import json
import sys
from pathlib import Path

import numpy as np


def main(argv):
    bundle, inputs, out = argv[:3]
    sys.path.insert(0, bundle)
    import run  # the bundle's own run.py

    model = run.Model(Path(bundle))
    samples = np.load(inputs, allow_pickle=False)
    raw = np.stack([model.raw([sample])[0][0] for sample in samples])  # first input and output
    np.save(out, raw)
    print(json.dumps({"library": model.library, "numpy": np.__version__, "count": int(len(samples))}))


if __name__ == "__main__":
    main(sys.argv[1:])
