"""The HTML report as a person looks at it: self-contained, sortable, filterable, no overlapping labels.

Built from ``tests/data/pipeline_summary.json``: the ``pipeline.json`` of a real ``edgedl pipeline
--epochs 1`` run on the built-in digits (latency samples thinned to 200 per artifact to keep it small).
The Chromium tests save screenshots and a PDF under ``test-artefacts/`` for a person to look at.
"""

from __future__ import annotations

import copy
import itertools
import json
import re

import pytest
from chromium import Page, chromium_binary
from conftest import ROOT

from edgedl.pipeline import svg
from edgedl.pipeline.html_report import to_html

FIXTURE = ROOT / "tests" / "data" / "pipeline_summary.json"
ARTEFACTS = ROOT / "test-artefacts"


@pytest.fixture
def summary() -> dict:
    return json.loads(FIXTURE.read_text())


def _label_boxes(page: str) -> list[list[tuple[float, float, float, float]]]:
    """Per SVG plot: (x, y, width, height) of every label's box."""
    boxes = []
    for plot in re.findall(r"<svg class='plot.*?</svg>", page):
        boxes.append([tuple(float(v) for v in m) for m in re.findall(
            r"<g class='plot-label'><rect x='([-\d.]+)' y='([-\d.]+)' width='([\d.]+)' height='([\d.]+)'", plot)])
    return boxes


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def test_page_is_one_offline_file_with_summary_first(summary):
    page = to_html(summary, "edgedl pipeline")
    assert not re.search(r"""(src|href)\s*=\s*['"](?!#)""", page)  # nothing fetched: no URLs, no CDN
    assert "<link" not in page and "@import" not in page and "url(" not in page
    assert len(page) < 400_000
    assert page.index("id='summary'") < page.index("class='model'")
    for recipe in summary["recipes"]:
        card = re.search(rf"<div class='card' id='card-{recipe['name']}'>.*?</div>", page).group(0)
        assert recipe["ship"] in card and "PASS" in card and "fastest faithful TFLite" in card


def test_one_tradeoff_plot_per_model_with_its_own_front(summary):
    page = to_html(summary, "")
    assert page.count("<svg class='plot tradeoff'") == len(summary["recipes"])
    assert page.count("<svg class='plot latency'") == len(summary["recipes"])
    assert page.count("class='front'") <= len(summary["recipes"])  # one front per model at most, none across
    assert svg.pareto_indices([(10, 90), (20, 95), (15, 80), (5, 70), (30, 95)]) == [3, 0, 1]


def test_no_two_labels_overlap_even_when_points_coincide(summary):
    page = to_html(summary, "")
    crowded = svg.tradeoff([{"label": f"m_{i}.tflite", "latency_us": 10.0, "accuracy": 0.9, "size": 1000 * (i + 1),
                             "passed": True} for i in range(25)], "crowded")
    for boxes in _label_boxes(page) + _label_boxes(crowded):
        assert not [(a, b) for a, b in itertools.combinations(boxes, 2) if _overlap(a, b)]
    assert len(_label_boxes(crowded)[0]) == 25


def test_parity_matrix_puts_failed_gates_first_and_colours_cells(summary):
    failing = copy.deepcopy(summary)
    cnn = next(r for r in failing["recipes"] if r["name"] == "cnn")
    cnn["gates"].append({"gate": "min_agreement", "artifact": "cnn_int8.onnx", "passed": False,
                         "detail": "cnn_int8.onnx: agreement 99.00% (limit 99.50%)"})
    failing["passed"] = False
    page = to_html(failing, "")
    table = re.search(r"<table id='parity-cnn'.*?</table>", page).group(0)
    first = re.search(r"<tbody><tr>(.*?)</tr>", table).group(1)
    assert "cnn_int8.onnx" in first and "<td class='bad'" in first  # failed row first, its agreement cell red
    assert "<td class='ok'" in table and "FAIL" in page


def test_drift_is_named_by_keras_layer_and_never_shows_exception_text(summary):
    broken = copy.deepcopy(summary)
    lstm = next(r for r in broken["recipes"] if r["name"] == "lstm")
    lstm["validation"]["drift"]["lstm_int8.onnx"] = {
        "error": "its intermediate tensors could not be compared with the float model's",
        "detail": "ValueError: all the input array dimensions except for the concatenation axis must match"}
    page = to_html(broken, "")
    assert "ValueError" not in page and "Traceback" not in page
    assert not re.search(r"NumericVerify|Transpose__|StatefulPartitionedCall", page)
    figure = re.search(r"<figure class='drift' data-artifact='cnn_int8.tflite'>.*?</figure>", page).group(0)
    assert {"conv", "hidden", "probs"} <= set(re.findall(r"<text x='[\d.]+' y='[\d.]+'>([^<]+)</text>", figure))


