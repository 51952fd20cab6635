"""The whole pipeline once, on the real built-in digits, with one epoch per model, for a microcontroller
board: every int8 artifact also runs under TFLite Micro and is fitted to the board."""

from __future__ import annotations

import json
import re
from xml.etree import ElementTree

import pytest
from conftest import ROOT, run_cli

pytestmark = pytest.mark.e2e


def test_pipeline_report_and_incremental_rerun(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("EDGEDL_TFLM_ROOT", raising=False)  # no tree: the firmware check is skipped, and says so
    out = tmp_path / "pipeline"
    args = ["pipeline", "--epochs", "1", "--bench-time", "0.2", "--out", out, "--target", "nano33ble"]
    code, stdout, err = run_cli(args, capsys)
    summary = json.loads((out / "pipeline.json").read_text())
    # One epoch still makes faithful exports: every gate of the seed recipes must pass.
    assert code == 0 and summary["passed"], err
    assert "all gates pass" in stdout

    assert [r["name"] for r in summary["recipes"]] == ["mlp", "cnn", "lstm"]
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if re.match(r"\| (mlp|cnn|lstm) \| ", line)]
    assert len(rows) == 19, "one summary row per model × format × precision (the LSTM also unrolled)"
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[4].replace(",", "")) > 0  # size
        assert cells[5].endswith("%") and cells[7].endswith("%")  # accuracy, agreement
        assert float(cells[8]) > 0 and float(cells[9]) >= float(cells[8])  # p50 <= p99
        assert cells[12] == "pass" and cells[13] == "pass"  # parity, gates
        # MCU column: a verdict with RAM and flash for each full-int8 TFLite artifact, – for the rest
        assert cells[14].startswith("✓ RAM") if "_int8.tflite" in cells[1] else cells[14] == "–"
        # firmware column: only the shipped bundle's, and without a TFLite Micro tree it is skipped, never passed
        assert cells[15].startswith("skipped: ") if "★" in cells[1] else cells[15] == "–"
    lstm = {r["artifact"]: r for r in summary["recipes"][2]["validation"]["matrix"]}
    assert lstm["lstm_dynamic-unrolled.tflite"]["verdict"] == "pass"  # the unrolled path is a faithful candidate
    for recipe in summary["recipes"]:
        fp32 = next(r for r in recipe["validation"]["matrix"] if r["artifact"].endswith("_fp32.tflite"))
        assert fp32["verdict"] == "pass" and fp32["max_abs"] <= 2e-5
        assert recipe["metrics"]["test_accuracy"] > 0.5  # one epoch on 3,600 real digits
    for section in ("## Summary", "### Parity matrix", "### Per-layer drift (int8)", "## Environment",
                    "## Reproduce", "![tradeoff](plots/tradeoff.png)", "edgedl bundle"):
        assert section in report
    html = (out / "report.html").read_text()
    assert html.count("<svg class='plot tradeoff'") == 3 and "<table id='artifacts'" in html
    assert not re.search(r"""(src|href)\s*=\s*['"](?!#)""", html)  # self-contained: nothing fetched
    # Model Explorer overlays beside the report, for every int8 artifact
    assert (out / "overlays" / "cnn_int8.tflite.drift_steps.json").is_file()
    assert (out / "overlays" / "lstm_int8.onnx.drift_sqnr.json").is_file()
    suites = ElementTree.parse(out / "junit.xml").getroot()
    assert len(suites.findall("testsuite")) == 3 and suites.findall(".//testcase")
    # for a board, the int8 TFLite model ships, with its firmware folder sized for that board
    assert [r["ship"] for r in summary["recipes"]] == ["mlp_int8.tflite", "cnn_int8.tflite", "lstm_int8.tflite"]
    for recipe in summary["recipes"]:
        assert recipe["firmware"]["passed"] is None and recipe["firmware"]["skipped"]
        bundle = json.loads((out / recipe["name"] / "bundle" / "manifest.json").read_text())
        assert bundle["mcu"]["target"]["fits"] and (out / recipe["name"] / "bundle" / "mcu" / "main.cc").exists()
        assert f"kArenaSize = {bundle['mcu']['arena']['with_margin']};" in \
            (out / recipe["name"] / "bundle" / "mcu" / "main.cc").read_text()

    code_again, stdout_again, _ = run_cli(args, capsys)
    assert code_again == 0
    assert stdout_again.count("unchanged, skipped") == 18  # 6 steps (train … mcu, bundle) × 3 models
    assert json.loads((out / "pipeline.json").read_text())["recipes"][0]["ship"] == summary["recipes"][0]["ship"]
