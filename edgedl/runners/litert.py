"""LiteRT (TFLite) runner: ai-edge-litert first, tflite-runtime as fallback, tf.lite last.

It invokes one sample at a time, as an app on a device does, and resets variable tensors before
every invoke: the fused LSTM op keeps h/c state between invokes, which would otherwise leak from
one sample into the next.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import ArtifactError, RuntimeMissing
from .base import Runner, TensorInfo

# Ops that keep state between invokes: callers must reset variable tensors before each inference.
STATEFUL_OPS = {"UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "VAR_HANDLE",
                "READ_VARIABLE", "ASSIGN_VARIABLE", "UNIDIRECTIONAL_SEQUENCE_RNN"}


def interpreter_module():
    """(module, name) of the first TFLite interpreter that imports here."""
    try:
        from ai_edge_litert import interpreter as module

        return module, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as module

        return module, "tflite-runtime"
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite, "tf.lite"
    except ImportError as exc:
        raise RuntimeMissing("no TFLite interpreter is installed",
                             hint="pip install ai-edge-litert==2.3.0") from exc


def open_interpreter(path: str | Path, threads: int | None = 1, xnnpack: bool = True):
    """``threads=None`` leaves the interpreter's own default (as an app that sets nothing gets)."""
    module, _ = interpreter_module()
    kwargs = {"model_path": str(path)}
    if threads:
        kwargs["num_threads"] = threads
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = module.Interpreter(**kwargs)
        interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path} is not a loadable TFLite model: {' '.join(str(exc).split())[:200]}") from exc
    return interpreter


def _tensor_info(detail: dict) -> TensorInfo:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    signature = detail.get("shape_signature", detail["shape"])
    return TensorInfo(
        name=detail["name"],
        shape=tuple(None if int(d) < 0 else int(d) for d in signature),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
    )


class LiteRTRunner(Runner):
    backend = "litert"

    def __init__(self, path: str | Path, threads: int | None = 1, xnnpack: bool = True):
        super().__init__()
        self.path = Path(path)
        self.interpreter = open_interpreter(path, threads, xnnpack)
        self.library = interpreter_module()[1]
        self._in = self.interpreter.get_input_details()
        self._out = self.interpreter.get_output_details()
        self.inputs = [_tensor_info(d) for d in self._in]
        self.outputs = [_tensor_info(d) for d in self._out]
        ops = {op["op_name"] for op in self.interpreter._get_ops_details()}
        self.stateful = bool(ops & STATEFUL_OPS)
        self._fix_batch_one()

    def _fix_batch_one(self) -> None:
        """Dynamic-batch models are resized to batch 1: samples go through one by one."""
        for detail in self._in:
            if list(detail["shape"][:1]) != [1]:
                self.interpreter.resize_tensor_input(detail["index"], [1, *detail["shape"][1:]])
        self.interpreter.allocate_tensors()

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        count = len(feeds[0])
        results = [np.empty((count, *d["shape"][1:]), dtype=d["dtype"]) for d in self._out]
        for i in range(count):
            outputs = self.invoke_one([x[i : i + 1] for x in feeds])
            for store, value in zip(results, outputs, strict=True):
                store[i] = value[0]
        return results

    def invoke_one(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        """One already-quantized sample through the interpreter (the benchmark's unit of work)."""
        if self.stateful:
            self.interpreter.reset_all_variables()
        for detail, x in zip(self._in, feeds, strict=True):
            self.interpreter.set_tensor(detail["index"], x)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]) for d in self._out]

    def close(self) -> None:
        self.interpreter = None