@pytest.mark.skipif(chromium_binary() is None, reason="chromium is not installed (CI installs it: .ci/run)")
def test_report_in_headless_chromium(summary, tmp_path):
    page_path = tmp_path / "report.html"
    page_path.write_text(to_html(summary, "edgedl pipeline"))
    ARTEFACTS.mkdir(exist_ok=True)
    with Page() as page:
        page.open(page_path)
        assert page.console_errors() == []
        assert page.requests() == [page_path.resolve().as_uri()]  # the page itself, nothing else
        # sort the summary table by p50, both ways
        column = page.evaluate("[...document.querySelectorAll('#artifacts th')].findIndex(t => t.textContent === "
                               "'p50 (µs)')")
        read = (f"[...document.querySelectorAll('#artifacts tbody tr')].map(r => "
                f"parseFloat(r.cells[{column}].dataset.v))")
        page.evaluate(f"document.querySelectorAll('#artifacts th')[{column}].click()")
        values = page.evaluate(read)
        assert values == sorted(values) and len(values) == 18
        page.evaluate(f"document.querySelectorAll('#artifacts th')[{column}].click()")
        assert page.evaluate(read) == sorted(values, reverse=True)
        # filter
        page.evaluate("const f = document.querySelector(\"input[data-table='artifacts']\"); f.value = 'lstm onnx';"
                      "f.dispatchEvent(new Event('input'))")
        shown = page.evaluate("[...document.querySelectorAll('#artifacts tbody tr')].filter(r => !r.hidden)"
                              ".map(r => r.cells[1].textContent)")
        assert sorted(shown) == ["lstm_fp32.onnx", "lstm_int8.onnx"]
        # labels as drawn: no two boxes of one plot intersect
        boxes = page.evaluate("[...document.querySelectorAll('svg.plot')].map(s => [...s.querySelectorAll("
                              "'.plot-label')].map(g => {const r = g.getBoundingClientRect(); "
                              "return [r.x, r.y, r.width, r.height];}))")
        assert sum(len(b) for b in boxes) > 30
        for plot in boxes:
            assert not [(a, b) for a, b in itertools.combinations(plot, 2) if _overlap(a, b)]
        # the drift chart of a known artifact names the conv layer, with a hover title
        assert page.evaluate("[...document.querySelectorAll(\"figure.drift[data-artifact='cnn_int8.tflite'] "
                             ".plot-label text\")].some(t => t.textContent === 'conv')")
        page.evaluate("document.querySelector(\"input[data-table='artifacts']\").value = '';"
                      "document.querySelector(\"input[data-table='artifacts']\").dispatchEvent(new Event('input'))")
        assert page.screenshot(ARTEFACTS / "report.png").stat().st_size > 10_000
        pdf = page.call("Page.printToPDF", printBackground=True)["data"]
        (ARTEFACTS / "report.pdf").write_bytes(__import__("base64").b64decode(pdf))
        assert (ARTEFACTS / "report.pdf").read_bytes().startswith(b"%PDF")
        # printed on A4 (794 CSS px): no table runs off the page and the filter boxes are gone
        page.call("Emulation.setDeviceMetricsOverride", width=794, height=1123, deviceScaleFactor=1, mobile=False)
        page.call("Emulation.setEmulatedMedia", media="print")
        assert page.evaluate("[...document.querySelectorAll('table')].every(t => t.scrollWidth <= 794)")
        assert page.evaluate("[...document.querySelectorAll('input.filter')].every(i => i.offsetParent === null)")
        assert page.console_errors() == []


def test_rescue_and_microcontroller_sections_appear_with_data(summary):
    assert "Rescue ladder" not in to_html(summary, "") and "Microcontroller" not in to_html(summary, "")
    board = copy.deepcopy(summary)
    board["target"] = "nano33ble"
    cnn = next(r for r in board["recipes"] if r["name"] == "cnn")
    cnn["ship"] = "cnn_int8.tflite"
    # as `edgedl pipeline --target nano33ble` recorded them (2026-12-05)
    cnn["mcu"] = {"cnn_int8.tflite": {"passed": True, "why": None, "ram": 32688, "flash": 746012, "arena": 31904,
                                      "max_steps": 1, "seconds_per_inference": 0.0030324,
                                      "fit": {"board": "Arduino Nano 33 BLE Sense", "fits": True,
                                              "ram_headroom": 163920, "flash_headroom": 40420}}}
    cnn["rescue"] = {"cnn_int8.onnx": {"format": "onnx", "ptq": {"agreement": 0.97, "candidate_accuracy": 0.85},
                                       "rungs": [{"rung": "calibration", "passed": False, "artifact": None,
                                                  "note": "activation ranges: entropy"},
                                                 {"rung": "keep_float", "passed": True, "artifact": "cnn_int8_mixed.onnx",
                                                  "agreement": 0.995, "layers": ["probs"]}]}}
    page = to_html(board, "")
    assert "Rescue ladder" in page and "cnn_int8_mixed.onnx" in page and "float: probs" in page
    mcu = re.search(r"<table id='mcu-cnn'.*?</table>", page).group(0)
    assert "3,032" in mcu and "31.9" in mcu and "+160.1" in mcu  # µs per inference, RAM KB, RAM headroom KB
    assert "under TFLite Micro (3,032 µs per inference)" in page and "fits nano33ble" in page
