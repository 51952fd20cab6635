"""onnxruntime runner (CPU execution provider), batch-at-a-time with a dynamic batch axis."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError, RuntimeMissing
from .base import Runner, TensorInfo

CHUNK = 256


def make_session(path: str | Path, threads: int = 1):
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeMissing("onnxruntime is not installed", hint="pip install onnxruntime==1.32.0") from exc
    options = ort.SessionOptions()
    if threads:  # 0 keeps onnxruntime's default (one thread per core), as a user who sets nothing gets
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        raise ArtifactError(f"{path} is not a loadable ONNX model: {' '.join(str(exc).split())[:200]}") from exc


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(double)": "float64"}


def _tensor_info(arg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorInfo(name=arg.name, shape=shape, dtype=_ORT_TYPES.get(arg.type, arg.type))


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int = 1):
        super().__init__()
        self.path = Path(path)
        self.session = make_session(path, threads)
        self.inputs = [_tensor_info(a) for a in self.session.get_inputs()]
        self.outputs = [_tensor_info(a) for a in self.session.get_outputs()]
        self._names = [t.name for t in self.inputs]
        first = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None
        self._chunk = 1 if first == 1 else CHUNK

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        count = len(feeds[0])
        parts = [self.session.run(None, dict(zip(self._names, [x[i : i + self._chunk] for x in feeds], strict=True)))
                 for i in range(0, count, self._chunk)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(self.outputs))]

    def run_raw(self, feed: dict) -> list[np.ndarray]:
        return self.session.run(None, feed)

    def close(self) -> None:
        self.session = None
