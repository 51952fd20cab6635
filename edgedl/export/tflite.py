"""Keras → TFLite in float32, float16, dynamic-range and full-integer int8, builtin ops only.

Models with LSTM layers go through the fused UNIDIRECTIONAL_SEQUENCE_LSTM path
(`fused_lstm.py`): the default conversion fails on Keras 3 LSTMs, and the WHILE-loop form
crashes the converter in int8. SELECT_TF_OPS (Flex) is never turned on unless asked for.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator

import numpy as np

from ..core.errors import ExportError
from ..runners.modelio import input_names


def convert(model, precision: str, calibration: list[np.ndarray] | None, io: str = "int8",
            allow_flex: bool = False) -> bytes:
    """Return the ``.tflite`` bytes of ``model`` at ``precision``."""
    from . import fused_lstm

    converter = converter_for(model)
    configure(converter, precision, calibration, io, allow_flex, input_names(model))
    try:
        blob = converter.convert()
    except Exception as exc:  # the converter raises ConverterError / RuntimeError with MLIR text
        raise ExportError(f"TFLite {precision} conversion failed: {_first_error_line(exc)}") from exc
    return fused_lstm.without_cell_clip(blob) if fused_lstm.has_lstm(model) else blob


def converter_for(model):
    """An unconfigured TFLiteConverter over the batch-1 model (LSTMs through the fused op)."""
    import tensorflow as tf

    from . import fused_lstm

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
    elif precision == "int8":
        if not calibration:
            raise ExportError("int8 export needs calibration samples", hint="pass --calibration data.npz")
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(calibration, names)
        ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        io_type = {"float": tf.float32, "int8": tf.int8, "uint8": tf.uint8}[io]
        converter.inference_input_type = io_type
        converter.inference_output_type = io_type
    if allow_flex:
        warnings.warn("--allow-flex: the model may need the Flex delegate, which LiteRT's Python wheel, "
                      "tflite-runtime and most apps lack", stacklevel=2)
        ops = [*ops, tf.lite.OpsSet.SELECT_TF_OPS]
    converter.target_spec.supported_ops = ops


def _representative(calibration: list[np.ndarray], names: list[str] | None) -> Callable[[], Iterator]:
    """One sample at a time; keyed by input name when there are several, so order cannot mix them up."""
    count = len(calibration[0])

    def samples():
        for i in range(count):
            batch = [np.asarray(x[i : i + 1], dtype=np.float32) for x in calibration]
            yield dict(zip(names, batch, strict=True)) if names and len(batch) > 1 else batch

    return samples


def _first_error_line(exc: Exception) -> str:
    text = str(exc)
    for line in text.splitlines():
        if "error:" in line:
            return " ".join(line.split("error:", 1)[1].split())[:300]
    return " ".join(text.split())[:300]
