"""Drift in Keras layer names, Model Explorer overlays and quiet runtimes, on the tiny seed models."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from conftest import ROOT, run_cli

from edgedl.validate.drift_names import INSERTED, by_layer, graph_name, owner

LAYERS = {"conv": "Conv2D", "pool": "MaxPooling2D", "hidden": "Dense", "probs": "Dense"}


# ---------------------------------------------------------------- naming (fast)

def test_converter_nodes_fold_into_the_layer_upstream():
    producers = {"Transpose__28:0": ["cnn_1/pool_1/MaxPool2d:0"], "StatefulPartitionedCall_1:0": ["model/probs_1/BiasAdd"],
                 "model/probs_1/BiasAdd": ["x"], "orphan": ["serving_default_x:0"]}
    assert owner("cnn_1/conv_1/Relu:0", LAYERS, producers) == ("conv", False)
    assert owner("Transpose__28:0", LAYERS, producers) == ("pool", True)  # tf2onnx's transpose → its layer
    assert owner("StatefulPartitionedCall_1:0", LAYERS, producers) == ("probs", True)  # the model output
    assert owner("orphan", LAYERS, producers) == (None, True)  # nothing named upstream: the converter's own


def test_by_layer_keeps_each_layers_worst_tensor_and_groups_the_rest():
    rows = [{"tensor": "a", "layer": "conv", "score": 0.2}, {"tensor": "b", "layer": "conv", "score": 0.7},
            {"tensor": "c", "layer": None, "score": 0.1}, {"tensor": "d", "layer": "probs", "score": 0.4}]
    layers = by_layer(rows)
    assert [(r["layer"], r["tensor"], r["tensors"]) for r in layers] == [("conv", "b", 2), ("probs", "d", 1),
                                                                         (INSERTED, "c", 1)]


def test_debugger_names_find_the_artifacts_tensor():
    known = {"m/hidden/MatMul", "m/hidden/MatMul;m/hidden/Relu", "StatefulPartitionedCall_1:0"}
    assert graph_name("m/hidden/MatMul;m/hidden/Relu1", known) == "m/hidden/MatMul;m/hidden/Relu"  # longest
    assert graph_name("StatefulPartitionedCall_1:02", known) == "StatefulPartitionedCall_1:0"
    assert graph_name("elsewhere", known) is None


# ---------------------------------------------------------------- real models (slow tier)

@pytest.fixture(scope="module")
def drift_reports(tiny_runs, tiny_exports):
    from edgedl.validate.run import ValidateOptions, validate

    reports = {}
    for arch in ("cnn", "lstm"):
        int8 = sorted(tiny_exports[arch].glob("*_int8.*"))
        reports[arch] = validate(tiny_runs[arch], int8, ValidateOptions(layers=True), say=lambda m: None)["drift"]
    return reports


def test_drift_names_keras_layers_for_every_int8_artifact(tiny_runs, drift_reports):
    from edgedl.runners.modelio import layer_classes, load_keras_model

    for arch, drift in drift_reports.items():
        keras_layers = set(layer_classes(load_keras_model(tiny_runs[arch] / "model.keras")))
        assert set(drift) == {f"{arch}_int8.tflite", f"{arch}_int8.onnx"}
        for artifact, entry in drift.items():
            assert "error" not in entry, (artifact, entry)  # ONNX drift of the LSTM works too
            assert entry["layers"] and {r["layer"] for r in entry["layers"]} <= keras_layers | {INSERTED}
            assert not any(re.search(r"NumericVerify|Transpose__|StatefulPartitionedCall", r["layer"])
                           for r in entry["layers"])


def test_unavailable_drift_is_one_plain_sentence(tmp_path):
    from pathlib import Path

    from edgedl.validate.drift import unavailable_reason

    why = unavailable_reason(Path("m_int8.onnx"), ValueError("all the input array dimensions except for the …"))
    assert "ValueError" not in why and "dimensions" not in why and why.count(".") <= 1
    assert "missing" in unavailable_reason(Path("m_int8.onnx"), FileNotFoundError("m_fp32.onnx"))


def test_explore_export_writes_overlays_keyed_by_model_explorer_nodes(tiny_exports, drift_reports, tmp_path, capsys):
    artifact = tiny_exports["cnn"] / "cnn_int8.tflite"  # its validation.json holds the drift above
    code, out, err = run_cli(["explore", tiny_exports["cnn"].parent, "--export", tmp_path / "ov"], capsys)
    assert code == 0, err
    files = {p.name: json.loads(p.read_text()) for p in (tmp_path / "ov").glob("cnn_*.json")}
    assert set(files) == {f"{artifact.name}.{k}.json" for k in ("precision", "drift_steps", "drift_sqnr")}
    steps = files[f"{artifact.name}.drift_steps.json"]
    assert steps["results"] and all(v["value"] >= 0 for v in steps["results"].values())
    assert {t["value"] for t in steps["thresholds"]} and "int8" in {
        v["value"] for v in files[f"{artifact.name}.precision.json"]["results"].values()}
    adapter = pytest.importorskip("ai_edge_model_explorer_adapter", reason="the [explore] extra is not installed")
    graph = json.loads(adapter.ConvertFlatbufferDirectlyToJson(adapter.VisualizeConfig(), str(artifact)))
    names = {a["value"] for n in graph[0]["subgraphs"][0]["nodes"] for o in n.get("outputsMetadata", [])
             for a in o["attrs"] if a["key"] == "tensor_name"}
    # every overlay value lands on a node Model Explorer draws (it matches by output tensor name)
    assert set(steps["results"]) <= names
    assert any("conv" in key for key in steps["results"])  # the conv layer's node carries its drift


def test_explore_without_model_explorer_says_how_to_install(tiny_exports, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "model_explorer", None)  # as if the extra were not installed
    code, out, err = run_cli(["explore", tiny_exports["cnn"] / "cnn_int8.tflite"], capsys)
    assert code != 0 and "edgedl[explore]" in err and "Traceback" not in err


def test_runtime_info_lines_only_with_verbose(tiny_runs, tiny_exports):
    artifact = tiny_exports["mlp"] / "mlp_fp32.tflite"

    def output(*flags):
        done = subprocess.run([sys.executable, "-m", "edgedl", *flags, "validate", str(tiny_runs["mlp"]),
                               str(artifact), "--samples", "50"], capture_output=True, text=True, cwd=ROOT,
                              timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stdout + done.stderr

    assert "INFO:" not in output()
    assert "INFO: Created TensorFlow Lite XNNPACK delegate" in output("--verbose")  # the check can see them


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_model_explorer_page_shows_the_drift_overlay(tiny_exports, drift_reports, tmp_path):
    """`edgedl explore` serves the int8 CNN in Model Explorer; headless Chromium sees the overlays on its nodes."""
    import time

    from chromium import Page, chromium_binary

    pytest.importorskip("model_explorer", reason="the [explore] extra is not installed")
    if chromium_binary() is None:
        pytest.skip("chromium is not installed (CI installs it: .ci/run)")
    port = _free_port()
    log = tmp_path / "explore.log"
    with open(log, "w") as sink:
        server = subprocess.Popen([sys.executable, "-u", "-m", "edgedl", "explore", str(tiny_exports["cnn"].parent),
                                   "--no-browser", "--port", str(port), "--host", "127.0.0.1"],
                                  stdout=sink, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        deadline = time.monotonic() + 240
        url = None
        while url is None and time.monotonic() < deadline and server.poll() is None:
            found = re.search(rf"(http://127\.0\.0\.1:{port}/\?data=\S+)", log.read_text())
            url = found.group(1) if found else None
            time.sleep(0.5)  # polling for an event (the server printed its URL), bounded by the deadline
        assert url, log.read_text()[-2000:]
        with Page(size=(1400, 900)) as page:
            page.call("Page.navigate", url=url)
            page.wait_for("Page.loadEventFired")
            # The node table and the per-node data panels render separately (CI once saw the table first):
            # wait for every piece the assertions need, so a slow render is never read as a missing overlay.
            wanted = ("conv_2d", "drift vs float (quantization steps)", "op precision")
            text = ""
            while time.monotonic() < deadline and not all(w in text for w in wanted):
                time.sleep(1)  # polling for an event (the graph and its overlays rendered), bounded by the deadline
                text = page.evaluate("document.body.innerText")
            assert all(w in text for w in wanted), text[-3000:]
            assert "conv_2d" in text and "int8" in text  # the conv node's row carries its overlay values
            (ROOT / "test-artefacts").mkdir(exist_ok=True)
            page.screenshot(ROOT / "test-artefacts" / "model_explorer.png", full_page=False)
            # Model Explorer's own page asks Google for its web font; edgedl's data never leaves the machine
            outside = [u for u in page.requests() if not u.startswith(f"http://127.0.0.1:{port}/")
                       and not u.startswith("data:")]
            assert all("fonts.g" in u for u in outside), outside
            assert not [e for e in page.console_errors() if "ERR_NAME_NOT_RESOLVED" not in e], page.console_errors()
    finally:
        server.terminate()
        server.wait(timeout=20)
