"""The one TFLite reader (runners/tflite_model.py) and Runner.with_outputs on TFLite, ONNX and Keras."""

from __future__ import annotations

import numpy as np
import pytest

from edgedl.core.errors import ArtifactError
from edgedl.runners.base import EVERY_TENSOR

# ---------------------------------------------------------------- models made here, in seconds

@pytest.fixture(scope="module")
def dense():
    """Input(4) → Dense(8, relu) 'hidden' → Dense(3, softmax) 'probs', as fp32 and int8 TFLite."""
    import keras

    from edgedl.export import tflite

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(8, activation="relu", name="hidden"),
                              keras.layers.Dense(3, activation="softmax", name="probs")])
    calibration = [np.random.default_rng(1).normal(size=(64, 4)).astype(np.float32)]
    return model, {"fp32": tflite.convert(model, "fp32", None), "int8": tflite.convert(model, "int8", calibration)}


@pytest.fixture(scope="module")
def fused_lstm():
    """An LSTM exported as TFLite's fused UNIDIRECTIONAL_SEQUENCE_LSTM op (edgedl's export path)."""
    import keras

    from edgedl.export import tflite

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((5, 3), name="rows"), keras.layers.LSTM(6, name="lstm"),
                              keras.layers.Dense(2, name="out")])
    return tflite.convert(model, "fp32", None)


@pytest.fixture(scope="module")
def while_loop():
    """A tf.while_loop: TFLite's WHILE op with its cond and body subgraphs."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def doubled_three_times(x):
        _, y = tf.while_loop(lambda i, y: i < 3, lambda i, y: (i + 1, y * 2.0), [tf.constant(0), x])
        return y

    concrete = doubled_three_times.get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], doubled_three_times).convert()


def tiny_onnx() -> bytes:
    """x(N,4) → MatMul W → 'hidden' = Relu → MatMul V → 'y', built with onnx.helper (no converter)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w, v = _onnx_weights()
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["pre"]), helper.make_node("Relu", ["pre"], ["hidden"]),
         helper.make_node("MatMul", ["hidden", "V"], ["y"])],
        "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(v, "V")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _onnx_weights():
    rng = np.random.default_rng(2)
    return rng.normal(size=(4, 5)).astype(np.float32), rng.normal(size=(5, 2)).astype(np.float32)


# ---------------------------------------------------------------- the reader

@pytest.mark.slow
def test_reader_names_ops_and_tensors_like_the_interpreter(dense):
    from edgedl.runners.litert import open_interpreter
    from edgedl.runners.tflite_model import TFLiteModel

    for blob in dense[1].values():
        model = TFLiteModel(blob)
        interpreter = open_interpreter(blob, xnnpack=False)
        details = {d["index"]: d for d in interpreter.get_tensor_details()}
        graph = model.main
        assert len(model.subgraphs) == 1 and "FULLY_CONNECTED" in model.op_names() and "SOFTMAX" in model.op_names()
        for tensor in graph.tensors:
            detail = details[tensor.index]
            assert tensor.name == detail["name"] and tensor.shape == tuple(detail["shape"])
            assert tensor.dtype == np.dtype(detail["dtype"]).name
            params = detail["quantization_parameters"]  # per-channel scales too, not only the first
            np.testing.assert_array_equal(tensor.scales, params["scales"])
            np.testing.assert_array_equal(tensor.zero_points, params["zero_points"])
        assert [graph.tensors[i].name for i in graph.inputs] == [d["name"] for d in interpreter.get_input_details()]


@pytest.mark.slow
def test_reader_quantization_and_weights_of_an_int8_model(dense):
    from edgedl.export.tflite import quantized_weights
    from edgedl.runners.litert import LiteRTRunner
    from edgedl.runners.tflite_model import TFLiteModel

    model = TFLiteModel(dense[1]["int8"])
    graph = model.main
    x = graph.tensors[graph.inputs[0]]
    assert x.type == "INT8" and x.scale > 0 and x.signature == x.shape == (1, 4)  # int8 I/O, batch 1 as on devices
    runner = LiteRTRunner(dense[1]["int8"])
    assert (x.scale, x.zero_point) == pytest.approx((runner.inputs[0].scale, runner.inputs[0].zero_point))
    weights = [t for t in graph.tensors if t.data is not None and t.type == "INT8"]
    kernel = next(t for t in weights if t.shape == (8, 4))  # Dense(8) over 4 inputs, stored output-major
    assert len(kernel.data) == 32 and len(kernel.scales) == 8  # per-channel: one scale per output unit
    # the weights, dequantized, are Keras' kernel to within half a step of each channel
    stored = kernel.data.view(np.int8).reshape(8, 4).astype(np.float32) * kernel.scales[:, None]
    keras_kernel = dense[0].get_layer("hidden").kernel.numpy().T
    assert np.all(np.abs(stored - keras_kernel) <= kernel.scales[:, None] / 2 + 1e-7)
    assert quantized_weights(dense[1]["int8"]) >= 2 and quantized_weights(dense[1]["fp32"]) == 0


