"""Training: run folder contents, manifest, determinism, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

pytestmark = pytest.mark.slow  # every test here trains


def test_run_folder_and_manifest(tiny_runs):
    run = tiny_runs["cnn"]
    manifest = json.loads((run / "manifest.json").read_text())
    for name in ("model.keras", "calibration.npz", "heldout.npz", "history.json"):
        assert (run / name).exists()
    assert manifest["architecture"] == "cnn"
    assert manifest["dataset"]["name"] == "digits8x8" and manifest["dataset"]["sha256"]
    assert manifest["inputs"][0]["shape"] == [None, 8, 8, 1]
    assert manifest["calibration"]["count"] == 64 and manifest["calibration"]["sha256"]
    assert manifest["training"]["devices"] and manifest["training"]["time_s"] > 0
    assert 0.5 < manifest["metrics"]["test_accuracy"] <= 1.0  # 3 epochs on 8×8 digits learns something
    assert manifest["versions"]["keras"].startswith("3.")
    assert not list(run.glob(".staging-*"))
    import keras

    # plain Keras loads it as saved, with nothing of edgedl's (its label-smoothed loss) needed: saved uncompiled
    assert not keras.saving.load_model(run / "model.keras").compiled


def test_same_seed_gives_identical_weights(tmp_path):
    from edgedl.api import train
    from edgedl.runners.modelio import load_keras_model

    weights = []
    for name in ("a", "b"):
        train(model="mlp", data="digits8x8", epochs=2, out=tmp_path / name, seed=7, verbose=0)
        weights.append(load_keras_model(tmp_path / name / "model.keras").get_weights())
    assert all(np.array_equal(a, b) for a, b in zip(*weights, strict=True))


def test_recipe_trains(tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\narchitecture = "mlp"\n[data]\nsource = "digits8x8"\n[train]\nepochs = 1\n')
    code, out, err = run_cli(["train", recipe, "--out", tmp_path / "run"], capsys)
    assert code == 0, err
    assert "test accuracy" in out
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["training"]["epochs"] == 1


def test_user_architecture_by_reference(tmp_path):
    from edgedl.api import train

    (tmp_path / "mine.py").write_text(
        "import keras\n"
        "def build(input_shape, num_classes):\n"
        "    return keras.Sequential([keras.Input(input_shape), keras.layers.Flatten(),"
        " keras.layers.Dense(num_classes, activation='softmax')])\n")
    manifest = train(model=f"{tmp_path / 'mine.py'}:build", data="digits8x8", epochs=6, out=tmp_path / "run",
                     verbose=0, learning_rate=0.01)
    assert manifest["metrics"]["test_accuracy"] > 0.3


def test_unwritable_out_leaves_nothing(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(["train", "--model", "mlp", "--data", "digits8x8", "--out", blocker / "sub"], capsys)
    assert code == 1 and "cannot write to output directory" in err


def test_labels_beyond_model_outputs(tmp_path, tiny_runs, capsys):
    x = np.random.default_rng(0).random((40, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x_train=x, y_train=np.arange(40) % 12)
    code, _, err = run_cli(["train", "--model", tiny_runs["mlp"] / "model.keras", "--data", tmp_path / "d.npz",
                            "--epochs", "1", "--out", tmp_path / "o"], capsys)
    assert code == 1 and "labels out of range" in err


def test_label_smoothing_is_crossentropy_against_the_smoothed_one_hot_target():
    import keras

    from edgedl.train.losses import classification_loss

    rng = np.random.default_rng(0)
    probs = keras.ops.softmax(rng.normal(size=(6, 10)).astype("float32"))
    labels = rng.integers(0, 10, 6)
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(10)[labels], probs)
    assert np.isclose(float(keras.ops.mean(classification_loss(0.1)(labels, probs))), float(expected), rtol=1e-5)
    plain = keras.losses.SparseCategoricalCrossentropy()(labels, probs)
    assert np.isclose(float(keras.ops.mean(classification_loss(0.0)(labels, probs))), float(plain), rtol=1e-6)


@pytest.mark.parametrize("value", ["0.7", "-0.1"])
def test_label_smoothing_out_of_range_is_a_usage_error(value, capsys, tmp_path):
    code, _, err = run_cli(["train", "--model", "mlp", "--label-smoothing", value, "--out", tmp_path / "r"], capsys)
    assert code == 2 and "label-smoothing" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()
