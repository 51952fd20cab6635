"""Bundles: contents, C array round trip, and a self-test in a venv without TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgedl.deploy.mcu_project import c_array, parse_c_array


@pytest.fixture(scope="module")
def cnn_bundle(tiny_runs, tiny_exports, tmp_path_factory):
    from edgedl.api import bundle

    out = tmp_path_factory.mktemp("bundle") / "cnn_int8"
    # the 12-epoch test model is less confident than a trained one: loosen the shipped 99 % int8 bar
    bundle(tiny_exports["cnn"] / "cnn_int8.tflite", out, min_agreement=0.95, max_accuracy_drop=0.03)
    return out


def test_bundle_contents(cnn_bundle):
    manifest = json.loads((cnn_bundle / "manifest.json").read_text())
    assert manifest["model"]["file"] == "cnn_int8.tflite" and manifest["model"]["precision"] == "int8"
    assert manifest["inputs"][0]["quantization"]["scale"] > 0
    assert manifest["preprocessing"]["scale"] == pytest.approx(1 / 16)
    assert manifest["labels"] == [str(i) for i in range(10)]
    assert manifest["parity"]["passed"] and manifest["validated_with"]["ai-edge-litert"]
    for name in ("run.py", "requirements.txt", "labels.txt", "golden.npz", "parity.json", "README.md",
                 "android/app/src/main/assets/cnn_int8.tflite", "mcu/model_data.cc", "mcu/model_data.h"):
        assert (cnn_bundle / name).exists(), name
    assert "resetVariableTensors" not in (cnn_bundle / "README.md").read_text()  # the CNN is stateless


def test_c_array_round_trips(cnn_bundle):
    source = (cnn_bundle / "mcu" / "model_data.cc").read_text()
    assert "alignas(16)" in source and "g_model_data_len" in source
    assert parse_c_array(source) == (cnn_bundle / "cnn_int8.tflite").read_bytes()
    assert parse_c_array(c_array(bytes(range(7)))[0]) == bytes(range(7))


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory):
    """A virtual environment holding only numpy and ai-edge-litert, as on a device."""
    venv = tmp_path_factory.mktemp("device") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "numpy==2.4.6", "ai-edge-litert==2.3.0"],
                   check=True, timeout=600)
    return python


@pytest.mark.slow
def test_self_test_without_tensorflow(cnn_bundle, runtime_venv, tiny_runs):
    check = subprocess.run([str(runtime_venv), "-c", "import tensorflow"], capture_output=True)
    assert check.returncode != 0, "the device venv must not have TensorFlow"
    done = subprocess.run([str(runtime_venv), str(cnn_bundle / "run.py"), "--self-test"], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "✓ sha256" in done.stdout and "golden vectors" in done.stdout and "ai-edge-litert" in done.stdout
    # its predictions on held-out data equal the ones validate judged
    heldout = np.load(tiny_runs["cnn"] / "heldout.npz")
    raw = heldout["x"][:40] * 16  # the bundle takes raw 0..16 pixel values and scales them itself
    np.save(cnn_bundle / "x.npy", raw)
    done = subprocess.run([str(runtime_venv), str(cnn_bundle / "run.py"), str(cnn_bundle / "x.npy"), "--json",
                           "--top-k", "1"], capture_output=True, text=True, check=True)
    device_top1 = [int(r["probs"][0]["label"]) for r in json.loads(done.stdout)]  # outputs by Keras name
    from edgedl.runners.litert import LiteRTRunner

    ours = LiteRTRunner(cnn_bundle / "cnn_int8.tflite").infer([heldout["x"][:40]])[0]
    assert device_top1 == np.argmax(ours, -1).tolist()


def test_tampered_model_fails_self_test(cnn_bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(cnn_bundle, copy)
    model = copy / "cnn_int8.tflite"
    data = bytearray(model.read_bytes())
    data[-10] ^= 0xFF
    model.write_bytes(bytes(data))
    done = subprocess.run([sys.executable, str(copy / "run.py"), "--self-test"], capture_output=True, text=True)
    assert done.returncode == 1 and "changed or replaced after it was validated" in done.stderr
    assert "golden vectors" not in done.stdout  # a tampered model is never loaded
