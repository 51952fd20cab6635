"""onnxruntime runner (CPU execution provider), batch-at-a-time with a dynamic batch axis."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ..core.errors import ArtifactError, RuntimeMissing
from .base import EVERY_TENSOR, Runner, TensorInfo, join_batches

CHUNK = 256


def make_session(model: str | Path | bytes, threads: int | None = 1):
    """A CPU session over a file or serialized model bytes."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise RuntimeMissing("onnxruntime is not installed", hint="pip install onnxruntime==1.32.0") from exc
    options = ort.SessionOptions()
    if threads:  # None/0 keep onnxruntime's default (one thread per core), as a user who sets nothing gets
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        where = "the model" if isinstance(model, bytes) else model
        raise ArtifactError(f"{where} is not a loadable ONNX model: {' '.join(str(exc).split())[:200]}") from exc


_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(int64)": "int64", "tensor(int32)": "int32",
              "tensor(double)": "float64", "tensor(bool)": "bool"}


def _tensor_info(arg) -> TensorInfo:
    shape = tuple(d if isinstance(d, int) else None for d in arg.shape)
    return TensorInfo(name=arg.name, shape=shape, dtype=_ORT_TYPES.get(arg.type, arg.type))


def with_graph_outputs(model_bytes: bytes, names: list[str] | str) -> bytes:
    """A copy of the graph whose outputs are the named tensors, or every tensor (EVERY_TENSOR),
    as Polygraphy's ModifyOutputs does. onnxruntime infers the types of outputs declared by name."""
    import onnx

    model = onnx.load_from_string(model_bytes)
    produced = [name for node in model.graph.node for name in node.output if name]
    known = set(produced) | {v.name for v in model.graph.input} | {t.name for t in model.graph.initializer}
    # every tensor: the graph's own outputs first, then each node's, in graph order
    every = [o.name for o in model.graph.output] + produced
    wanted = list(dict.fromkeys(every)) if names == EVERY_TENSOR else list(names)
    missing = [name for name in wanted if name not in known]
    if missing:
        raise ArtifactError(f"the ONNX graph has no tensor {', '.join(missing[:5])}"
                            f"{f' (and {len(missing) - 5} more)' if len(missing) > 5 else ''}")
    declared = {v.name: v for v in model.graph.output}
    del model.graph.output[:]
    model.graph.output.extend([declared.get(name) or onnx.ValueInfoProto(name=name) for name in wanted])
    return model.SerializeToString()


class OnnxRuntimeRunner(Runner):
    backend = "onnxruntime"

    def __init__(self, model: str | Path | bytes, threads: int | None = 1):
        super().__init__()
        self.path = None if isinstance(model, bytes) else Path(model)
        self._source, self._threads = model, threads
        self.session = make_session(model, threads)
        self.inputs = [_tensor_info(a) for a in self.session.get_inputs()]
        self.outputs = [_tensor_info(a) for a in self.session.get_outputs()]
        self._names = [t.name for t in self.inputs]
        first = self.inputs[0].shape[0] if self.inputs and self.inputs[0].shape else None
        self._chunk = 1 if first == 1 else CHUNK

    def with_outputs(self, names: list[str] | str) -> OnnxRuntimeRunner:
        """Tensor names of the graph, or EVERY_TENSOR (its outputs, then every node's, in graph order)."""
        blob = self._source if isinstance(self._source, bytes) else Path(self._source).read_bytes()
        return OnnxRuntimeRunner(with_graph_outputs(blob, names), self._threads)

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        count = len(feeds[0])
        parts = [self.session.run(None, dict(zip(self._names, [x[i : i + self._chunk] for x in feeds], strict=True)))
                 for i in range(0, count, self._chunk)]
        if len(parts) == 1:  # also keeps outputs without a batch axis (shapes, scalars) as they are
            return [np.asarray(value) for value in parts[0]]
        return [join_batches([p[k] for p in parts]) for k in range(len(self.outputs))]

    def _step(self, feeds: list[np.ndarray]) -> None:
        self.session.run(None, dict(zip(self._names, feeds, strict=True)))

    def stepper(self, feeds: list[np.ndarray]):
        """session.run on a feed dict built once (``step`` builds it every call)."""
        return partial(self.session.run, None, dict(zip(self._names, feeds, strict=True)))

    def _release(self) -> None:
        self.session = None
