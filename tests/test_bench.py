"""Benchmarks measure the real runtimes, in child processes without TensorFlow."""

from __future__ import annotations

import csv
import io
import json

from conftest import run_cli


def test_bench_isolated_children(tiny_exports, tmp_path, capsys):
    files = [tiny_exports["mlp"] / "mlp_fp32.tflite", tiny_exports["mlp"] / "mlp_int8.tflite",
             tiny_exports["mlp"] / "mlp_int8.onnx"]
    code, out, err = run_cli(["bench", *files, "--runs", "40", "--warmup", "5", "--threads", "1,2",
                              "--json", tmp_path / "b.json", "--csv", tmp_path / "b.csv",
                              "--plot", tmp_path / "b.png"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "b.json").read_text())
    assert result["edgedl"] == "bench/1" and result["machine"]["cpu"]
    assert len(result["results"]) == 6
    for row in result["results"]:
        assert row["runs"] == 40 and len(row["latencies_us"]) == 40
        assert 0 < row["min_us"] <= row["p50_us"] <= row["p99_us"]
        assert row["tensorflow_loaded"] is False, "a device-like measurement must not import TensorFlow"
        assert row["init_ms"] > 0 and row["peak_rss_mb"] > row["rss_delta_mb"] > 0
    assert any(c["precision"] == "int8" for c in result["comparisons"])
    rows = list(csv.DictReader(io.StringIO((tmp_path / "b.csv").read_text())))
    assert len(rows) == 6 and rows[0]["p50_us"]
    assert (tmp_path / "b_latency.png").stat().st_size > 1000
    assert "p50" in out


def test_keras_baseline_and_xnnpack_switch(tiny_runs, tiny_exports):
    from edgedl.api import bench

    result = bench(tiny_runs["mlp"] / "model.keras", tiny_exports["mlp"] / "mlp_int8.tflite", runs=20, warmup=2,
                   xnnpack=False)
    keras_row, tflite_row = result["results"]
    assert keras_row["backend"] == "keras" and keras_row["tensorflow_loaded"] is True
    assert tflite_row["xnnpack"] is False and "p50_us" in tflite_row


def test_crashing_or_bad_artifact_is_reported(tmp_path):
    from edgedl.api import bench

    (tmp_path / "junk.tflite").write_bytes(b"\x00" * 64)
    result = bench(tmp_path / "junk.tflite", runs=5)
    assert "error" in result["results"][0]
