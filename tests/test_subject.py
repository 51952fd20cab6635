"""One Subject per model: the label normaliser, the settings table and the import allow-list (no TensorFlow)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgedl.core.errors import DataError, UsageError
from edgedl.core.metrics import accuracy, task_metrics
from edgedl.core.settings import GATES, TOLERANCES, TRAIN, check_table
from edgedl.data import normalise_labels
from edgedl.runners.base import TensorInfo
from edgedl.subject import Declared, Subject


@pytest.mark.parametrize("labels, message", [
    (np.array([0.0, 1.5, 2.0]), "whole numbers"),
    (np.array([0, -1, 2]), "must be >= 0"),
    (np.array([0, 3, 12]), "scores 10 classes"),
    (np.array([0.0, np.nan, 1.0]), "whole numbers"),
])
def test_the_one_label_normaliser_refuses_what_training_refuses(labels, message):
    with pytest.raises(DataError, match=message):
        normalise_labels(labels, "y", "classification", classes=10)


def test_labels_are_normalised_the_same_for_every_caller():
    one_hot = np.eye(3)[[2, 0, 1]]
    assert normalise_labels(one_hot, "y", None).tolist() == [2, 0, 1]
    assert normalise_labels(np.array([[1], [2]]), "y", None).tolist() == [1, 2]
    assert normalise_labels(np.array([0.5, 1.5]), "y", "regression").shape == (2, 1)


def test_validation_data_with_fractional_labels_for_a_classifier_is_refused(tmp_path):
    """A softmax output's labels are classes: 1.5 is an error, not a regression target scored 0 %."""
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((4, 3), np.float32), y=np.array([0.0, 1.5, 2.0, 1.0]))
    subject = Subject.bare()
    specs = [TensorInfo("x", (None, 3), "float32")]
    with pytest.raises(DataError, match="whole numbers"):
        subject.read(path, specs, ["probs"], None, "validation data", {"output_activations": ["softmax"]})
    raw, labels = Subject.bare(Declared(task="regression")).read(path, specs, ["probs"], None, "data")
    assert labels["probs"].shape == (4, 1)


def test_preprocessing_is_decided_once_with_its_reason():
    subject = Subject.bare(Declared(input_scale=0.5, input_offset=-1.0))
    specs = [TensorInfo("x", (None, 2), "float32")]
    arrays, decision = subject.to_model({"x": np.array([[0, 4]], np.uint8)}, specs, {}, "data", say=lambda m: None)
    assert decision["reason"].startswith("declared") and arrays["x"].tolist() == [[-1.0, 1.0]]
    token = [TensorInfo("ids", (None, 2), "int32")]
    arrays, decision = subject.to_model({"ids": np.array([[3, 4]])}, token, {}, "data", say=lambda m: None)
    assert decision is None and arrays["ids"].dtype == np.int32 and arrays["ids"].tolist() == [[3, 4]]


def test_metrics_judge_a_sequence_output_on_its_last_step():
    probs = np.zeros((2, 3, 4))
    probs[0, :, 1] = 1  # says 1 at every step
    probs[1, :-1, 0], probs[1, -1, 3] = 1, 1  # changes its mind at the last step
    assert accuracy(probs, np.array([1, 3])) == 1.0
    assert accuracy(probs, np.array([[1, 1, 1], [3, 3, 3]])) == 1.0  # per-step labels, as training feeds them
    assert task_metrics("regression", np.array([[1.0], [3.0]]), np.array([2.0, 2.0])) == {"test_mae": 1.0,
                                                                                          "test_rmse": 1.0}


@pytest.mark.parametrize("table, values, message", [
    (TOLERANCES, {"min_agreement": -3}, r"in \[0, 1\]"),
    (TOLERANCES, {"min_cosine": 1.5}, r"in \[0, 1\]"),
    (TOLERANCES, {"atol": 1e308}, "1e"),
    (TOLERANCES, {"max_mean_error_steps": -1}, "got -1"),
    (TOLERANCES, {"min_agreemnt": 0.9}, "did you mean 'min_agreement'"),
    (GATES, {"max_size_kb": float("inf")}, "finite"),
    (TRAIN, {"epochs": 1.5}, "whole number"),
    (TRAIN, {"learning_rate": 0}, "> 0"),
])
def test_every_setting_is_checked_by_its_meaning(table, values, message):
    with pytest.raises(UsageError, match=message):
        check_table(values, table, "test")


