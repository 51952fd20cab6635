"""LSTM models → TFLite's builtin fused UNIDIRECTIONAL_SEQUENCE_LSTM op, in every precision.

Why this path: Keras 3 LSTMs do not convert by default (TensorListReserve), a static batch-1
signature gives a WHILE loop whose full-integer int8 conversion crashes the converter, and
Keras' own LiteRT export needs Flex ops. The converter does fuse any ``tf.function`` marked with
``api_implements="lstm_<id>"`` whose arguments are (inputs, init_h, init_c, kernel,
recurrent_kernel, bias) and whose results are (last_output, outputs, h, c, runtime): the
contract Keras 2's LSTM followed. So while the model is traced, each LSTM layer's ``call`` is
swapped for such a function holding the layer's weights as constants. Every other layer runs
through ``model.stateless_call`` with its weights as constants too, because variables captured
from a Keras 3 model survive conversion as VAR_HANDLE ops and the result outputs NaN.

The fused op keeps h and c in variable tensors between invokes: every caller must reset them
(``interpreter.reset_all_variables()``) before each inference. Our runners and bundles do.

``go_backwards=True`` is part of the same contract (the converter reverses the input itself), so a
``Bidirectional(LSTM)`` becomes two fused ops with builtin ops around them (REVERSE_V2, CONCATENATION
or ADD/MUL for the merge), in every precision. In full int8 the converter gives an LSTM whose output
feeds an ADD (a sum/ave merge, a residual) the consumer's quantization but leaves the kernel writing
with the calibrated hidden scale; ``fix_int8_hidden_scale`` makes them agree (agreement on a sum-merge
model: 0.64 → 0.985, measured 2026-11-27).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import uuid

import numpy as np


def _lstm_layers(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if layer.__class__.__name__ == "LSTM":
            yield layer


def has_lstm(model) -> bool:
    return any(True for _ in _lstm_layers(model))


def unsupported_reason(layer) -> str | None:
    """Why this LSTM layer cannot become the fused op, or None."""
    checks = [
        (getattr(layer, "return_state", False), "return_state=True is not supported by the fused TFLite LSTM"),
        (getattr(layer, "stateful", False), "stateful=True LSTMs carry state across batches; not supported"),
        (_activation_name(layer.cell.activation) != "tanh", "the fused TFLite LSTM needs activation='tanh'"),
        (_activation_name(layer.cell.recurrent_activation) != "sigmoid",
         "the fused TFLite LSTM needs recurrent_activation='sigmoid'"),
    ]
    return next((reason for failed, reason in checks if failed), None)


def _activation_name(fn) -> str:
    return getattr(fn, "__name__", str(fn))


def _fused_call(layer):
    """A replacement for ``layer.call`` that the converter recognises as one LSTM op."""
    import tensorflow as tf

    cell = layer.cell
    units = cell.units
    kernel = tf.constant(np.asarray(cell.kernel.numpy(), np.float32))
    recurrent_kernel = tf.constant(np.asarray(cell.recurrent_kernel.numpy(), np.float32))
    bias = tf.constant(np.asarray(cell.bias.numpy(), np.float32) if cell.use_bias
                       else np.zeros(4 * units, np.float32))
    backwards = bool(layer.go_backwards)
    attributes = {"api_implements": f"lstm_{uuid.uuid4()}", "api_preferred_device": "CPU",
                  "time_major": False, "go_backwards": backwards}

    @tf.function(experimental_attributes=attributes, autograph=False)
    def standard_lstm(inputs, init_h, init_c, kernel, recurrent_kernel, bias):
        # The converter replaces this body with the fused op; it must still compute the same
        # thing (gates i, f, c, o; sigmoid recurrence, tanh activation) for tracing and checks.
        if backwards:  # Keras' go_backwards: read the sequence reversed, outputs in that order
            inputs = tf.reverse(inputs, [1])
        h, c, outputs = init_h, init_c, []
        for step in range(inputs.shape[1]):
            z = tf.matmul(inputs[:, step, :], kernel) + tf.matmul(h, recurrent_kernel) + bias
            i, f, g, o = tf.split(z, 4, axis=1)
            c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
            h = tf.sigmoid(o) * tf.tanh(c)
            outputs.append(h)
        runtime = tf.constant(1.0)  # Keras 2's "runs on CPU" marker, part of the contract
        return h, tf.stack(outputs, axis=1), h, c, runtime

    def call(sequences, initial_state=None, mask=None, training=False):  # noqa: ARG001
        zeros = tf.zeros(tf.stack([tf.shape(sequences)[0], units]), tf.float32)
        init_h, init_c = (initial_state if initial_state is not None else (zeros, zeros))
        last, outputs, _, _, _ = standard_lstm(sequences, init_h, init_c, kernel, recurrent_kernel, bias)
        return outputs if layer.return_sequences else last

    return call


def _fused_layers(model):
    layers = list(_lstm_layers(model))
    for layer in layers:
        reason = unsupported_reason(layer)
        if reason:
            from ..core.errors import ExportError

            raise ExportError(f"layer {layer.name!r}: {reason}", hint="use --format onnx for this model")
    return swapped_calls({layer: _fused_call(layer) for layer in layers})


@contextlib.contextmanager
def swapped_calls(calls: dict):
    """While tracing, each layer's ``call`` is the one given (``{layer: call}``); then the class's own again."""
    for layer, call in calls.items():
        layer.call = call
    try:
        yield
    finally:
        for layer in calls:
            del layer.call


def converter_for(model):
    """A TFLiteConverter over a batch-1 SavedModel in which every LSTM is the fused op."""
    return traced_converter(model, _fused_layers(model), "the fused LSTM")


def traced_converter(model, swapped, needs: str):
    """A TFLiteConverter over a batch-1 SavedModel of ``model`` traced while ``swapped`` (a context
    manager) replaces some layers' ``call``; every weight is a constant (see the module docstring)."""
    import tensorflow as tf

    from ..core.errors import ExportError
    from ..runners.modelio import input_names, output_names

    specs = []
    for tensor, name in zip(model.inputs, input_names(model), strict=True):
        shape = [1, *tensor.shape[1:]]
        if any(d is None for d in shape):
            raise ExportError(f"input {name!r} has open dimensions {tuple(tensor.shape)}; {needs} needs "
                              "a fixed number of timesteps", hint="pass --seq-len N or --input-shape")
        specs.append(tf.TensorSpec(shape, tensor.dtype, name=name))  # token ids stay integers
    trainable = [tf.constant(v.numpy()) for v in model.trainable_variables]
    frozen = [tf.constant(v.numpy()) for v in model.non_trainable_variables]
    outputs = output_names(model)

    @tf.function(input_signature=specs)
    def serve(*inputs):
        feed = list(inputs) if len(inputs) > 1 else inputs[0]
        result, _ = model.stateless_call(trainable, frozen, feed, training=False)
        result = result if isinstance(result, (list, tuple)) else [result]
        return dict(zip(outputs, result, strict=True))

    module = tf.Module()
    module.serve = serve
    saved = tempfile.mkdtemp(prefix="edgedl-traced-")
    try:
        with swapped:
            concrete = serve.get_concrete_function()
            tf.saved_model.save(module, saved, signatures={"serving_default": concrete})
        converter = tf.lite.TFLiteConverter.from_saved_model(saved)
        converter.convert = _cleanup_after(converter.convert, saved)
    except Exception:
        shutil.rmtree(saved, ignore_errors=True)
        raise
    return converter


