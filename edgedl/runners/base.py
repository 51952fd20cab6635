"""One Runner interface for every backend: float inputs in, float outputs out.

The public ``infer`` checks the inputs against the model's declared I/O, quantizes int8/uint8
inputs and dequantizes outputs with each tensor's scale and zero point, and leaves only loading
and running to the backend hook ``_run``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple  # batch axis first; None where the model leaves a size open
    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8", "int16") and self.scale > 0

    def as_dict(self) -> dict:
        quant = {"scale": self.scale, "zero_point": self.zero_point} if self.quantized else None
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "quantization": quant}


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: str) -> np.ndarray:
    info = np.iinfo(dtype)
    q = np.round(np.asarray(x, dtype=np.float32) / np.float32(scale)) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return (q.astype(np.float32) - np.float32(zero_point)) * np.float32(scale)


class Runner:
    """Load a model once, then ``infer`` batches of float inputs. Subclasses implement ``_run``."""

    backend = "base"

    def __init__(self) -> None:
        self.inputs: list[TensorInfo] = []
        self.outputs: list[TensorInfo] = []

    def infer(self, inputs: list[np.ndarray] | np.ndarray) -> list[np.ndarray]:
        """Run a batch. ``inputs`` holds one float array per model input, batch axis first."""
        arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        self._check(arrays)
        feeds = [self._to_model(x, spec) for x, spec in zip(arrays, self.inputs, strict=True)]
        raw = self._run(feeds)
        return [self._from_model(y, spec) for y, spec in zip(raw, self.outputs, strict=True)]

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

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

    @staticmethod
    def _to_model(x: np.ndarray, spec: TensorInfo) -> np.ndarray:
        if spec.quantized:
            return quantize(x, spec.scale, spec.zero_point, spec.dtype)
        if spec.dtype.startswith(("int", "uint")):  # token ids (Embedding inputs) are integers, not scaled
            return np.asarray(np.round(x), dtype=spec.dtype)
        return np.asarray(x, dtype=spec.dtype if spec.dtype.startswith("float") else np.float32)

    @staticmethod
    def _from_model(y: np.ndarray, spec: TensorInfo) -> np.ndarray:
        if spec.quantized:
            return dequantize(y, spec.scale, spec.zero_point)
        return np.asarray(y, dtype=np.float32)

    def describe(self) -> dict:
        return {"backend": self.backend, "inputs": [t.as_dict() for t in self.inputs],
                "outputs": [t.as_dict() for t in self.outputs]}

    def close(self) -> None:
        """Release the model; runners are also context managers."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