def test_recipe_and_cli_read_the_same_ranges(tmp_path):
    from click.testing import CliRunner

    from edgedl.cli import cli
    from edgedl.recipe import load_recipe

    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\narchitecture = "mlp"\n[train]\nepochs = 0\n')
    with pytest.raises(UsageError, match=r"epochs must be in \[1, 100,000\]"):
        load_recipe(recipe)
    result = CliRunner().invoke(cli, ["train", "--epochs", "0"])
    assert result.exit_code == 2 and "epochs must be in [1, 100,000]" in result.output
    recipe.write_text('[model]\narchitecture = "mlp"\n[gatess]\nmin_agreement = 0.9\n')
    with pytest.raises(UsageError, match="did you mean 'gates'"):
        load_recipe(recipe)


# What `edgedl --help` may import: the CLI, the lowest layers and the option tables; no stage that
# loads a runtime (click's own test_imports.py idea). A new module here is a deliberate decision.
HELP_ALLOWED = {
    "edgedl", "edgedl.cli", "edgedl.cli.commands", "edgedl.cli.explore", "edgedl.cli.group", "edgedl.cli.main",
    "edgedl.core", "edgedl.core.card", "edgedl.core.env", "edgedl.core.errors", "edgedl.core.files",
    "edgedl.core.layout", "edgedl.core.metrics", "edgedl.core.outputs", "edgedl.core.settings", "edgedl.core.warm",
    "edgedl.data", "edgedl.recipe", "edgedl.export", "edgedl.export.plan", "edgedl.export.ranges",
    "edgedl.export.run", "edgedl.train", "edgedl.train.backends",
}


def test_help_imports_only_the_allowed_modules():
    probe = ("import sys\nfrom edgedl.cli import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "print('MODULES', ' '.join(sorted(m for m in sys.modules if m.split('.')[0] in ('edgedl', 'tensorflow', 'keras', "
             "'onnxruntime', 'ai_edge_litert', 'tf2onnx', 'onnx'))))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded = out.splitlines()[-1].split()[1:]
    assert "edgedl.cli.commands" in loaded  # the probe saw the CLI load
    assert set(loaded) <= HELP_ALLOWED, sorted(set(loaded) - HELP_ALLOWED)


def test_the_prebuilt_tiny_models_are_up_to_date():
    """tests/models/tiny and tests/models/zoo are rebuilt by tools/make_test_models.py whenever the code that
    makes them (training, export, tools/zoo.py) or a pinned dependency changes."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    import make_test_models

    assert make_test_models.is_fresh(), "tests/models/tiny is stale: run python tools/make_test_models.py"
    assert make_test_models.zoo_is_fresh(), "tests/models/zoo is stale: run python tools/make_test_models.py"


def test_inputs_are_described_by_their_shape_unless_they_came_as_pixels():
    from edgedl.deploy.bundle import describe_input

    mfcc = {"shape": [None, 49, 10, 1], "dtype": "float32"}
    assert "49×10×1 features" in describe_input(mfcc, None)["description"]
    assert "image" not in describe_input(mfcc, None)["description"]
    pixels = describe_input({"shape": [None, 28, 28, 1], "dtype": "float32"}, "image", pixels=True)
    assert "a 28×28 image with 1 channel(s)" in pixels["description"]


def test_a_recipes_data_source_is_found_beside_the_recipe(tmp_path, monkeypatch):
    from edgedl.recipe import load_recipe

    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "mine.npz", x_train=np.zeros((4, 2)), y_train=np.arange(4))
    (tmp_path / "sub" / "r.toml").write_text('[model]\narchitecture = "mlp"\n[data]\nsource = "mine.npz"\n')
    monkeypatch.chdir(tmp_path)
    assert load_recipe(tmp_path / "sub" / "r.toml").data == str(tmp_path / "sub" / "mine.npz")
    (tmp_path / "sub" / "b.toml").write_text('[model]\narchitecture = "mlp"\n[data]\nsource = "digits"\n')
    assert load_recipe(tmp_path / "sub" / "b.toml").data == "digits"
