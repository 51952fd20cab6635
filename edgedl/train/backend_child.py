"""The training process for a JAX or PyTorch backend (started by backends.train_in_child).

    python -m edgedl.train.backend_child SPEC.json

KERAS_BACKEND is set in this process's environment before anything imports Keras. TensorFlow is
made unimportable here: Keras' own seeding (keras.utils.set_random_seed) would otherwise import it
whenever it is installed (+1.4 s, +380 MB, and a second framework touching the GPU); the weights
are the same without it (measured on JAX and PyTorch, 2026-11-27). The result — the run's manifest,
or the error in one line — is written to the file the spec names.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(spec_path: str) -> int:
    sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError: Keras treats TF as absent
    spec = json.loads(Path(spec_path).read_text())
    result = Path(spec["result"])
    from ..core.errors import EdgedlError, UsageError
    from ..recipe import TrainConfig
    from .fit import train

    fields = dict(spec["config"], out=Path(spec["config"]["out"]))
    try:
        manifest = train(TrainConfig(**fields), say=lambda m: print(m, file=sys.stderr, flush=True))
    except EdgedlError as exc:
        result.write_text(json.dumps({"error": exc.one_line(), "usage": isinstance(exc, UsageError)}))
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the parent reports it in one line
        result.write_text(json.dumps({"error": f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:300]}"}))
        return 1
    result.write_text(json.dumps({"manifest": manifest}, default=str))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.exit(main(sys.argv[1]))
