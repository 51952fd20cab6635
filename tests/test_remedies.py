"""int8 remedies that never lie (issue 24): the cases that failed for a new user, each on a small model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow


def _two_inputs(tmp_path):
    """Keras takes (image, features); the TFLite file lists features first: only feeding by name is right."""
    import keras

    image, features = keras.Input((8, 8, 1), name="image"), keras.Input((8,), name="features")
    joined = keras.layers.Concatenate()([keras.layers.Flatten()(keras.layers.Conv2D(4, 3)(image)),
                                         keras.layers.Dense(8, activation="relu")(features)])
    model = keras.Model([image, features], keras.layers.Dense(3, activation="softmax", name="probs")(joined))
    model.save(tmp_path / "two.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", image=rng.uniform(size=(64, 8, 8, 1)).astype(np.float32),
             features=rng.normal(size=(64, 8)).astype(np.float32))
    return tmp_path / "two.keras"


def test_calibration_auto_feeds_a_reordered_multi_input_model_by_name(tmp_path, capsys):
    from edgedl.runners.open import open_runner

    model = _two_inputs(tmp_path)
    code, out, err = run_cli(["export", model, "--format", "tflite,onnx", "--quantize", "int8", "--calibration",
                              tmp_path / "calib.npz", "--calibration-method", "auto", "--onnx-quant", "static",
                              "--input-scale", "1", "--out", tmp_path / "exports"], capsys)
    assert code == 0, out + err
    with open_runner(tmp_path / "exports" / "two_int8.tflite") as runner:
        order = [t.name for t in runner.inputs]
    assert order == ["features", "image"]  # the case: TFLite's order is not Keras' order
    assert "ranges:" in out + err  # auto measured the candidates on the right inputs
    sidecar = json.loads((tmp_path / "exports" / "two_int8.onnx.json").read_text())
    assert sidecar["onnx_quantization"]["calibration_method"] in ("minmax", "entropy", "percentile")


def test_a_float_output_rescue_is_judged_in_the_steps_of_the_int8_it_replaces():
    """The BiLSTM case: a mixed model's float output skipped the int8 steps gate and 'passed' with the
    failing int8's errors. Given the replaced int8's output steps, it answers to that gate."""
    from edgedl.validate.parity import compare
    from edgedl.validate.run import ValidateOptions, step_scales, tolerances

    report = {"outputs": [{"name": "probs", "metrics": {"output_scale": 0.01}}, {"name": "raw", "metrics": {}}]}
    scales = step_scales(report)
    assert scales == {"probs": 0.01}
    plain = tolerances(None, "mixed", ValidateOptions())
    judged = tolerances(None, "mixed", ValidateOptions(step_scales=scales), in_steps=True)
    assert "max_mean_error_steps" not in plain and judged["max_mean_error_steps"] == 2.0
    assert tolerances(None, "int16x8", ValidateOptions(), in_steps=True)["max_mean_error_steps"] == 2.0
    rng = np.random.default_rng(0)
    reference = np.eye(4)[rng.integers(0, 4, 200)] * 0.8 + 0.05
    candidate = reference + rng.choice([-0.04, 0.04], reference.shape)  # 4 steps off, every top-1 kept
    unjudged = compare([reference], [candidate], ["probs"], {}, plain, [None], ["classification"])[0]
    assert unjudged.passed  # the hole: nothing measured the error that failed
    check = compare([reference], [candidate], ["probs"], {}, judged, [scales["probs"]], ["classification"])[0]
    assert not check.passed and "quantization steps > 2" in check.failures[0]


def test_a_rescue_no_better_than_plain_int8_is_refused():
    from edgedl.validate.rescue import _no_better

    baseline = {"sqnr_db": 21.0, "passed": False}
    assert _no_better({"sqnr_db": 30.0, "passed": True, "failures": []}, baseline)["passed"]
    same = _no_better({"sqnr_db": 21.0, "passed": True, "failures": []}, baseline)
    assert not same["passed"] and "no better than plain int8" in same["failures"][0]


def test_every_ladder_rung_that_passes_but_is_no_better_than_the_int8_it_replaces_is_refused():
    """Calibration, int16x8 and QAT rungs answer to the same no-better check as keep-float: a pass that
    repairs nothing (same SQNR; QAT: no higher held-out accuracy) is not a rescue, nor a shipping candidate."""
    from edgedl.pipeline.gates import recommend
    from edgedl.pipeline.rescue import _refuse_if_no_better, rescue_rows

    replaced = {"sqnr_db": 18.0, "agreement": 0.96, "candidate_accuracy": 0.90}

    def rung(name, **numbers):
        row = {"artifact": f"m_{name}.tflite", "verdict": "pass", "size": 10, **numbers}
        return {"rung": name, "passed": True, "artifact": row["artifact"], "row": row, "failures": [], **numbers}

    better = _refuse_if_no_better(rung("calibration", sqnr_db=25.0, agreement=0.99), replaced)
    assert better["passed"]
    same = _refuse_if_no_better(rung("int16x8", sqnr_db=18.0, agreement=0.99), replaced)
    assert not same["passed"] and "SQNR 18.0 dB is no better than plain int8's 18.0 dB" in same["failures"][0]
    no_sqnr = _refuse_if_no_better(rung("calibration", sqnr_db=None, agreement=0.95), replaced)
    assert not no_sqnr["passed"] and "agreement" in no_sqnr["failures"][0]
    # QAT is judged against its own fine-tuned model: only the labels compare it with the int8 it replaces
    qat = _refuse_if_no_better(rung("qat", sqnr_db=40.0, agreement=1.0, candidate_accuracy=0.89), replaced)
    assert not qat["passed"] and "accuracy 89.00% is no better" in qat["failures"][0]
    unlabelled = _refuse_if_no_better(rung("qat", sqnr_db=40.0, agreement=1.0, candidate_accuracy=None), replaced)
    assert not unlabelled["passed"] and "unmeasured" in unlabelled["failures"][0]
    assert _refuse_if_no_better(rung("qat", candidate_accuracy=0.93), replaced)["passed"]
    rows = rescue_rows({"m_int8.tflite": {"rungs": [same]}})
    assert rows[0]["verdict"] == "not better"
    bench = {"results": [{"artifact": "m_int16x8.tflite", "p50_us": 5.0, "threads": 1, "batch": 1}]}
    assert recommend({"matrix": [dict(rows[0], verdict="pass")]}, bench) == "m_int16x8.tflite"
    assert recommend({"matrix": rows}, bench) is None  # refused: never shipped


def test_the_search_writes_nothing_when_plain_int8_already_passes(tiny_runs, tmp_path, capsys):
    """The Normalization case: 'plain int8 already passes' and then a NAME_mixed file was written anyway."""
    code, out, err = run_cli(["export", tiny_runs["mlp"], "--format", "tflite", "--quantize", "int8",
                              "--keep-float", "auto", "--out", tmp_path / "exports"], capsys)
    assert code == 0, out + err
    assert "plain int8 already passes" in err and "nothing written; use the plain int8 tflite artifact" in err
    assert not list((tmp_path / "exports").glob("*mixed*")), "the search chose no layer: no mixed file"


def test_a_mixed_file_validated_on_its_own_is_judged_in_the_steps_of_the_int8_beside_it(tiny_runs, tmp_path, capsys):
    """A plain `edgedl validate` of a NAME_mixed file dropped the steps gate its rescue was judged by."""
    out = tmp_path / "exports"
    for extra in ([], ["--keep-float", "probs"]):
        code, stdout, err = run_cli(["export", tiny_runs["mlp"], "-f", "tflite", "-q", "int8", *extra, "--out", out],
                                    capsys)
        assert code == 0, stdout + err
    code, stdout, err = run_cli(["validate", tiny_runs["mlp"], out / "mlp_mixed.tflite", "--report",
                                 tmp_path / "v.json"], capsys)
    row = json.loads((tmp_path / "v.json").read_text())["artifacts"][0]
    assert row["judged_in_steps_of"] == "mlp_int8.tflite" and "max_mean_error_steps" in row["tolerances"]
    assert "judged in the output steps of mlp_int8.tflite" in stdout + err


def test_a_qat_model_whose_int8_file_fails_says_so_and_names_the_likely_cause():
    """The case: finetune --qat reported 90.6 % fake-quantized; the exported int8 validated at 54.6 % agreement."""
    from edgedl.validate.shipped import lines

    check = {"artifact": "runs/x-qat/exports/x-qat_int8.tflite", "passed": False, "accuracy": 0.51,
             "agreement": 0.546, "promised": 0.906, "failures": ["top-1 agreement 54.60% < 99.00%"]}
    printed = "\n".join(lines(check))
    assert "fake-quantized validation accuracy 90.60%" in printed and "agreement 54.60%" in printed
    assert "FAILS the int8 gates" in printed and "⚠" in printed and "values quantized inside a layer" in printed
    assert "⚠" not in "\n".join(lines(check | {"passed": True, "failures": []}))


def test_regression_outputs_beyond_the_calibrated_range_are_the_named_cause_and_the_output_layer_rescues(
        tmp_path, capsys):
    """A regression int8 failed; validate blamed clipped inputs, while the outputs lay outside the calibrated
    output range. The inputs here cover the same range in calibration and held-out data; the outputs do not."""
    import keras

    x = keras.Input((2,), name="x")
    head = keras.layers.Dense(1, name="y")
    model = keras.Model(x, head(x))
    head.set_weights([np.ones((2, 1), np.float32), np.zeros(1, np.float32)])
    model.save(tmp_path / "reg.keras")
    rng = np.random.default_rng(0)
    u, v = rng.uniform(-1, 1, (200, 1)), rng.uniform(-1, 1, (100, 1))
    calibration = np.concatenate([u, -u], 1) + rng.normal(0, 0.01, (200, 2))  # outputs near 0 only
    np.savez(tmp_path / "calib.npz", x=calibration.astype(np.float32))
    np.savez(tmp_path / "heldout.npz", x=np.concatenate([v, v], 1).astype(np.float32), y=(2 * v).astype(np.float32))
    (tmp_path / "reg.card.toml").write_text('task = "regression"\n[data]\nheldout = "heldout.npz"\n'
                                           'calibration = "calib.npz"\n')
    assert run_cli(["export", tmp_path / "reg.keras", "-q", "int8", "--out", tmp_path / "e"], capsys)[0] == 0
    code, out, err = run_cli(["validate", tmp_path / "reg.keras", tmp_path / "e" / "reg_int8.tflite"], capsys)
    row = json.loads((tmp_path / "e" / "validation.json").read_text())["artifacts"][0]
    assert code == 1 and "likely cause 1:" in out + err and "of output 'y' values lie outside" in out + err
    assert row["diagnosis"][0]["effect"] > 0.9 and "keep the output layer in float" in row["diagnosis"][0]["remedy"]
    assert not [c for c in row["diagnosis"] if "input" in c["cause"]], "the inputs are covered: not a cause"
    assert "agreement" not in out.split("likely cause")[0].split("✗ y")[-1], "no agreement for a regression output"
    code, out, err = run_cli(["export", tmp_path / "reg.keras", "-q", "int8", "--keep-float", "auto", "--out",
                              tmp_path / "e"], capsys)
    assert code == 0 and "best y:" in out + err, out + err  # the output layer is a candidate
    assert json.loads((tmp_path / "e" / "reg_mixed.tflite.json").read_text())["keep_float"] == ["y"]


def test_a_tensor_inside_the_network_beyond_its_calibrated_range_is_the_named_cause(tmp_path, capsys):
    """Inputs and outputs covered (the softmax output is pinned to 0…1), a tensor inside not: calibration
    samples cancel in the hidden layer (x1 = -x2), held-out ones add up (x1 = x2), so the logits before the
    softmax reach 4× what calibration saw. The diagnosis reads the int8 file's own logits tensor."""
    import keras

    x = keras.Input((2,), name="x")
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")
    head = keras.layers.Dense(3, activation="softmax", name="probs")
    model = keras.Model(x, head(hidden(x)))
    hidden.set_weights([np.array([[1, -1, 1, -1], [1, -1, -1, 1]], np.float32), np.zeros(4, np.float32)])
    head.set_weights([np.array([[4, 0, 0], [0, 4, 0], [0, 0, 1], [0, 0, 1]], np.float32), np.zeros(3, np.float32)])
    model.save(tmp_path / "mix.keras")
    rng = np.random.default_rng(0)
    u, v = rng.uniform(-1, 1, (200, 1)), rng.uniform(-1, 1, (100, 1))
    calibration = np.concatenate([u, -u], 1) + rng.normal(0, 0.01, (200, 2))
    heldout = np.concatenate([v, v], 1).astype(np.float32)
    labels = model.predict(heldout, verbose=0).argmax(1)
    np.savez(tmp_path / "calib.npz", x=calibration.astype(np.float32))
    np.savez(tmp_path / "heldout.npz", x=heldout, y=labels)
    (tmp_path / "mix.card.toml").write_text('[data]\nheldout = "heldout.npz"\ncalibration = "calib.npz"\n')
    assert run_cli(["export", tmp_path / "mix.keras", "-q", "int8", "--out", tmp_path / "e"], capsys)[0] == 0
    code, out, err = run_cli(["validate", tmp_path / "mix.keras", tmp_path / "e" / "mix_int8.tflite"], capsys)
    row = json.loads((tmp_path / "e" / "validation.json").read_text())["artifacts"][0]
    assert code == 1, out + err
    first = row["diagnosis"][0]
    assert "inside the network are clipped" in first["cause"] and "probs_1/MatMul" in first["cause"], row["diagnosis"]
    assert first["effect"] > 0.1 and "--calibration" in first["remedy"]
    assert not [c for c in row["diagnosis"] if "input 'x'" in c["cause"] or "output" in c["cause"]]
    assert row["inside_coverage"]["tensors"] >= 1 and row["inside_coverage"]["skipped"] is None
