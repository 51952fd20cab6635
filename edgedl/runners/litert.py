"""LiteRT (TFLite) runner: ai-edge-litert first, tflite-runtime as fallback, tf.lite last.

It invokes one sample at a time, as an app on a device does, and resets variable tensors before
every invoke: the fused LSTM op keeps h/c state between invokes, which would otherwise leak from
one sample into the next.

``with_outputs`` opens the model with ``experimental_preserve_all_tensors`` (the interpreter's public
option, which also leaves the default delegates out: XNNPACK would fuse intermediate tensors away)
and reads the named tensors with ``get_tensor`` after each invoke.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.env import quiet_output
from ..core.errors import ArtifactError, RuntimeMissing
from .base import EVERY_TENSOR, Runner, TensorInfo
from .tflite_model import TFLiteModel

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


def open_interpreter(path: str | Path | bytes, threads: int | None = 1, xnnpack: bool = True,
                     preserve_all_tensors: bool = False):
    """``threads=None`` leaves the interpreter's own default (as an app that sets nothing gets).
    ``path`` may also be the model's bytes."""
    module, _ = interpreter_module()
    kwargs = {"model_content": path} if isinstance(path, bytes) else {"model_path": str(path)}
    if isinstance(path, bytes):
        path = "the model"
    if threads:
        kwargs["num_threads"] = threads
    if not xnnpack:
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
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


class LiteRTRunner(Runner):
    backend = "litert"

    def __init__(self, path: str | Path | bytes, threads: int | None = 1, xnnpack: bool = True,
                 tensors: list[str | int] | str | None = None):
        """``path``: a .tflite file or the model's bytes. ``tensors``: see ``with_outputs``."""
        super().__init__()
        self._source, self._threads, self._xnnpack = path, threads, xnnpack
        self.path = Path(path) if not isinstance(path, bytes) else Path("model.tflite")
        self.interpreter = open_interpreter(path, threads, xnnpack, preserve_all_tensors=tensors is not None)
        self.flatbuffer = TFLiteModel(path) if isinstance(path, bytes) else TFLiteModel.read(path)
        self._library = interpreter_module()[1]
        in_names, out_names = signature_names(self.interpreter)
        self._in = self.interpreter.get_input_details()
        if tensors is None:
            self._out = sorted(self.interpreter.get_output_details(),
                               key=lambda d: _signature_order(out_names.get(d["index"], d["name"])))
        else:
            self._out = self._tensor_details(tensors)
        self.inputs = [tensor_info(d, in_names.get(d["index"])) for d in self._in]
        self.outputs = [tensor_info(d, out_names.get(d["index"]) if tensors is None else None) for d in self._out]
        self._tapped = tensors is not None
        self.stateful = bool(set(self.ops()) & STATEFUL_OPS)
        self._fed = None
        self.set_batch(1)  # samples go through one by one, as on a device

    def with_outputs(self, names: list[str | int] | str) -> LiteRTRunner:
        """Tensor names or indices of the main graph, or EVERY_TENSOR: the graph's inputs and every op's
        outputs. Each output has one row per sample: a tensor of batch 1 gives its sample, any other
        tensor (a shape, a flattened vector) is stacked whole. A tensor the runtime keeps no value for
        after an invoke (a fused op's internals) comes back empty: ``size == 0``."""
        return LiteRTRunner(self._source, self._threads, self._xnnpack, tensors=names)

    def _tensor_details(self, wanted: list[str | int] | str) -> list[dict]:
        details = self.interpreter.get_tensor_details()
        by_index = {d["index"]: d for d in details}
        if wanted == EVERY_TENSOR:
            graph = self.flatbuffer.main
            produced = set(graph.inputs) | {i for op in graph.ops for i in op.outputs if i >= 0}
            return [by_index[i] for i in sorted(produced) if i in by_index and not graph.tensors[i].is_variable]
        by_name = {}
        for detail in details:
            by_name.setdefault(detail["name"], detail)
        found = [by_index.get(w) if isinstance(w, int) else by_name.get(w) for w in wanted]
        missing = [str(w) for w, d in zip(wanted, found, strict=True) if d is None]
        if missing:
            raise ArtifactError(f"{self.path.name} has no tensor {', '.join(missing[:5])}"
                                f"{f' (and {len(missing) - 5} more)' if len(missing) > 5 else ''}")
        return found

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
        outputs = self.interpreter.get_tensor_details() if self._tapped else self.interpreter.get_output_details()
        by_index = {d["index"]: d for d in outputs}
        self._out = [by_index[d["index"]] for d in self._out]
        self._fed = None

    def _run(self, feeds: list[np.ndarray]) -> list[np.ndarray]:
        count = len(feeds[0])
        if self._tapped:
            return self._run_tapped(feeds, count)
        results = [np.empty((count, *d["shape"][1:]), dtype=d["dtype"]) for d in self._out]
        for i in range(count):
            self._invoke([x[i : i + 1] for x in feeds])
            for store, detail in zip(results, self._out, strict=True):
                store[i] = self.interpreter.get_tensor(detail["index"])[0]
        self._fed = None
        return results

    def _run_tapped(self, feeds: list[np.ndarray], count: int) -> list[np.ndarray]:
        rows = [[] for _ in self._out]
        for i in range(count):
            self._invoke([x[i : i + 1] for x in feeds])
            for store, detail in zip(rows, self._out, strict=True):
                try:
                    value = self.interpreter.get_tensor(detail["index"])
                except ValueError:  # the runtime keeps no value for it (a fused op's internal state)
                    value = np.empty((0,), detail["dtype"])
                store.append(value[0] if value.ndim and value.shape[0] == 1 else value.copy())
        self._fed = None
        return [np.stack(store) if all(v.size for v in store) else np.empty((count, 0), store[0].dtype)
                for store in rows]

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
        """Every operator of the main graph, in order (builtin names, e.g. CONV_2D; a custom op's name)."""
        return self.flatbuffer.op_names(subgraph=0)

    def _release(self) -> None:
        self.interpreter = None