def _cleanup_after(convert, folder: str):
    def wrapped():
        try:
            return convert()
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    return wrapped


def _lstm_ops(model):
    for graph, op in model.ops():
        if op.name == "UNIDIRECTIONAL_SEQUENCE_LSTM":
            yield graph, op


HIDDEN_INTERMEDIATE = 4  # the integer kernel writes h with this intermediate's scale and zero point


def _mismatch(graph, op) -> bool:
    if len(op.intermediates) <= HIDDEN_INTERMEDIATE:
        return False
    hidden, output = graph.tensors[op.intermediates[HIDDEN_INTERMEDIATE]], graph.tensors[op.outputs[0]]
    if not len(hidden.scales) or not len(output.scales):
        return False
    return (hidden.scale, hidden.zero_point) != (output.scale, output.zero_point)


def fix_int8_hidden_scale(flatbuffer: bytes) -> bytes:
    """Give each int8 fused LSTM's hidden intermediate the quantization of the output it writes."""
    from ..runners.tflite_model import TFLiteModel

    model = TFLiteModel(flatbuffer)
    changed = False
    for graph, op in _lstm_ops(model):
        if _mismatch(graph, op):
            output = graph.tensors[op.outputs[0]]
            graph.tensors[op.intermediates[HIDDEN_INTERMEDIATE]].set_quantization(output.scales, output.zero_points)
            changed = True
    return model.to_bytes() if changed else flatbuffer


def without_cell_clip(flatbuffer: bytes) -> bytes:
    """Set ``cell_clip`` to 0 (no clipping) on every fused LSTM op.

    The converter writes ``cell_clip=10`` into each fused LSTM it builds, but Keras never clips
    the cell state. Trained digit LSTMs reach |c| ≈ 12–15 with no visible effect, yet a unit
    driven past 10 and back reads the wrong sign with the clip (max error 2.0 in a synthetic
    check, 0.008 without it), so exports keep Keras' semantics.
    """
    from ..runners.tflite_model import TFLiteModel

    model = TFLiteModel(flatbuffer)
    changed = False
    for _, op in _lstm_ops(model):
        if op.options.cellClip:
            op.options.cellClip = 0.0
            changed = True
    return model.to_bytes() if changed else flatbuffer