@pytest.mark.slow
def test_reader_on_a_fused_lstm_and_its_rewrites(fused_lstm):
    from edgedl.export.fused_lstm import fix_int8_hidden_scale, without_cell_clip
    from edgedl.runners.tflite_model import TFLiteModel

    model = TFLiteModel(fused_lstm)
    assert len(model.subgraphs) == 1  # the fused op: no WHILE body
    graph, lstm = next((g, op) for g, op in model.ops() if op.name == "UNIDIRECTIONAL_SEQUENCE_LSTM")
    assert lstm.options.cellClip == 0.0  # edgedl's export already took the converter's clip away
    assert graph.tensors[lstm.inputs[0]].shape == (1, 5, 3) and graph.output_of(lstm).shape[-1] == 6
    variables = [graph.tensors[i] for i in lstm.inputs if i >= 0 and graph.tensors[i].is_variable]
    assert len(variables) == 2  # h and c: why runners reset variable tensors before every invoke

    lstm.options.cellClip = 10.0  # as the converter writes it
    clipped = model.to_bytes()
    reread = TFLiteModel(clipped)
    assert next(op for _, op in reread.ops() if op.name == "UNIDIRECTIONAL_SEQUENCE_LSTM").options.cellClip == 10.0
    unclipped = TFLiteModel(without_cell_clip(clipped))
    assert next(op for _, op in unclipped.ops() if op.name == "UNIDIRECTIONAL_SEQUENCE_LSTM").options.cellClip == 0.0
    assert fix_int8_hidden_scale(fused_lstm) is fused_lstm  # float: nothing to fix, the same bytes back


@pytest.mark.slow
def test_reader_lists_every_subgraph_of_a_while_loop(while_loop):
    from edgedl.runners.litert import LiteRTRunner
    from edgedl.runners.tflite_model import TFLiteModel

    model = TFLiteModel(while_loop)
    assert len(model.subgraphs) == 3 and "WHILE" in model.op_names(subgraph=0)
    body_ops = {op.name for graph in model.subgraphs[1:] for op in graph.ops}
    assert {"LESS", "ADD", "MUL"} <= body_ops
    assert model.op_names() == [op for graph in model.subgraphs for op in model.op_names(graph.index)]
    with LiteRTRunner(while_loop) as runner:  # the runner's op list is the main graph's
        assert runner.ops() == model.op_names(subgraph=0)
        assert np.array_equal(runner.infer([np.ones((1, 4), np.float32)])[0], np.full((1, 4), 8.0, np.float32))


def test_reader_refuses_what_is_not_a_tflite_model():
    from edgedl.runners.tflite_model import TFLiteModel, op_name

    with pytest.raises(ArtifactError, match="TFL3"):
        TFLiteModel(b"\x00" * 64)
    with pytest.raises(ArtifactError, match="not a readable TFLite model"):
        TFLiteModel(b"\x10\x00\x00\x00TFL3" + b"\xff" * 24)
    assert op_name(3) == "CONV_2D" and op_name(9) == "FULLY_CONNECTED" and op_name(10_000) == "UNKNOWN"


