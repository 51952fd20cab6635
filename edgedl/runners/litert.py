"""LiteRT (TFLite) runner: ai-edge-litert first, tflite-runtime as fallback, tf.lite last.

It invokes one sample at a time, as an app on a device does, and resets variable tensors before
every invoke: the fused LSTM op keeps h/c state between invokes, which would otherwise leak from
one sample into the next.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.env import quiet_output
from ..core.errors import ArtifactError, RuntimeMissing
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
        with quiet_output():  # LiteRT prints an INFO banner to fd 2 when it applies XNNPACK
            interpreter = module.Interpreter(**kwargs)
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        raise ArtifactError(f"{path} is not a loadable TFLite model: {' '.join(str(exc).split())[:200]}") from exc
    return interpreter


def tensor_info(detail: dict, name: str | None = None) -> TensorInfo:
    """The one parser of LiteRT's tensor details (shape signature, dtype, scale, zero point)."""
    scale, zero_point = detail.get("quantization", (0.0, 0))
    signature = detail.get("shape_signature", detail["shape"])
    return TensorInfo(
        name=name or detail["name"],
        shape=tuple(None if int(d) < 0 else int(d) for d in signature),
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
        tensor=detail["name"],
    )


def signature_names(interpreter) -> tuple[dict[int, str], dict[int, str]]:
    """Tensor index → signature name, for inputs and outputs, when the model has one signature.

    Signature names are what the exporter named the tensors: Keras input names, and Keras output
    names or ``output_0``, ``output_1``… in Keras order. The interpreter's own tensor names
    (``StatefulPartitionedCall_1:0``) and the order of ``get_output_details()`` are not reliable.
    """
    signatures = interpreter.get_signature_list()
    if len(signatures) != 1:
        return {}, {}
    runner = interpreter.get_signature_runner(next(iter(signatures)))
    inputs = {d["index"]: name for name, d in runner.get_input_details().items()}
    outputs = {d["index"]: name for name, d in runner.get_output_details().items()}
    return inputs, outputs


def _signature_order(name: str) -> tuple:
    """output_10 after output_9; other names alphabetically."""
    head, _, number = name.rpartition("_")
    return (head, int(number), "") if head == "output" and number.isdigit() else (name, -1, name)


def op_names(interpreter) -> list[str]:
    """Every operator of the model, in execution order (builtin names, e.g. CONV_2D)."""
    return [op["op_name"] for op in interpreter._get_ops_details()]


class LiteRTRunner(Runner):
    backend = "litert"

    def __init__(self, path: str | Path, threads: int | None = 1, xnnpack: bool = True):
        super().__init__()
        self.path = Path(path)
        self.interpreter = open_interpreter(path, threads, xnnpack)
        self._library = interpreter_module()[1]
        in_names, out_names = signature_names(self.interpreter)
        self._in = self.interpreter.get_input_details()
        self._out = sorted(self.interpreter.get_output_details(),
                           key=lambda d: _signature_order(out_names.get(d["index"], d["name"])))
        self.inputs = [tensor_info(d, in_names.get(d["index"])) for d in self._in]
        self.outputs = [tensor_info(d, out_names.get(d["index"])) for d in self._out]
        self.stateful = bool(set(op_names(self.interpreter)) & STATEFUL_OPS)
        self._fed = None
        self.set_batch(1)  # samples go through one by one, as on a device

    @property
    def library(self) -> str:
        return self._library

    def set_batch(self, batch: int) -> None:
        if all(list(d["shape"][:1]) == [batch] for d in self._in):
            return
        try:
            for detail in self._in:
                self.interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
            self.interpreter.allocate_tensors()
        except (RuntimeError, ValueError) as exc:
            raise ArtifactError(f"{self.path.name} has a fixed batch of {self._in[0]['shape'][0]} and cannot run "
                                f"batch {batch} (edgedl's TFLite exports are batch 1, as devices run them; ONNX "
                                "exports take any batch)") from exc
        by_index = {d["index"]: d for d in self.interpreter.get_input_details()}
        self._in = [by_index[d["index"]] for d in self._in]  # same order, fresh shapes
        by_index = {d["index"]: d for d in self.interpreter.get_output_details()}
        self._out = [by_index[d["index"]] for d in self._out]
        self._fed = None

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        count = len(feeds[0])
        results = [np.empty((count, *d["shape"][1:]), dtype=d["dtype"]) for d in self._out]
        for i in range(count):
            self._invoke([x[i : i + 1] for x in feeds])
            for store, detail in zip(results, self._out, strict=True):
                store[i] = self.interpreter.get_tensor(detail["index"])[0]
        self._fed = None
        return results

    def _invoke(self, feeds: list[np.ndarray]) -> None:
        if self.stateful:
            self.interpreter.reset_all_variables()
        for detail, x in zip(self._in, feeds, strict=True):
            self.interpreter.set_tensor(detail["index"], x)
        self.interpreter.invoke()

    def _step(self, feeds: list[np.ndarray]) -> None:
        """What benchmark_model times: invoke(), plus the state reset a stateful model needs every call.

        A benchmark feeds the same input every call, so it is set on the first call only;
        reading outputs is left out, as in benchmark_model.
        """
        if self._fed is not feeds:
            for detail, x in zip(self._in, feeds, strict=True):
                self.interpreter.set_tensor(detail["index"], x)
            self._fed = feeds
        if self.stateful:
            self.interpreter.reset_all_variables()
        self.interpreter.invoke()

    def stepper(self, feeds: list[np.ndarray]):
        """Inputs set once, outside the timed call; the call is invoke(), after reset_all_variables() for a
        stateful model: exactly what a bare loop or a device app does per inference."""
        for detail, x in zip(self._in, feeds, strict=True):
            self.interpreter.set_tensor(detail["index"], x)
        self._fed = feeds
        interpreter = self.interpreter
        if not self.stateful:
            return interpreter.invoke

        def reset_and_invoke() -> None:
            interpreter.reset_all_variables()
            interpreter.invoke()

        return reset_and_invoke

    def ops(self) -> list[str]:
        return op_names(self.interpreter)

    def _release(self) -> None:
        self.interpreter = None
