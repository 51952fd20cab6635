"""One Runner interface for every backend: float inputs in, float outputs out.

The public face, used by every caller (validate, bench's child, bundle, drift, export's recipe
scoring):

- ``infer(inputs)``: float arrays in, float arrays out, whole batches;
- ``prepare(inputs)`` → feeds in the model's own dtypes (quantized with each tensor's scale and
  zero point), ``run(feeds)`` → raw outputs in the model's dtypes, ``dequantize(raw)`` → floats;
- ``step(feeds)``: one call on prepared feeds; ``stepper(feeds)`` binds it once into a call without
  arguments, the unit a benchmark times (the runtime's own call, plus a stateful model's state reset);
- ``set_batch(n)``: resize a fixed-batch model where the runtime allows it;
- ``with_outputs(names)``: a runner over the same model whose outputs are the named tensors,
  intermediate ones included (``EVERY_TENSOR`` for all of them), so per-layer drift and calibration
  ranges read activations through the same face (Polygraphy's ModifyOutputs, per backend).

A backend implements only loading and ``_run`` (and, where it differs, ``_step``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np

from ..core.errors import DataError, EdgedlError

Feed = list[np.ndarray] | np.ndarray | dict[str, np.ndarray]
# ``with_outputs(EVERY_TENSOR)``: every tensor the backend can expose (each op's outputs)
EVERY_TENSOR = "*"


@dataclass(frozen=True)
class TensorInfo:
    name: str  # the model's own name for it (the Keras name, for edgedl's exports)
    shape: tuple  # batch axis first; None where the model leaves a size open
    dtype: str
    scale: float = 0.0
    zero_point: int = 0
    tensor: str | None = None  # the runtime's tensor name, where it differs (TFLite: serving_default_x:0)

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8", "int16") and self.scale > 0

    def as_dict(self) -> dict:
        quant = {"scale": self.scale, "zero_point": self.zero_point} if self.quantized else None
        facts = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "quantization": quant}
        return facts | ({"tensor": self.tensor} if self.tensor and self.tensor != self.name else {})


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


class Runner:
    """Load a model once, then run batches. Subclasses implement ``_run`` (and may override ``_step``)."""

    backend = "base"

    def __init__(self) -> None:
        self.inputs: list[TensorInfo] = []
        self.outputs: list[TensorInfo] = []
        self.stateful = False  # ops that keep state between invokes: reset before every inference
        self._open = True

    @property
    def library(self) -> str:
        """The runtime package that executes the model (LiteRT may fall back to another)."""
        return self.backend

    # ------------------------------------------------------------ the public face

    def infer(self, inputs: Feed) -> list[np.ndarray]:
        """Run a batch: one float array per model input (a list in ``inputs`` order, or a dict by
        name), batch axis first. Outputs come in ``outputs`` order."""
        return self.dequantize(self.run(self.prepare(inputs)))

    def prepare(self, inputs: Feed) -> list[np.ndarray]:
        """Check float inputs against the model's declared I/O and convert them to its dtypes."""
        arrays = self._ordered(inputs)
        self._check(arrays)
        return [self.to_model(x, spec) for x, spec in zip(arrays, self.inputs, strict=True)]

    def run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        """Prepared feeds in, the model's raw outputs (its own dtypes) out."""
        self._require_open()
        return self._run(feeds)

    def dequantize(self, raw: list[np.ndarray]) -> list[np.ndarray]:
        return [self.from_model(y, spec) for y, spec in zip(raw, self.outputs, strict=True)]

    def step(self, feeds: list[np.ndarray]) -> None:
        """One inference on prepared feeds, outputs left in the runtime: what a benchmark times."""
        self._step(feeds)

    def stepper(self, feeds: list[np.ndarray]) -> Callable[[], object]:
        """``step(feeds)`` bound once, for a timed loop: the runtime's call and what a device pays every
        inference (a stateful model's state reset), with the feeding and lookups done here, untimed."""
        return partial(self._step, feeds)

    def set_batch(self, batch: int) -> None:
        """Make the model take ``batch`` samples per call; runtimes with a dynamic batch need nothing."""

    def with_outputs(self, names: list[str | int] | str) -> Runner:
        """A new runner over the same model whose outputs are ``names``, in that order: tensors inside
        the model as well as its outputs, or ``EVERY_TENSOR``. What a name is depends on the backend:
        a tensor name (TFLite also takes a tensor index, as names need not be unique there; ONNX) or a
        layer name (Keras). Unknown names are an ArtifactError that lists them. The new runner is
        independent of this one: close both."""
        raise EdgedlError(f"the {self.backend} runner cannot expose tensors inside the model")

    @staticmethod
    def to_model(x: np.ndarray, spec: TensorInfo) -> np.ndarray:
        if spec.quantized:
            return quantize(x, spec.scale, spec.zero_point, spec.dtype)
        if spec.dtype.startswith(("int", "uint")):  # token ids (Embedding inputs) are integers, not scaled
            return np.asarray(np.round(x), dtype=spec.dtype)
        return np.asarray(x, dtype=spec.dtype if spec.dtype.startswith("float") else np.float32)

    @staticmethod
    def from_model(y: np.ndarray, spec: TensorInfo) -> np.ndarray:
        if spec.quantized:
            return dequantize(y, spec.scale, spec.zero_point)
        return np.asarray(y, dtype=np.float32)

    def describe(self) -> dict:
        return {"backend": self.backend, "inputs": [t.as_dict() for t in self.inputs],
                "outputs": [t.as_dict() for t in self.outputs]}

    def close(self) -> None:
        """Release the model; runners are also context managers."""
        self._open = False
        self._release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------ backend hooks

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _step(self, feeds: list[np.ndarray]) -> None:
        self._run(feeds)

    def _release(self) -> None:
        """Drop the backend's session or interpreter."""

    # ------------------------------------------------------------ checks

    def _require_open(self) -> None:
        if not self._open:
            raise EdgedlError(f"{self.backend} runner was closed; open a new one")

    def _ordered(self, inputs: Feed) -> list[np.ndarray]:
        if isinstance(inputs, np.ndarray):
            return [inputs]
        if not isinstance(inputs, dict):
            return list(inputs)
        names = [t.name for t in self.inputs]
        missing = [n for n in names if n not in inputs]
        if missing:
            raise DataError(f"{self.backend}: model takes inputs {', '.join(names)}; got {', '.join(inputs) or 'none'}",
                            hint="name one array per model input")
        return [inputs[n] for n in names]

    def _check(self, arrays: list[np.ndarray]) -> None:
        if len(arrays) != len(self.inputs):
            raise DataError(f"{self.backend}: model takes {len(self.inputs)} inputs, got {len(arrays)}")
        for x, spec in zip(arrays, self.inputs, strict=True):
            expected = tuple(spec.shape[1:])
            if x.ndim != len(spec.shape) or any(
                e is not None and e != s for e, s in zip(expected, x.shape[1:], strict=True)
            ):
                raise DataError(
                    f"{self.backend}: input {spec.name!r} expects samples of shape "
                    f"{tuple('?' if e is None else e for e in expected)}, got {tuple(x.shape[1:])}"
                )


def join_batches(parts: list[np.ndarray]) -> np.ndarray:
    """Outputs of consecutive batches, joined on the batch axis; a scalar (a shape or a constant, which
    a graph with every tensor exposed also returns) is the same for every batch: the first is kept."""
    arrays = [np.asarray(p) for p in parts]
    return arrays[0] if arrays[0].ndim == 0 else np.concatenate(arrays)
