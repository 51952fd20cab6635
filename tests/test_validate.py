"""Validation: faithful exports pass, broken ones fail loudly, every output is judged."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from edgedl.core.errors import ExportError
from edgedl.export import ExportOptions, export, plan_targets
from edgedl.validate.parity import compare, judge, output_metrics
from edgedl.validate.run import ValidateOptions, failure_message, validate


def test_float_exports_are_faithful(tiny_runs, tiny_exports):
    for arch in ("mlp", "cnn", "lstm", "lstm_seq"):
        files = [tiny_exports[arch] / f"{arch}_fp32.tflite", tiny_exports[arch] / f"{arch}_fp32.onnx"]
        summary = validate(tiny_runs[arch], files, ValidateOptions(), say=lambda m: None)
        assert summary["passed"] and summary["evidence"] == "held-out real data"
        for row in summary["matrix"]:
            assert row["max_abs"] <= 2e-5 and row["agreement"] == 1.0


def test_matrix_covers_every_artifact_and_drift_names_layers(tiny_runs, tiny_exports, tmp_path):
    opts = ValidateOptions(layers=True, min_agreement=0.9, max_accuracy_drop=0.05, report=str(tmp_path / "v.json"))
    summary = validate(tiny_runs["cnn"], [tiny_exports["cnn"]], opts, say=lambda m: None)
    assert {r["artifact"] for r in summary["matrix"]} == {p.name for p in tiny_exports["cnn"].glob("*.tflite")} | \
        {p.name for p in tiny_exports["cnn"].glob("*.onnx")}
    int8 = next(r for r in summary["artifacts"] if r["artifact"] == "cnn_int8.tflite")
    assert int8["outputs"][0]["metrics"]["max_error_steps"] is not None
    worst = summary["drift"]["cnn_int8.tflite"]["worst"]
    assert worst and {w["layer"] for w in worst} & {"conv", "hidden", "probs"}
    assert (tmp_path / "v.md").read_text().count("| cnn_") == 6


def test_other_training_run_fails(tiny_runs, tmp_path):
    from edgedl.api import train

    other = tmp_path / "other"
    train(model="mlp", data="digits8x8", epochs=3, seed=1, out=other, verbose=0)
    targets, _ = plan_targets(["tflite"], ["none"])
    export(other, targets)
    summary = validate(tiny_runs["mlp"], [other / "exports" / "mlp_fp32.tflite"], ValidateOptions(),
                       say=lambda m: None)
    assert not summary["passed"] and summary["matrix"][0]["verdict"] == "FAIL"
    assert "not faithful: mlp_fp32.tflite" in failure_message(summary)


def test_int8_calibrated_on_wrong_data_fails(tiny_runs, tmp_path, capsys):
    calib = np.load(tiny_runs["cnn"] / "calibration.npz")["x"]
    targets, _ = plan_targets(["tflite"], ["int8"])
    # 20× too small: export itself stops, with the two ranges
    np.savez(tmp_path / "tiny.npz", x=calib * 0.05)
    with pytest.raises(ExportError, match=r"spans \[0, 0.05\] but the training inputs spans \[0, 1\]"):
        export(tiny_runs["cnn"], targets, out=tmp_path / "refused", options=ExportOptions(calibration=str(tmp_path / "tiny.npz")))
    # 4× too small passes the range check, but clips every real activation: the model runs, but lies
    np.savez(tmp_path / "wrong.npz", x=calib * 0.25)
    records = export(tiny_runs["cnn"], targets, out=tmp_path / "bad",
                     options=ExportOptions(calibration=str(tmp_path / "wrong.npz")))
    lines = []
    summary = validate(tiny_runs["cnn"], [tmp_path / "bad" / records[0]["file"]], ValidateOptions(),
                       say=lines.append)
    assert not summary["passed"]
    assert any(line.strip().startswith("✗ probs") for line in lines)
    # the command line names the remedies that apply to this int8 file, and no traceback
    code, _, err = run_cli(["validate", tiny_runs["cnn"], tmp_path / "bad" / records[0]["file"], "--report",
                            tmp_path / "v.json"], capsys)
    assert code == 1 and "int8 remedies that apply" in err and "--calibration-method auto" in err
    assert "--quantize int16x8" in err and "edgedl finetune RUN --qat" in err and "Traceback" not in err


def test_mismatched_artifact_is_an_error_row_not_a_crash(tiny_runs, tiny_exports):
    lines = []
    summary = validate(tiny_runs["cnn"], [tiny_exports["mlp"] / "mlp_fp32.tflite"], ValidateOptions(),
                       say=lines.append)
    assert not summary["passed"] and summary["matrix"][0]["verdict"] == "error"
    assert any("not exported from this model" in line for line in lines)


def test_saved_reference_round_trip(tiny_runs, tiny_exports, tmp_path):
    artifact = tiny_exports["mlp"] / "mlp_fp32.onnx"
    validate(tiny_runs["mlp"], [artifact], ValidateOptions(save_results=str(tmp_path / "res"),
                                                            report=str(tmp_path / "a.json")), say=lambda m: None)
    assert (tmp_path / "res" / "reference.npz").exists()
    again = validate(tiny_runs["mlp"], [artifact], ValidateOptions(reference=str(tmp_path / "res" / "reference"),
                                                                    report=str(tmp_path / "b.json")),
                     say=lambda m: None)
    first = json.loads((tmp_path / "a.json").read_text())["matrix"][0]
    assert again["matrix"][0]["max_abs"] == first["max_abs"]


def test_synthetic_inputs_are_labelled_weaker(tiny_runs, tiny_exports, tmp_path):
    summary = validate(tiny_runs["mlp"], [tiny_exports["mlp"] / "mlp_fp32.tflite"],
                       ValidateOptions(synthetic=50, report=str(tmp_path / "s.json")), say=lambda m: None)
    assert "weaker evidence" in summary["evidence"] and summary["samples"] == 50


def test_every_output_is_judged_and_nan_reported():
    ref = [np.eye(4, dtype=np.float32), np.ones((4, 1), np.float32)]
    bad = [ref[0].copy(), np.full((4, 1), np.nan, np.float32)]
    bad[0][0] = [0, 1, 0, 0]
    checks = compare(ref, bad, ["a", "b"], {"a": np.arange(4)}, {"atol": 1e-5, "min_agreement": 0.99})
    assert [c.passed for c in checks] == [False, False]
    assert "agreement" in checks[0].failures[-1] and "NaN" in checks[1].failures[0]


def test_metrics_values():
    ref = np.array([[0.9, 0.1], [0.2, 0.8]])
    metrics = output_metrics(ref, ref + 0.01, np.array([0, 1]), scale=1 / 256)
    assert metrics["max_abs"] == pytest.approx(0.01)
    assert metrics["agreement"] == 1.0 and metrics["accuracy_delta"] == 0.0
    assert metrics["max_error_steps"] == pytest.approx(2.56)
    assert 30 < metrics["sqnr_db"] < 40
    assert judge(metrics, {"atol": 0.001}) and not judge(metrics, {"atol": 0.02})


def test_regression_outputs_are_judged_by_range_and_mae_not_accuracy():
    ref = np.linspace(0, 10, 20).reshape(20, 1)
    labels = ref[:, 0] + 0.5
    metrics = output_metrics(ref, ref + 0.2, labels, None, kind="regression")
    assert "agreement" not in metrics and "candidate_accuracy" not in metrics
    assert metrics["rel_error"] == pytest.approx(0.02) and metrics["reference_mae"] == pytest.approx(0.5)
    assert metrics["mae_increase"] == pytest.approx(-0.4)  # closer to the labels: no increase
    assert not judge(metrics, {"max_rel_error": 0.05}) and judge(metrics, {"max_rel_error": 0.01})
    worse = output_metrics(ref, ref - 0.2, labels, None, kind="regression")
    assert judge(worse, {"max_mae_increase": 0.1})[0].startswith("MAE 0.7")


def test_fp32_error_is_judged_relative_to_the_output_magnitude():
    big = np.full((4, 3), 1000.0)
    limits = {"atol": 1e-5, "rtol": 1e-4}
    assert not judge(output_metrics(big, big + 0.05, None, None, "regression"), limits)  # 0.05 ≤ 0.1
    assert judge(output_metrics(big, big + 0.2, None, None, "regression"), limits)


def test_output_kind_from_declaration_labels_activation_and_values():
    from edgedl.validate.parity import output_kind

    probs = np.array([[0.2, 0.8], [0.6, 0.4]])
    values = np.array([[1.5, -3.0], [2.0, 7.0]])
    assert output_kind("o", values, None, "classification", None) == "classification"
    assert output_kind("o", values, np.array([0, 1]), None, None) == "classification"
    assert output_kind("o", values, np.array([0.5, 1.7]), None, None) == "regression"
    assert output_kind("o", values, None, None, "softmax") == "classification"
    assert output_kind("o", probs, None, None, None) == "classification"  # rows of probabilities
    assert output_kind("o", values, None, None, None) == "regression"
    assert output_kind("o", np.ones((3, 1)), None, None, "sigmoid") == "regression"  # one value is not classes
