"""The one reader of ``.tflite`` flatbuffers: tensors, ops by builtin name, subgraphs, quantization.

Every part of edgedl that looks inside a TFLite model reads it here, once per model: export's checks
(quantized weights, op types, the fused LSTM's fixes, activation ranges), the microcontroller child,
per-layer drift and the LiteRT runner's op list. Rewriters change the parsed model through the views'
setters (or ``Op.options``) and ask for ``to_bytes()``.

The schema is TFLite's own ``schema.fbs`` compiled to Python, which three installed packages ship:
ai-edge-litert, tflite-micro and TensorFlow. None of them is needed to import this module. The first
one already imported is used, so the microcontroller child (numpy and tflite_micro only) and bench's
children never load TensorFlow or a second runtime for it; otherwise ai-edge-litert's, then
tflite-micro's, then TensorFlow's.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from ..core.errors import ArtifactError, RuntimeMissing

SCHEMAS = ("ai_edge_litert.schema_py_generated",
           "tflite_micro.tensorflow.lite.micro.python.schema_py_generated",
           "tensorflow.lite.python.schema_py_generated")
IDENTIFIER = b"TFL3"


@cache
def schema():
    """The flatc-generated Python module of TFLite's schema (see the module docstring for which)."""
    loaded = [name for name in SCHEMAS if name in sys.modules]
    for name in loaded + [n for n in SCHEMAS if n not in loaded]:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise RuntimeMissing("no TFLite schema module is installed", hint="pip install ai-edge-litert==2.3.0")


@cache
def _enum_names(enum: str) -> dict[int, str]:
    return {v: k for k, v in vars(getattr(schema(), enum)).items() if not k.startswith("_")}


def op_name(code: int) -> str:
    """The builtin operator's name for its code (``3`` → ``CONV_2D``): the one op-name map of edgedl."""
    return _enum_names("BuiltinOperator").get(int(code), "UNKNOWN")


def tensor_type_name(code: int) -> str:
    """``FLOAT32``, ``INT8``, ``INT16``… for a tensor's type code."""
    return _enum_names("TensorType").get(int(code), "?")


_NUMPY_TYPES = {"FLOAT32": "float32", "FLOAT16": "float16", "FLOAT64": "float64", "INT8": "int8", "UINT8": "uint8",
                "INT16": "int16", "UINT16": "uint16", "INT32": "int32", "UINT32": "uint32", "INT64": "int64",
                "UINT64": "uint64", "BOOL": "bool"}


def _text(value) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _ints(values) -> list[int]:
    return [] if values is None else [int(v) for v in values]


class Tensor:
    """One tensor of a subgraph: a view over the parsed model (setters change it)."""

    def __init__(self, raw, index: int, buffers: list) -> None:
        self.raw, self.index, self._buffers = raw, index, buffers

    @property
    def name(self) -> str:
        return _text(self.raw.name)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(_ints(self.raw.shape))

    @property
    def signature(self) -> tuple[int | None, ...]:
        """The shape with open sizes as None (the converter's shape_signature, -1 where open)."""
        dims = _ints(self.raw.shapeSignature) or list(self.shape)
        return tuple(None if d < 0 else d for d in dims)

    @property
    def type(self) -> str:
        """The schema's type name: FLOAT32, INT8, INT16…"""
        return tensor_type_name(self.raw.type)

    @property
    def dtype(self) -> str:
        """The numpy dtype name (``?`` for types numpy has no name for)."""
        return _NUMPY_TYPES.get(self.type, "?")

    @property
    def is_variable(self) -> bool:
        return bool(self.raw.isVariable)

    @property
    def scales(self) -> np.ndarray:
        q = self.raw.quantization
        return np.asarray([] if q is None or q.scale is None else q.scale, np.float32)

    @property
    def zero_points(self) -> np.ndarray:
        q = self.raw.quantization
        return np.asarray([] if q is None or q.zeroPoint is None else q.zeroPoint, np.int64)

    @property
    def scale(self) -> float:
        """The first (per-tensor) scale; 0.0 when the tensor is not quantized."""
        scales = self.scales
        return float(scales[0]) if len(scales) else 0.0

    @property
    def zero_point(self) -> int:
        points = self.zero_points
        return int(points[0]) if len(points) else 0

    @property
    def range(self) -> tuple[float, float] | None:
        """The (min, max) a calibration pass recorded, where it recorded exactly one."""
        q = self.raw.quantization
        if q is None or q.min is None or q.max is None or len(q.min) != 1 or len(q.max) != 1:
            return None
        return float(q.min[0]), float(q.max[0])

    @property
    def data(self) -> np.ndarray | None:
        """The constant's bytes (weights), or None for a tensor computed at run time."""
        buffer = self._buffers[self.raw.buffer] if 0 < self.raw.buffer < len(self._buffers) else None
        if buffer is None or buffer.data is None or len(buffer.data) == 0:
            return None
        return np.asarray(buffer.data, np.uint8)

    def set_quantization(self, scale, zero_point) -> None:
        """Give the tensor this scale and zero point (arrays for per-channel)."""
        self.raw.quantization.scale = np.atleast_1d(np.asarray(scale, np.float32)).copy()
        self.raw.quantization.zeroPoint = np.atleast_1d(np.asarray(zero_point, np.int64)).copy()

    def set_range(self, low: float, high: float) -> None:
        """Record (min, max) for the quantizer, in place of what calibration recorded."""
        self.raw.quantization.min = [float(low)]
        self.raw.quantization.max = [float(high)]


