"""Keras → TFLite in float32, float16, dynamic-range, full-integer int8, int16x8 (16-bit activations,
8-bit weights) and mixed (int8 with chosen Keras layers kept in float), builtin ops only.

Models with LSTM layers (Bidirectional and go_backwards included) go through the fused
UNIDIRECTIONAL_SEQUENCE_LSTM path (`fused_lstm.py`): the default conversion fails on Keras 3 LSTMs,
and the WHILE-loop form crashes the converter in int8. SELECT_TF_OPS (Flex) is never turned on
unless asked for. ``inference_input_type`` applies to float inputs only: integer (token id) inputs
keep their dtype in every precision.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import numpy as np

from ..core.errors import ExportError
from ..runners.modelio import input_names

QUANTIZED = ("int8", "int16x8", "mixed")
# Precisions whose activation ranges --calibration-method chooses. int16x8 is calibrated and quantized
# in one C++ call of the converter (no pass between), and 16-bit steps leave little to clip.
RANGED = ("int8", "mixed")


def convert(model, precision: str, calibration: list[np.ndarray] | None, io: str = "int8",
            allow_flex: bool = False, keep_float: tuple[str, ...] = (), calibration_method: str = "minmax",
            unrolled: bool = False) -> bytes:
    """Return the ``.tflite`` bytes of ``model`` at ``precision`` (``keep_float``: a mixed target's layers;
    ``calibration_method``: how an int8 or mixed target sets activation ranges, see ranges.py;
    ``unrolled``: recurrent layers written out over their timesteps, see unrolled.py)."""
    from . import fused_lstm
    from .ranges import tflite_ranges

    method = calibration_method if precision in RANGED else "minmax"
    with integer_layer_norm(precision in QUANTIZED), gathered_embeddings(model), tflite_ranges(method):
        converter = converter_for(model, unrolled)
        configure(converter, precision, calibration, io, allow_flex, input_names(model))
        try:
            blob = _mixed(converter, model, keep_float) if precision == "mixed" else converter.convert()
        except ExportError:
            raise
        except Exception as exc:  # the converter raises ConverterError / RuntimeError with MLIR text
            raise ExportError(f"TFLite {precision} conversion failed: {_first_error_line(exc)}") from exc
    if unrolled or not fused_lstm.has_lstm(model):
        return blob
    blob = fused_lstm.without_cell_clip(blob)
    return fused_lstm.fix_int8_hidden_scale(blob) if precision in ("int8", "mixed") else blob


@contextlib.contextmanager
def integer_layer_norm(active: bool = True):
    """Trace Keras LayerNormalization as mean → SUB → MUL → MEAN → RSQRT → MUL/ADD, the same function.

    Keras computes it as ``x·inv − mean·inv``: the NEG that makes stays float in an "int8" model (a
    DEQUANTIZE/QUANTIZE island the converter adds without a word) and has no int16 kernel, so int16x8
    cannot convert at all. Measured on a 2-block Transformer (2026-11-27): outputs equal to 8e-7 in
    float, int8 becomes integer-only and ~1.5× faster, and int16x8 converts.
    """
    if not active:
        yield
        return
    import keras

    layer_class = keras.layers.LayerNormalization
    original = layer_class.call
    layer_class.call = _decomposed_layer_norm
    try:
        yield
    finally:
        layer_class.call = original


def gathered_embeddings(model):
    """Each plain Keras Embedding traced as one GATHER. Keras 3's lowers to LESS, ADD and SELECT (it wraps
    negative ids) around the GATHER, and TFLite Micro has no SELECT (v1) kernel: every token model was
    blocked on microcontrollers. Token ids are never negative in valid data, so the wrap does nothing."""
    from .fused_lstm import swapped_calls

    return swapped_calls({layer: _gather_call(layer) for layer in model._flatten_layers(include_self=False,
                                                                                         recursive=True)
                          if layer.__class__.__name__ == "Embedding" and not getattr(layer, "lora_enabled", False)
                          and getattr(layer, "quantization_mode", None) is None})


def _gather_call(layer):
    import tensorflow as tf

    def call(inputs):
        ids = inputs if inputs.dtype in (tf.int32, tf.int64) else tf.cast(inputs, tf.int32)
        return tf.cast(tf.gather(layer.embeddings.value, ids), layer.compute_dtype)

    return call


def _decomposed_layer_norm(self, inputs):
    from keras import ops

    x = ops.cast(inputs, "float32")
    axes = self.axis if isinstance(self.axis, (list, tuple)) else [self.axis]
    ndims = len(x.shape)
    shape = [1] * ndims
    for dim in axes:
        shape[dim] = x.shape[dim]
    centred = x - ops.mean(x, axis=axes, keepdims=True)
    inverse = ops.rsqrt(ops.mean(centred * centred, axis=axes, keepdims=True) + self.epsilon)
    # rms_scaling keeps x uncentred (Keras' definition); otherwise the usual centred form
    outputs = (x if self.rms_scaling else centred) * inverse
    if self.gamma is not None:
        outputs = outputs * ops.reshape(ops.cast(self.gamma, "float32"), shape)
    if self.beta is not None:
        outputs = outputs + ops.reshape(ops.cast(self.beta, "float32"), shape)
    return ops.cast(outputs, self.compute_dtype)


def _mixed(converter, model, keep_float: tuple[str, ...]) -> bytes:
    """int8 everywhere except the ops of the ``keep_float`` Keras layers, which compute in float.

    The converter calibrates once (its own representative-data pass), then the calibrated model is
    quantized with those ops on its denylist (tensorflow.lite.python.convert.mlir_quantize, the path
    of TensorFlow's QuantizationDebugger). Inputs and outputs stay float: a float first layer needs a
    float input. ai-edge-quantizer can do the same from a float .tflite, but does not handle LSTMs.
    """
    from tensorflow.lite.python import convert as lite_convert

    converter._experimental_calibrate_only = True
    calibrated = converter.convert()
    nodes = float_nodes(calibrated, model, keep_float) if keep_float else []
    return lite_convert.mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                                      enable_numeric_verify=False, denylisted_ops=None,
                                      denylisted_nodes=nodes or None)


def float_nodes(calibrated: bytes, model, keep_float: tuple[str, ...]) -> list[str]:
    """The output tensor names of the ops that belong to ``keep_float`` layers; every layer must own one."""
    owned = op_owners(calibrated, model)
    require_layers(keep_float, [owners for _, owners in owned])
    return [tensor for tensor, owners in owned if owners & set(keep_float)]


def op_owners(flatbuffer: bytes, model) -> list[tuple[str, set[str]]]:
    """(first output tensor's name, the Keras layers it belongs to) for every op, in graph order.

    Ops are named by their Keras scope, with two exceptions. One that writes a graph output carries the
    signature's name (StatefulPartitionedCall:0), so it belongs to the layers that make the model's
    outputs: without this, an output layer that is a single op (a regression head) had no op at all.
    One the converter built under a name of its own (a fused LSTM is ``tfl.unidirectional_sequence_lstm``,
    a Bidirectional's REVERSE_V2 and slices alike) belongs to the layer of the nearest named op that
    reads what it makes: without this, ``--keep-float`` of a BiLSTM kept its concatenation float and its
    LSTMs int8, and the rescue measured nothing."""
    from ..runners.modelio import layer_classes, layers_in
    from ..runners.tflite_model import TFLiteModel

    known = layer_classes(model)
    parsed = TFLiteModel(flatbuffer)
    final = {parsed.main.tensors[i].name for i in parsed.main.outputs}
    makers = {t._keras_history.operation.name for t in model.outputs if hasattr(t, "_keras_history")}
    owned = []
    for graph in parsed.subgraphs:
        direct = []
        for op in graph.ops:
            tensor = graph.output_of(op)
            name = tensor.name if tensor is not None else ""
            owners = layers_in(name, known)
            direct.append((name, owners or (makers & set(known) if graph is parsed.main and name in final else set())))
        owned += _inherit_downstream(graph, direct)
    return owned


MAX_HOPS = 8  # how far downstream a converter-named op looks for the layer it belongs to


def _inherit_downstream(graph, direct: list[tuple[str, set[str]]]) -> list[tuple[str, set[str]]]:
    readers: dict[int, list[int]] = {}
    for op in graph.ops:
        for i in op.inputs:
            readers.setdefault(i, []).append(op.index)
    found = []
    for op, (name, owners) in zip(graph.ops, direct, strict=True):
        frontier, seen = [op.index], {op.index}
        for _ in range(MAX_HOPS if not owners else 0):
            nxt = [r for j in frontier for t in graph.ops[j].outputs for r in readers.get(t, []) if r not in seen]
            named = [direct[r][1] for r in nxt if direct[r][1]]
            if named:
                owners = set().union(*named)
                break
            seen.update(nxt)
            frontier = nxt
        found.append((name, owners))
    return found


def require_layers(keep_float, owners: list[set[str]]) -> None:
    """Every layer named for float must own an op of the converted graph (else the name is a typo, or the
    converter folded the layer away)."""
    seen = set().union(*owners) if owners else set()
    missing = [name for name in keep_float if name not in seen]
    if missing:
        raise ExportError(f"--keep-float names {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} "
                          "not a layer with ops in the converted model",
                          hint=f"layers with ops: {', '.join(sorted(seen))}")


def converter_for(model, unrolled: bool = False):
    """An unconfigured TFLiteConverter over the batch-1 model (LSTMs through the fused op, or every
    recurrent layer unrolled)."""
    import tensorflow as tf

    from . import fused_lstm
    from . import unrolled as unrolled_graph

    if unrolled:
        return unrolled_graph.converter_for(model)
    if fused_lstm.has_lstm(model):
        return fused_lstm.converter_for(model)
    return tf.lite.TFLiteConverter.from_keras_model(with_batch_one(model))


def with_batch_one(model):
    """The same layers on batch-1 inputs, as an app invokes them.

    A static batch removes the SHAPE/STRIDED_SLICE/PACK ops that a dynamic batch adds around
    every Flatten/Reshape, which cost time on every invoke.
    """
    import keras

    inputs = [keras.Input(batch_shape=(1, *t.shape[1:]), name=t.name.split(":")[0], dtype=t.dtype)
              for t in model.inputs]
    outputs = model(inputs if len(inputs) > 1 else inputs[0])
    return keras.Model(inputs, outputs, name=model.name)


def configure(converter, precision: str, calibration, io: str, allow_flex: bool,
              names: list[str] | None = None) -> None:
    """Set the converter's optimizations, representative data, op sets and I/O types for ``precision``."""
    import tensorflow as tf

    ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision in QUANTIZED:
        if not calibration:
            raise ExportError(f"{precision} export needs calibration samples", hint="pass --calibration data.npz")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(calibration, names)
        if precision == "int8":
            ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io_type = {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io]
            converter.inference_input_type = io_type
            converter.inference_output_type = io_type
        elif precision == "int16x8":  # no float fallback: an op without a 16-bit kernel is an error, not a surprise
            ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if allow_flex:
        warnings.warn("--allow-flex: the model may need the Flex delegate, which LiteRT's Python wheel, "
                      "tflite-runtime and most apps lack", stacklevel=2)
        ops = [*ops, tf.lite.OpsSet.SELECT_TF_OPS]
    converter.target_spec.supported_ops = ops


def _representative(calibration: list[np.ndarray], names: list[str] | None) -> Callable[[], Iterator]:
    """One sample at a time, each input in its own dtype (token ids stay integers); keyed by input
    name when there are several, so order cannot mix them up."""
    count = len(calibration[0])

    def samples():
        for i in range(count):
            batch = [x[i : i + 1] for x in calibration]
            yield dict(zip(names, batch, strict=True)) if names and len(batch) > 1 else batch

    return samples


def _first_error_line(exc: Exception) -> str:
    text = str(exc)
    for line in text.splitlines():
        if "error:" in line:
            return " ".join(line.split("error:", 1)[1].split())[:300]
    return " ".join(text.split())[:300]


def quantized_weights(flatbuffer: bytes) -> int:
    """How many constant tensors (weights) are stored as integers of 8 bits: 0 means no weight got quantized.

    Dynamic-range conversion quantizes only weight tensors of at least 1024 values, so a small model
    can come out computing exactly like float32 (checked on TF 2.21: LSTM(64) over 8 features).
    """
    from ..runners.tflite_model import TFLiteModel

    return sum(1 for graph in TFLiteModel(flatbuffer).subgraphs for tensor in graph.tensors
               if tensor.type in ("INT8", "UINT8") and tensor.data is not None)


def ops_with_tensors(flatbuffer: bytes) -> list[tuple[str, str]]:
    """(builtin op name, name of its first output tensor) for every operator of a TFLite model."""
    return [(op, tensor) for op, tensor, _ in ops_with_types(flatbuffer)]


def ops_with_types(flatbuffer: bytes) -> list[tuple[str, str, str]]:
    """(builtin op name, first output tensor's name, its type: FLOAT32, INT8, INT16…) for every operator."""
    from ..runners.tflite_model import TFLiteModel

    found = []
    for graph, op in TFLiteModel(flatbuffer).ops():
        tensor = graph.output_of(op)
        found.append((op.name, tensor.name if tensor is not None else "", tensor.type if tensor is not None else "?"))
    return found
