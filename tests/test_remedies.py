"""int8 remedies that never lie (issue 24): the cases that failed for a new user, each on a small model."""

from __future__ import annotations

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
    code, out, err = run_cli(["export", model, "--format", "tflite", "--quantize", "int8", "--calibration",
                              tmp_path / "calib.npz", "--calibration-method", "auto", "--input-scale", "1",
                              "--out", tmp_path / "exports"], capsys)
    assert code == 0, out + err
    with open_runner(tmp_path / "exports" / "two_int8.tflite") as runner:
        order = [t.name for t in runner.inputs]
    assert order == ["features", "image"]  # the case: TFLite's order is not Keras' order
    assert "ranges:" in out + err  # auto measured the candidates on the right inputs
