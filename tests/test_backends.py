"""Training on another Keras backend (JAX; PyTorch where installed), exporting with TensorFlow.

CI installs the [jax] extra, so the JAX tests run there; PyTorch is optional (its tests skip when it is
not installed, and say so).
"""

from __future__ import annotations

import importlib.util
import json
import os
import zipfile

import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow


def _require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        if os.environ.get("CI") and module == "jax":
            pytest.fail("CI installs the [jax] extra: jax must be importable here")
        pytest.skip(f"{module} is not installed (pip install -e '.[{module}]')")


def _train(tmp_path, name, backend, model="cnn", epochs=6):
    from edgedl.api import train

    return train(model=model, data="digits8x8", epochs=epochs, out=tmp_path / name, backend=backend, verbose=0)


def test_jax_trains_the_seed_cnn_as_well_as_tensorflow_and_repeats_itself(tmp_path):
    _require("jax")
    first, again = _train(tmp_path, "jax", "jax"), _train(tmp_path, "jax-again", "jax")
    reference = _train(tmp_path, "tf", "tensorflow")
    assert first["training"]["backend"]["name"] == "jax" and first["training"]["backend"]["version"]
    assert reference["training"]["backend"]["name"] == "tensorflow"
    assert first["versions"].get("jax") and first["training"]["devices"]
    # same seed, same backend, same machine: the same weights
    assert first["model"]["weights_sha256"] == again["model"]["weights_sha256"]
    # within seed noise of TensorFlow's accuracy (359 held-out digits: one is 0.28 pp)
    assert abs(first["metrics"]["test_accuracy"] - reference["metrics"]["test_accuracy"]) <= 0.04, \
        (first["metrics"], reference["metrics"])
    with zipfile.ZipFile(tmp_path / "jax" / "model.keras") as archive:
        config = archive.read("config.json").decode()
    assert "jax" not in config.lower() and "torch" not in config.lower(), "nothing backend-specific in .keras"


def test_a_jax_run_goes_through_the_whole_pipeline(tmp_path, capsys):
    _require("jax")
    recipe = tmp_path / "mlp_jax.toml"
    recipe.write_text('[model]\nname = "mlpjax"\narchitecture = "mlp"\n[data]\nsource = "digits8x8"\n'
                      '[train]\nepochs = 12\nbackend = "jax"\n[export]\n'
                      'targets = ["tflite:fp32", "tflite:int8", "onnx:fp32", "onnx:int8"]\n'
                      '[gates]\nmax_accuracy_drop = 0.03\nmin_agreement = 0.95\n')
    code, out, err = run_cli(["pipeline", recipe, "--out", tmp_path / "p", "--bench-time", "0.1", "--no-layers"],
                             capsys)
    assert code == 0, out[-3000:] + err
    summary = json.loads((tmp_path / "p" / "pipeline.json").read_text())
    recipe_summary = summary["recipes"][0]
    assert recipe_summary["training"]["backend"]["name"] == "jax"
    assert all(row["verdict"] == "pass" for row in recipe_summary["validation"]["matrix"])
    assert (tmp_path / "p" / "mlpjax" / "bundle" / "run.py").exists()


def test_what_only_tensorflow_does_is_refused_on_other_backends(tmp_path, capsys):
    _require("jax")
    code, _, err = run_cli(["train", "--model", "mlp", "--backend", "jax", "--strategy", "multiworker", "--out",
                            tmp_path / "a"], capsys)
    assert code == 2 and "stay on TensorFlow" in err and "Traceback" not in err
    code, _, err = run_cli(["train", "--model", "mlp", "--backend", "jax", "--qat", "--out", tmp_path / "b"], capsys)
    assert code == 2 and "quantization-aware training runs on TensorFlow" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_auto_says_which_backend_and_why(tmp_path, capsys):
    from edgedl.train.backends import choose

    said = []
    chosen = choose("auto", said.append)
    assert chosen in ("tensorflow", "jax", "torch") and said and said[0].startswith(f"backend: {chosen} (auto:")
    if not os.path.exists("/dev/nvidiactl"):
        assert chosen == "tensorflow" and "no NVIDIA GPU" in said[0]


def test_torch_trains_and_exports_where_installed(tmp_path, capsys):
    _require("torch")
    manifest = _train(tmp_path, "torch", "torch", model="mlp", epochs=8)
    assert manifest["training"]["backend"]["name"] == "torch"
    code, _, err = run_cli(["export", tmp_path / "torch", "--format", "tflite,onnx"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["validate", tmp_path / "torch"], capsys)
    assert code == 0, err


def test_a_mixed_precision_model_is_saved_float32_and_converts(tmp_path):
    import keras
    import numpy as np

    from edgedl.train.fit import portable

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                                  keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax", dtype="float32")])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    saved = portable(model, mixed_precision=True)
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(saved.predict(x, verbose=0), model.predict(x, verbose=0), atol=2e-3)
    saved.save(tmp_path / "m.keras")
    from edgedl.api import export

    records = export(tmp_path / "m.keras", ("tflite",), ("none",))
    assert records[0]["precision"] == "fp32"
