"""The rescue zoo (issue 24): one small model per int8 remedy that once lied to a new user. Each remedy
either passes the full gates on held-out data, as written, or says plainly that it did not help.

(The other zoo members live beside the behaviour they guard: two inputs in reversed TFLite order and
regression outputs beyond the calibration range in test_remedies.py, a token model in TFLite Micro in
test_mcu.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow


def _card(folder, name: str, heldout_x, labels, calibration_x) -> None:
    np.savez(folder / "calib.npz", x=calibration_x.astype(np.float32))
    np.savez(folder / "heldout.npz", x=heldout_x.astype(np.float32), y=labels)
    (folder / f"{name}.card.toml").write_text('[data]\nheldout = "heldout.npz"\ncalibration = "calib.npz"\n')


def test_keep_float_on_a_bilstm_passes_the_full_gates_as_written_or_writes_nothing(tmp_path, capsys):
    """The case: --keep-float auto said ✓ on a BiLSTM whose mixed file had the failing int8's errors."""
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((6, 3), name="x")
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(8), name="bilstm")(x)
    model = keras.Model(x, keras.layers.Dense(4, activation="softmax", name="probs")(hidden))
    model.save(tmp_path / "bilstm.keras")
    rng = np.random.default_rng(0)
    heldout = rng.normal(0, 1.5, (120, 6, 3))
    _card(tmp_path, "bilstm", heldout, model.predict(heldout, verbose=0).argmax(1), rng.normal(0, 1.5, (200, 6, 3)))
    out = tmp_path / "e"
    code, printed, err = run_cli(["export", tmp_path / "bilstm.keras", "-q", "int8", "--keep-float", "auto",
                                  "--out", out], capsys)
    said = printed + err
    mixed = out / "bilstm_mixed.tflite"
    if code == 0 and mixed.exists():  # a ✓ must survive an independent validate, in the int8 file's steps
        assert "passes the gates on the held-out data, as written" in said
        code, printed, err = run_cli(["validate", tmp_path / "bilstm.keras", mixed, "--report", tmp_path / "v.json"],
                                     capsys)
        row = json.loads((tmp_path / "v.json").read_text())["artifacts"][0]
        assert code == 0 and row["passed"], printed + err
        assert "max_mean_error_steps" in row["tolerances"], "judged in the replaced int8's output steps"
    elif code == 0:
        assert "plain int8 already passes" in said and "nothing written" in said
    else:  # did not help: said plainly, and nothing left behind that could be mistaken for a rescue
        assert code == 1 and ("no set of up to" in said or "fails its gates on the held-out data" in said), said
        assert "✓ passes the gates" not in said.split("keep-float search")[-1].split("\n")[-2]
        assert not mixed.exists() and "Traceback" not in said


def test_keeping_a_bilstm_float_keeps_its_fused_lstm_ops_float(tmp_path, capsys):
    """The converter names a fused LSTM ``tfl.unidirectional_sequence_lstm``, not by its layer: --keep-float
    bilstm kept only the concatenation float and the LSTMs int8, so no rescue could measure anything."""
    import keras

    from edgedl.runners.tflite_model import TFLiteModel

    keras.utils.set_random_seed(0)
    x = keras.Input((6, 3), name="x")
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(8), name="bilstm")(x)
    keras.Model(x, keras.layers.Dense(4, activation="softmax", name="probs")(hidden)).save(tmp_path / "b.keras")
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).normal(size=(64, 6, 3)).astype(np.float32))
    code, printed, err = run_cli(["export", tmp_path / "b.keras", "-q", "int8", "--keep-float", "bilstm",
                                  "--calibration", tmp_path / "calib.npz", "--input-scale", "1", "--out",
                                  tmp_path / "e"], capsys)
    assert code == 0, printed + err
    graph = TFLiteModel.read(tmp_path / "e" / "b_mixed.tflite").main
    types = {(op.name, graph.output_of(op).type) for op in graph.ops if op.name in (
        "UNIDIRECTIONAL_SEQUENCE_LSTM", "FULLY_CONNECTED")}  # both directions' LSTMs float, the head int8
    assert types == {("UNIDIRECTIONAL_SEQUENCE_LSTM", "FLOAT32"), ("FULLY_CONNECTED", "INT8")}, types


def test_keep_float_on_a_normalization_model_writes_no_onnx_file_the_search_did_not_choose(tmp_path, capsys):
    """The case: 'plain int8 already passes: no layer kept float', then NAME_mixed.onnx written anyway,
    failing at 57 % agreement."""
    import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    scales = np.array([100.0, 0.01, 5.0, 1.0], np.float32)  # features in very different units
    train = rng.normal(size=(400, 4)).astype(np.float32) * scales + 3 * scales
    norm = keras.layers.Normalization(name="norm")
    norm.adapt(train)
    x = keras.Input((4,), name="x")
    hidden = keras.layers.Dense(16, activation="relu", name="hidden")(norm(x))
    model = keras.Model(x, keras.layers.Dense(3, activation="softmax", name="probs")(hidden))
    model.save(tmp_path / "normed.keras")
    heldout = rng.normal(size=(150, 4)).astype(np.float32) * scales + 3 * scales
    _card(tmp_path, "normed", heldout, model.predict(heldout, verbose=0).argmax(1), train[:200])
    out = tmp_path / "e"
    code, printed, err = run_cli(["export", tmp_path / "normed.keras", "-f", "onnx", "-q", "int8", "--keep-float",
                                  "auto", "--out", out, "--input-scale", "1"], capsys)
    said = printed + err
    assert code == 0, said
    if "plain int8 already passes" in said:
        assert "nothing written; use the plain int8 onnx artifact" in said
        assert not list(out.glob("*mixed*")), "the search chose no layer: no mixed file"
    else:  # the search chose layers: then what it wrote passes the gates as written
        assert "passes the gates on the held-out data, as written" in said


def test_qat_on_a_model_with_raw_input_range_ships_an_int8_file_that_passes_what_qat_promised(tmp_path, capsys):
    """The case: QAT reported 90.6 % fake-quantized accuracy on a model fed raw values; its int8 file
    validated at 54.6 % agreement and nothing warned. Inputs here are raw 0…255 values, trained as they are:
    the fake quantization of the input must match the int8 file's input quantization."""
    rng = np.random.default_rng(0)
    centers = rng.uniform(20, 235, (3, 16))
    y = rng.integers(0, 3, 900)
    x = np.clip(centers[y] + rng.normal(0, 25, (900, 16)), 0, 255).astype(np.float32)
    np.savez(tmp_path / "raw.npz", x_train=x, y_train=y)
    run = tmp_path / "runs" / "raw"
    code, printed, err = run_cli(["train", "--model", "mlp", "--data", tmp_path / "raw.npz", "--epochs", "4",
                                  "--out", run], capsys)
    assert code == 0, printed + err
    code, printed, err = run_cli(["finetune", run, "--epochs", "2", "--out", tmp_path / "runs" / "raw-qat"], capsys)
    said = printed + err
    assert code == 0, said
    shipped = json.loads((tmp_path / "runs" / "raw-qat" / "exports" / "validation.json").read_text())
    row = shipped["artifacts"][0]
    assert "fake-quantized validation accuracy" in said and "the int8 TFLite file on held-out data" in said
    assert row["passed"], f"the QAT int8 file fails its gates: {said}"
    assert "passes the int8 gates" in said
