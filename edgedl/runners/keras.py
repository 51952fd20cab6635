"""The reference: the original Keras model, through its compiled predict path.

Eager ``model(x)`` on an LSTM costs ~25 ms a call here; ``predict_on_batch`` reuses one traced
function, so 1,000 samples take a fraction of a second.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..core.errors import ArtifactError
from .base import EVERY_TENSOR, Runner, TensorInfo
from .modelio import output_names

CHUNK = 256


def _tensor_info(tensor, name: str | None = None) -> TensorInfo:
    return TensorInfo(
        name=name or tensor.name.split(":")[0],
        shape=tuple(None if d is None else int(d) for d in tensor.shape),
        dtype=str(tensor.dtype),
    )


class KerasRunner(Runner):
    backend = "keras"

    def __init__(self, model_or_path, safe_mode: bool = True, threads: int | None = None):
        super().__init__()
        if threads:
            _limit_threads(threads)
        if isinstance(model_or_path, (str, Path)):
            from .modelio import load_keras_model

            model_or_path = load_keras_model(model_or_path, safe_mode=safe_mode)
        self.model = model_or_path
        self.inputs = [_tensor_info(t) for t in self.model.inputs]
        self.outputs = [_tensor_info(t, name) for t, name in
                        zip(self.model.outputs, output_names(self.model), strict=True)]

    def with_outputs(self, names: list[str] | str) -> KerasRunner:
        """Layer names, or EVERY_TENSOR (every layer but the inputs): a functional sub-model whose
        outputs are those layers' outputs."""
        import keras

        layers = {layer.name: layer for layer in self.model.layers}
        if names == EVERY_TENSOR:
            names = [n for n, layer in layers.items() if layer.__class__.__name__ != "InputLayer"]
        missing = [n for n in names if n not in layers]
        if missing:
            raise ArtifactError(f"the Keras model has no layer {', '.join(map(str, missing[:5]))}"
                                f"{f' (and {len(missing) - 5} more)' if len(missing) > 5 else ''}")
        sub = keras.Model(self.model.inputs, [layers[n].output for n in names])
        runner = KerasRunner(sub)
        runner.outputs = [replace(info, name=n) for info, n in zip(runner.outputs, names, strict=True)]
        return runner

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        count = len(feeds[0])
        parts = []
        for i in range(0, count, CHUNK):
            chunk = [x[i : i + CHUNK] for x in feeds]
            result = self.model.predict_on_batch(chunk if len(chunk) > 1 else chunk[0])
            parts.append([np.asarray(r) for r in (result if isinstance(result, (list, tuple)) else [result])])
        return [np.concatenate([p[k] for p in parts]) for k in range(len(self.outputs))]

    def _step(self, feeds: list[np.ndarray]) -> None:
        self.model.predict_on_batch(feeds if len(feeds) > 1 else feeds[0])

    def _release(self) -> None:
        self.model = None


def _limit_threads(threads: int) -> None:
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
    except RuntimeError:
        # TensorFlow fixes its pools at first use; a process that already ran TF keeps them.
        pass