@dataclass(frozen=True)
class Op:
    """One operator: its builtin name, version, tensor indices and options (the schema's own object)."""

    index: int
    name: str  # builtin name (CONV_2D, CUSTOM…)
    custom_code: str  # for CUSTOM ops: the custom name (NumericVerify, FlexAddV2…), else ""
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    intermediates: tuple[int, ...]
    options: object  # the builtin options (e.g. UnidirectionalSequenceLSTMOptionsT); mutable, None if absent

    @property
    def label(self) -> str:
        """The name a runtime reports: the builtin name, or the custom code of a custom op."""
        return self.custom_code if self.name == "CUSTOM" and self.custom_code else self.name


class Subgraph:
    def __init__(self, raw, index: int, codes: list, buffers: list) -> None:
        self.raw, self.index = raw, index
        self.tensors = [Tensor(t, i, buffers) for i, t in enumerate(raw.tensors or [])]
        self.ops = [_op(op, i, codes) for i, op in enumerate(raw.operators or [])]

    @property
    def name(self) -> str:
        return _text(self.raw.name)

    @property
    def inputs(self) -> list[int]:
        return _ints(self.raw.inputs)

    @property
    def outputs(self) -> list[int]:
        return _ints(self.raw.outputs)

    def output_of(self, op: Op) -> Tensor | None:
        """An op's first output tensor (None for an op without outputs)."""
        return self.tensors[op.outputs[0]] if op.outputs and op.outputs[0] >= 0 else None


def _op(raw, index: int, codes: list) -> Op:
    code = codes[raw.opcodeIndex]
    # Codes above 127 live in builtinCode only; older files keep them in deprecatedBuiltinCode.
    builtin = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    return Op(index=index, name=op_name(builtin), custom_code=_text(code.customCode), version=int(code.version),
              inputs=tuple(_ints(raw.inputs)), outputs=tuple(_ints(raw.outputs)),
              intermediates=tuple(_ints(raw.intermediates)), options=raw.builtinOptions)


class TFLiteModel:
    """A ``.tflite`` model parsed once. ``subgraphs[0]`` is the main graph (WHILE/IF bodies follow)."""

    def __init__(self, flatbuffer: bytes | bytearray) -> None:
        blob = bytearray(flatbuffer)
        if len(blob) < 8 or blob[4:8] != IDENTIFIER:
            raise ArtifactError("not a TFLite model (no TFL3 identifier)")
        module = schema()
        try:
            self.model = module.ModelT.InitFromObj(module.Model.GetRootAs(blob, 0))
        except Exception as exc:  # a truncated or corrupt flatbuffer fails anywhere inside flatbuffers
            raise ArtifactError(f"not a readable TFLite model: {exc.__class__.__name__}: {str(exc)[:120]}") from exc
        self.size = len(blob)
        buffers = self.model.buffers or []
        self.subgraphs = [Subgraph(g, i, self.model.operatorCodes or [], buffers)
                          for i, g in enumerate(self.model.subgraphs or [])]

    @classmethod
    def read(cls, path: str | Path) -> TFLiteModel:
        return cls(Path(path).read_bytes())

    @property
    def main(self) -> Subgraph:
        return self.subgraphs[0]

    def ops(self) -> list[tuple[Subgraph, Op]]:
        """Every operator of every subgraph, in order."""
        return [(graph, op) for graph in self.subgraphs for op in graph.ops]

    def op_names(self, subgraph: int | None = None) -> list[str]:
        """Builtin (or custom) names of every op, of one subgraph or of all of them."""
        graphs = self.subgraphs if subgraph is None else [self.subgraphs[subgraph]]
        return [op.label for graph in graphs for op in graph.ops]

    def to_bytes(self) -> bytes:
        """The (possibly changed) model serialised again."""
        import flatbuffers

        builder = flatbuffers.Builder(self.size + 1024)
        builder.Finish(self.model.Pack(builder), file_identifier=IDENTIFIER)
        return bytes(builder.Output())