def test_reader_imports_no_tensorflow_or_second_runtime_in_the_mcu_child():
    """The microcontroller child reads models with tflite_micro's schema: no TensorFlow, no LiteRT."""
    import subprocess
    import sys

    code = ("import sys; from edgedl.deploy import mcu_child; from edgedl.runners.tflite_model import schema; "
            "mcu_child._runtime(); print(schema().__name__); "
            "print(sorted(m for m in sys.modules if m.startswith(('tensorflow', 'ai_edge_litert', 'keras'))))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    name, loaded = done.stdout.splitlines()
    assert name.startswith("tflite_micro.") and loaded == "[]"


# ---------------------------------------------------------------- Runner.with_outputs

@pytest.mark.slow
def test_litert_with_outputs_reads_intermediate_tensors(dense):
    from edgedl.runners.litert import LiteRTRunner
    from edgedl.runners.tflite_model import TFLiteModel

    model, blobs = dense
    x = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    graph = TFLiteModel(blobs["fp32"]).main
    hidden = next(graph.output_of(op).name for op in graph.ops if op.name == "FULLY_CONNECTED")
    layer = model.get_layer("hidden")
    expected = np.maximum(x @ layer.kernel.numpy() + layer.bias.numpy(), 0)
    with LiteRTRunner(blobs["fp32"]) as runner, runner.with_outputs([hidden, runner.outputs[0].tensor]) as tapped:
        assert [t.name for t in tapped.outputs] == [hidden, runner.outputs[0].tensor]
        inner, last = tapped.infer(x)
        np.testing.assert_allclose(inner, expected, atol=1e-5)  # the relu'd Dense, sample by sample
        np.testing.assert_array_equal(last, runner.infer(x)[0])  # the model's own output, unchanged
        with pytest.raises(ArtifactError, match="no tensor nonexistent"):
            runner.with_outputs(["nonexistent"])
        tapped.set_batch(3)  # resizing keeps the tapped tensors (bench times batches this way)
        tapped.step(tapped.prepare(x[:3]))
        assert [t.name for t in tapped.outputs] == [hidden, runner.outputs[0].tensor]
    with LiteRTRunner(blobs["int8"]) as runner, runner.with_outputs(EVERY_TENSOR) as every:
        graph = TFLiteModel(blobs["int8"]).main
        assert len(every.outputs) == len({*graph.inputs, *(i for op in graph.ops for i in op.outputs)})
        values = dict(zip((t.tensor for t in every.outputs), every.infer(x), strict=True))
        spec = runner.inputs[0]  # int8 tensors come back as floats, dequantized with their own scale
        np.testing.assert_array_equal(values[spec.tensor], runner.from_model(runner.to_model(x, spec), spec))


def test_onnx_with_outputs_exposes_named_and_every_tensor():
    from edgedl.runners.onnxrt import OnnxRuntimeRunner

    w, v = _onnx_weights()
    x = np.random.default_rng(4).normal(size=(6, 4)).astype(np.float32)
    with OnnxRuntimeRunner(tiny_onnx()) as runner:
        with runner.with_outputs(["hidden"]) as tapped:
            assert [t.name for t in tapped.outputs] == ["hidden"] and tapped.outputs[0].dtype == "float32"
            np.testing.assert_allclose(tapped.infer(x)[0], np.maximum(x @ w, 0), rtol=1e-5, atol=1e-5)
        with runner.with_outputs(EVERY_TENSOR) as every:
            assert [t.name for t in every.outputs] == ["y", "pre", "hidden"]
            y, pre, hidden = every.infer(x)
            np.testing.assert_allclose(y, runner.infer(x)[0], rtol=1e-6)
            np.testing.assert_allclose(hidden, np.maximum(pre, 0))
        assert [t.name for t in runner.outputs] == ["y"]  # the original runner keeps its outputs
        with pytest.raises(ArtifactError, match="no tensor missing"):
            runner.with_outputs(["missing"])


def test_isolated_onnx_with_outputs_runs_in_its_child(tmp_path):
    from edgedl.runners.isolation import IsolatedRunner

    path = tmp_path / "tiny.onnx"
    path.write_bytes(tiny_onnx())
    w, _ = _onnx_weights()
    x = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
    with IsolatedRunner(path, "onnxruntime") as runner, runner.with_outputs(["hidden"]) as tapped:
        np.testing.assert_allclose(tapped.infer(x)[0], np.maximum(x @ w, 0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ArtifactError, match="no tensor nope"):
        IsolatedRunner(path, "onnxruntime", outputs=["nope"])


@pytest.mark.slow
def test_keras_with_outputs_is_a_functional_sub_model(dense):
    from edgedl.runners.keras import KerasRunner

    model = dense[0]
    x = np.random.default_rng(6).normal(size=(4, 4)).astype(np.float32)
    layer = model.get_layer("hidden")
    with KerasRunner(model) as runner, runner.with_outputs(["hidden", "probs"]) as tapped:
        assert [t.name for t in tapped.outputs] == ["hidden", "probs"]
        hidden, probs = tapped.infer(x)
        np.testing.assert_allclose(hidden, np.maximum(x @ layer.kernel.numpy() + layer.bias.numpy(), 0), atol=1e-5)
        np.testing.assert_allclose(probs, runner.infer(x)[0], atol=1e-6)
        with pytest.raises(ArtifactError, match="no layer dense_9"):
            runner.with_outputs(["dense_9"])
