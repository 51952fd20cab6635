"""Export: every architecture × format × precision loads in its runtime; unsupported modes say why."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgedl.core.errors import EdgedlError, ExportError
from edgedl.export import ExportOptions, export, plan_targets, unrolled_targets
from edgedl.runners.describe import describe

pytestmark = pytest.mark.slow  # every test here converts real models


def tiny_tflite(folder) -> str:
    """A foreign .tflite made without edgedl."""
    import keras
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    path = folder / "foreign.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return str(path)


ARCHS = ("mlp", "cnn", "lstm", "lstm_seq")
ARTIFACTS = [(a, f"{a}_{p}.tflite") for a in ARCHS for p in ("fp32", "fp16", "dynamic", "int8")] + \
            [(a, f"{a}_{p}.onnx") for a in ARCHS for p in ("fp32", "int8")]


@pytest.mark.parametrize("arch, name", ARTIFACTS)
def test_every_artifact_loads_and_runs(tiny_exports, arch, name):
    from edgedl.runners.open import open_runner

    path = tiny_exports[arch] / name
    facts = json.loads(path.with_name(name + ".json").read_text())
    assert facts["sha256"] and facts["size"] == path.stat().st_size and facts["ops"]
    assert not facts["flex_ops"], "default exports use builtin ops only"
    with open_runner(path) as runner:
        x = np.random.default_rng(0).random((3, *[d or 1 for d in runner.inputs[0].shape[1:]])).astype(np.float32)
        y = runner.infer([x])[0]
    assert y.shape[0] == 3 and np.isfinite(y).all()
    assert np.allclose(y.sum(-1), 1.0, atol=0.05)  # softmax probabilities survive every precision


def test_lstm_uses_fused_op_and_int8_is_small(tiny_exports):
    for arch in ("lstm", "lstm_seq"):
        fp32 = describe(tiny_exports[arch] / f"{arch}_fp32.tflite")
        int8 = describe(tiny_exports[arch] / f"{arch}_int8.tflite")
        assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in int8["ops"] and "WHILE" not in int8["ops"]
        assert int8["stateful"] and int8["inputs"][0]["dtype"] == "int8"
        assert int8["size"] <= 0.5 * fp32["size"]


def test_onnx_keeps_names_and_dynamic_batch(tiny_exports):
    info = describe(tiny_exports["cnn"] / "cnn_fp32.onnx")
    assert info["inputs"][0]["name"] == "image" and info["inputs"][0]["shape"][0] is None
    assert info["outputs"][0]["name"] == "probs" and info["opset"] == 17
    int8 = json.loads((tiny_exports["cnn"] / "cnn_int8.onnx.json").read_text())
    assert set(int8["onnx_quantization"]["measured"]) == {"static", "dynamic"}


def test_index_lists_all_artifacts(tiny_exports):
    index = json.loads((tiny_exports["mlp"] / "artifacts.json").read_text())
    assert len(index["artifacts"]) == 6


def test_functional_model_two_inputs_two_outputs(tmp_path):
    import keras

    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    merged = keras.layers.Concatenate()([keras.layers.Dense(5, activation="relu")(a), b])
    model = keras.Model([a, b], [keras.layers.Dense(3, activation="softmax", name="cls")(merged),
                                 keras.layers.Dense(1, name="reg")(merged)])
    model.save(tmp_path / "two.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", a=rng.random((32, 6)).astype(np.float32),
             b=rng.random((32, 4)).astype(np.float32))
    targets, _ = plan_targets(["tflite", "onnx"], ["none", "int8"])
    records = export(tmp_path / "two.keras", targets, options=ExportOptions(calibration=str(tmp_path / "calib.npz")))
    for record in records:
        assert len(record["inputs"]) == 2 and len(record["outputs"]) == 2


def test_activation_ranges_follow_the_calibration_method(tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(200, 4)).astype(np.float32)
    x[7] *= 40  # one outlier sample: min/max spends the input's int8 grid on it, entropy clips it
    np.savez(tmp_path / "calib.npz", x=x)
    scales = {}
    for method in ("minmax", "entropy"):
        options = ExportOptions(calibration=str(tmp_path / "calib.npz"), calibration_method=method)
        record = export(tmp_path / "m.keras", plan_targets(["tflite"], ["int8"])[0], out=tmp_path / method,
                        options=options)[0]
        assert record["calibration_method"] == method
        scales[method] = record["inputs"][0]["quantization"]["scale"]
    assert scales["entropy"] < scales["minmax"] / 4, scales

    # ONNX entropy clips the same input, but never a softmax's known 0…1 range (else classes saturate)
    import onnx
    from onnx import numpy_helper

    options = ExportOptions(calibration=str(tmp_path / "calib.npz"), calibration_method="entropy", onnx_quant="static")
    record = export(tmp_path / "m.keras", plan_targets(["onnx"], ["int8"])[0], out=tmp_path / "onnx", options=options)[0]
    graph = onnx.load(tmp_path / "onnx" / record["file"]).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    softmax = next(n.output[0] for n in graph.node if n.op_type == "Softmax")
    quantize = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == softmax)
    assert abs(float(constants[quantize.input[1]]) - 1 / 255) < 1e-6

    options = ExportOptions(calibration=str(tmp_path / "calib.npz"), calibration_method="auto")
    records = export(tmp_path / "m.keras", plan_targets(["tflite"], ["int8", "int16x8"])[0], out=tmp_path / "auto",
                     options=options)
    int8, int16 = (next(r for r in records if r["precision"] == p) for p in ("int8", "int16x8"))
    assert int8["calibration_auto"] and set(int8["calibration_measured"]) == {"minmax", "entropy", "percentile"}
    assert int8["calibration_method"] == max(int8["calibration_measured"], key=lambda m: (
        int8["calibration_measured"][m]["agreement"], int8["calibration_measured"][m]["sqnr_db"]))
    # int16x8 cannot take another method: said in its sidecar, not silently ignored
    assert int16["calibration_method"] == "minmax" and "int8 and mixed targets only" in int16["notes"][0]


def test_unsupported_mode_is_refused_before_converting(tmp_path):
    import keras

    inputs = keras.Input((5, 3))
    sequence, state, _ = keras.layers.LSTM(4, return_state=True)(inputs)
    keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Concatenate()([sequence, state]))).save(tmp_path / "s.keras")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).random((16, 5, 3)).astype(np.float32))
    targets, _ = plan_targets(["tflite"], ["int8"])
    with pytest.raises(ExportError, match="return_state=True is not supported.*closest alternative: --format onnx"):
        export(tmp_path / "s.keras", targets, options=ExportOptions(calibration=str(tmp_path / "calib.npz")))


@pytest.mark.parametrize("merge", ["concat", "sum"])
def test_backwards_and_bidirectional_lstms_become_fused_builtin_ops(tmp_path, merge):
    import keras

    from edgedl.runners.keras import KerasRunner
    from edgedl.runners.open import open_runner

    inputs = keras.Input((6, 3), name="seq")
    h = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True), merge_mode=merge)(inputs)
    h = keras.layers.LSTM(4, go_backwards=True)(h)
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(h)).save(tmp_path / "bi.keras")
    x = np.random.default_rng(0).normal(size=(64, 6, 3)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    targets, _ = plan_targets(["tflite"], ["none", "int8"])
    records = export(tmp_path / "bi.keras", targets, options=ExportOptions(calibration=str(tmp_path / "calib.npz")))
    reference = KerasRunner(tmp_path / "bi.keras").infer([x])[0]
    for record in records:
        assert record["ops"]["UNIDIRECTIONAL_SEQUENCE_LSTM"] == 3 and not record["flex_ops"]
        with open_runner(tmp_path / "exports" / record["file"]) as runner:
            error = np.max(np.abs(runner.infer([x])[0] - reference))
        assert error <= (1e-5 if record["precision"] == "fp32" else 0.1), (record["file"], error)


def test_int8_needs_calibration_and_enough_of_it(tmp_path, tiny_runs):
    targets, _ = plan_targets(["tflite"], ["int8"])
    # a bare .keras file, away from its run folder, so no recorded calibration data is found
    keras_file = tmp_path / "bare.keras"
    shutil.copyfile(tiny_runs["mlp"] / "model.keras", keras_file)
    with pytest.raises(EdgedlError, match="needs calibration data"):
        export(keras_file, targets, out=tmp_path / "o")
    np.savez(tmp_path / "few.npz", x=np.zeros((3, 64), np.float32))
    with pytest.raises(ExportError, match="int8 needs at least 8"):
        export(keras_file, targets, out=tmp_path / "o", options=ExportOptions(calibration=str(tmp_path / "few.npz")))
    assert not list((tmp_path / "o").glob("*.tflite"))


def test_open_dimensions_need_a_value(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((None, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    model.save(tmp_path / "open.keras")
    targets, _ = plan_targets(["tflite"], ["none"])
    from edgedl.export import check

    report = check(tmp_path / "open.keras", targets)
    assert not report["ok"] and "--seq-len" in json.dumps(report)
    records = export(tmp_path / "open.keras", targets, options=ExportOptions(seq_len=7))
    assert records[0]["inputs"][0]["shape"] == [1, 7, 3]


def test_tampered_run_is_detected(tmp_path, tiny_runs):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_runs["mlp"], run, ignore=shutil.ignore_patterns("exports"))
    with open(run / "model.keras", "ab") as handle:
        handle.write(b"\0")
    targets, _ = plan_targets(["tflite"], ["none"])
    with pytest.raises(EdgedlError, match="changed or replaced"):
        export(run, targets)


def _zoo_model(kind: str):
    """Small models built from the common layers users bring."""
    import keras

    layers = keras.layers
    if kind == "conv":
        return keras.Sequential([keras.Input((12, 12, 3)), layers.Conv2D(4, 3, padding="same"),
                                 layers.BatchNormalization(), layers.ReLU(), layers.DepthwiseConv2D(3),
                                 layers.AveragePooling2D(2), layers.Dropout(0.2), layers.GlobalMaxPooling2D(),
                                 layers.Dense(3, activation="softmax")])
    if kind == "conv1d":
        return keras.Sequential([keras.Input((16, 2)), layers.Conv1D(4, 3, activation="relu"), layers.MaxPooling1D(2),
                                 layers.GlobalAveragePooling1D(), layers.Dense(3, activation="softmax")])
    if kind == "embedding_gru":
        return keras.Sequential([keras.Input((10,), dtype="int32"), layers.Embedding(20, 8), layers.GRU(6),
                                 layers.Dense(3, activation="softmax")])
    return keras.Sequential([keras.Input((7, 3)), layers.Bidirectional(layers.LSTM(5)), layers.Dense(3)])


@pytest.mark.parametrize("kind, formats, quantize", [
    ("conv", ["tflite", "onnx"], ["none", "int8"]),
    ("conv1d", ["tflite", "onnx"], ["none", "int8"]),
    ("embedding_gru", ["tflite", "onnx"], ["none"]),
    ("bidirectional", ["onnx"], ["none"]),
])
def test_common_layers_export_and_match(tmp_path, kind, formats, quantize):
    from edgedl.runners.keras import KerasRunner
    from edgedl.runners.open import open_runner

    model = _zoo_model(kind)
    model.save(tmp_path / f"{kind}.keras")
    shape = tuple(model.inputs[0].shape[1:])
    rng = np.random.default_rng(0)
    x = rng.integers(0, 20, (32, *shape)).astype(np.float32) if kind == "embedding_gru" else \
        rng.random((32, *shape)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", x=x)
    targets, _ = plan_targets(formats, quantize)
    records = export(tmp_path / f"{kind}.keras", targets, options=ExportOptions(calibration=str(tmp_path / "calib.npz")))
    reference = KerasRunner(tmp_path / f"{kind}.keras").infer([x])[0]
    for record in records:
        assert not record["flex_ops"]
        with open_runner(tmp_path / "exports" / record["file"]) as runner:
            y = runner.infer([x])[0]
        limit = 1e-4 if record["precision"] == "fp32" else 0.2
        assert np.max(np.abs(y - reference)) <= limit, record["file"]


def test_recurrent_int8_tflite_is_refused_with_alternative(tmp_path):
    _zoo_model("embedding_gru").save(tmp_path / "gru.keras")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).integers(0, 20, (16, 10)).astype(np.int32))
    targets, _ = plan_targets(["tflite"], ["int8"])
    with pytest.raises(ExportError, match="crashes the converter.*--quantize dynamic"):
        export(tmp_path / "gru.keras", targets, options=ExportOptions(calibration=str(tmp_path / "calib.npz")))


@pytest.mark.parametrize("kind", ["lstm_seq_gru", "bidirectional_backwards"])
def test_unrolled_recurrent_layers_compute_like_keras_with_plain_builtin_ops(tmp_path, kind):
    """--unroll: LSTM/GRU/SimpleRNN written out over the fixed timesteps; no fused op, no loop, no state."""
    import keras

    from edgedl.runners.keras import KerasRunner
    from edgedl.runners.open import open_runner
    from edgedl.runners.tflite_model import TFLiteModel

    inputs = keras.Input((6, 3), name="seq")
    if kind == "lstm_seq_gru":
        h = keras.layers.LSTM(8, return_sequences=True)(inputs)
        h = keras.layers.GRU(5, return_sequences=True)(h)
        outputs = keras.layers.TimeDistributed(keras.layers.Dense(3, activation="softmax"))(h)
    else:
        h = keras.layers.Bidirectional(keras.layers.LSTM(8, return_sequences=True), merge_mode="sum")(inputs)
        h = keras.layers.SimpleRNN(4, go_backwards=True)(h)
        outputs = keras.layers.Dense(3, activation="softmax")(h)
    keras.Model(inputs, outputs).save(tmp_path / "r.keras")
    x = np.random.default_rng(0).normal(size=(64, 6, 3)).astype(np.float32)
    np.savez(tmp_path / "calib.npz", seq=x)
    targets, _ = plan_targets(["tflite"], ["none", "dynamic", "int8"])
    records = export(tmp_path / "r.keras", unrolled_targets(targets),
                     options=ExportOptions(calibration=str(tmp_path / "calib.npz")))
    reference = KerasRunner(tmp_path / "r.keras").infer([x])[0]
    assert [r["file"] for r in records] == ["r_fp32-unrolled.tflite", "r_dynamic-unrolled.tflite",
                                            "r_int8-unrolled.tflite"]
    for record in records:
        path = tmp_path / "exports" / record["file"]
        ops = set(record["ops"])
        assert "FULLY_CONNECTED" in ops and not ops & {"UNIDIRECTIONAL_SEQUENCE_LSTM", "WHILE", "PACK", "UNPACK"}
        assert not record["flex_ops"] and record["unrolled"]["timesteps_fixed"]
        graph = TFLiteModel.read(path).main
        assert not any(t.is_variable for t in graph.tensors)  # nothing to reset between inferences
        with open_runner(path) as runner:
            error = np.max(np.abs(runner.infer([x])[0] - reference))
        assert error <= {"fp32": 1e-5, "dynamic": 0.05, "int8": 0.1}[record["precision"]], (record["file"], error)


def test_unrolled_is_a_tflite_mode_and_names_its_limits(tmp_path):
    from edgedl.core.errors import UsageError
    from edgedl.export import parse_targets

    assert [t.file_name("m") for t in parse_targets(["tflite:dynamic:unrolled"])] == ["m_dynamic-unrolled.tflite"]
    with pytest.raises(UsageError, match="TFLite fp32, fp16, dynamic, int8 mode"):
        parse_targets(["onnx:int8:unrolled"])
    with pytest.raises(UsageError, match="unknown variant 'unroled'"):
        parse_targets(["tflite:int8:unroled"])


def test_the_warm_export_worker_converts_the_same_bytes_follows_the_caller_and_is_replaced_on_start_up_changes(
        tiny_runs, tmp_path, monkeypatch):
    """Exports in one process share a warm worker; each starts a fresh session in it, so the bytes are
    what a cold worker writes (same sha256 twice, layer-name counters reset). Each task sees the
    caller's environment and folder; a changed start-up setting (TensorFlow's) gets a new worker."""
    import os

    from edgedl.export import run as export_run

    targets = plan_targets(["tflite"], ["none", "int8"])[0]
    first = export(tiny_runs["mlp"], targets, out=tmp_path / "a")
    warm = export_run._WARM.pool
    monkeypatch.setenv("EDGEDL_TEST_MARK", "1")
    monkeypatch.chdir(tmp_path)
    second = export(tiny_runs["mlp"], targets, out=tmp_path / "b")
    assert export_run._WARM.pool is warm, "the second export reuses the worker"
    assert [r["sha256"] for r in first] == [r["sha256"] for r in second]
    assert export_run._WARM.run(os.getenv, "EDGEDL_TEST_MARK") == "1", "the caller's environment, per task"
    assert export_run._WARM.run(os.getcwd) == str(tmp_path), "the caller's folder, per task"
    monkeypatch.delenv("EDGEDL_TEST_MARK")
    assert export_run._WARM.run(os.getenv, "EDGEDL_TEST_MARK") is None, "a variable the caller dropped is gone"
    monkeypatch.setenv("TF_EDGEDL_TEST_MARK", "1")
    export(tiny_runs["mlp"], targets[:1], out=tmp_path / "c")
    assert export_run._WARM.pool is not warm, "a worker made under other start-up settings is replaced"
