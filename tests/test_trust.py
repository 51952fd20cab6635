"""Trust, round two (issue 23): outputs never hit inputs or foreign files, gates are gates, bundles survive kills."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from edgedl.core.errors import EdgedlError
from edgedl.core.files import STAGING_SUFFIX, replace_dir, sweep_leftovers, temp_dir


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_validate_report_never_replaces_the_model_it_reads(tiny_runs, tiny_exports, capsys):
    model = tiny_runs["mlp"] / "model.keras"
    before = model.read_bytes()
    code, _, err = run_cli(["validate", tiny_runs["mlp"], tiny_exports["mlp"] / "mlp_fp32.tflite",
                            "--report", model], capsys)
    assert code == 2 and "is an input of this command" in err
    assert model.read_bytes() == before


def test_bench_outputs_refuse_a_users_file_unless_forced(tiny_exports, tmp_path, capsys):
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    code, _, err = run_cli(["bench", tiny_exports["mlp"] / "mlp_fp32.tflite", "--csv", notes, "--min-time", "0.05"],
                           capsys)
    assert code == 2 and "edgedl did not write it" in err and notes.read_text() == "my notes\n"
    code, _, err = run_cli(["bench", tiny_exports["mlp"] / "mlp_fp32.tflite", "--json",
                            tiny_exports["mlp"] / "mlp_fp32.tflite", "--min-time", "0.05"], capsys)
    assert code == 2 and "is an input of this command" in err
    code, _, _ = run_cli(["bench", tiny_exports["mlp"] / "mlp_fp32.tflite", "--csv", notes, "--force",
                          "--plot", tmp_path / "p", "--min-time", "0.05"], capsys)
    assert code == 0 and notes.read_text().startswith("artifact,backend,precision")
    # what edgedl wrote, it may write again without --force
    code, _, _ = run_cli(["bench", tiny_exports["mlp"] / "mlp_fp32.tflite", "--csv", notes,
                          "--plot", tmp_path / "p", "--min-time", "0.05"], capsys)
    assert code == 0


@pytest.mark.parametrize("args, words", [
    (["--tolerance", "min_agreement=-3"], "min_agreement must be in [0, 1]"),
    (["--tolerance", "atol=1e308"], "atol must be"),
    (["--tolerance", "min_agreemnt=0.9"], "did you mean 'min_agreement'"),
    (["--min-agreement", "-3"], "min_agreement must be in [0, 1]"),
])
def test_a_nonsense_gate_is_a_usage_error(args, words, capsys, tmp_path):
    code, out, err = run_cli(["bundle", tmp_path / "m.tflite", "--out", tmp_path / "b", *args], capsys)
    assert code == 2 and words in out + err


@pytest.mark.parametrize("text, words", [
    ('[model]\narchitecture = "mlp"\n[trian]\nepochs = 1\n', "did you mean 'train'"),
    ('[model]\narchitecture = "mlp"\n[export]\ncalibraton_samples = 3\n', "did you mean 'calibration_samples'"),
    ('[model]\narchitecture = "mlp"\n[gatess]\nmin_agreement = 0.9\n', "did you mean 'gates'"),
    ('[model]\narchitecture = "mlp"\n[tolerances]\nmin_cosine = 2\n', "min_cosine must be in [0, 1]"),
])
def test_recipe_typos_stop_before_any_training(text, words, tmp_path, capsys):
    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    code, _, err = run_cli(["pipeline", recipe, "--out", tmp_path / "out"], capsys)
    assert code == 2 and words in err and not (tmp_path / "out").exists()


def _bundle(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "model.tflite").write_text(text)
    return folder


def test_replacing_a_bundle_swaps_it_whole(tmp_path):
    out = _bundle(tmp_path / "bundle", "old")
    staging = _bundle(tmp_path / f".bundle.{os.getpid()}-x{STAGING_SUFFIX}", "new")
    replace_dir(staging, out)
    assert (out / "model.tflite").read_text() == "new"
    assert (staging / "model.tflite").read_text() == "old"  # the caller's staging folder now holds the old one


def test_a_bundle_moved_aside_by_a_killed_writer_comes_back(tmp_path):
    """A SIGKILL between "old aside" and "new in place" left no bundle at --out: the next run restores it."""
    pid = _dead_pid()
    aside = _bundle(tmp_path / f".bundle.{pid}-old{STAGING_SUFFIX}", "old")
    unfinished = _bundle(tmp_path / f".bundle.{pid}-abcd{STAGING_SUFFIX}", "half")
    sweep_leftovers(tmp_path)
    assert (tmp_path / "bundle" / "model.tflite").read_text() == "old"
    assert not aside.exists() and not unfinished.exists()


def test_two_bundles_into_one_folder_never_both_succeed(tmp_path):
    from edgedl.deploy.bundle import exclusive

    with exclusive(tmp_path / "bundle"):
        with pytest.raises(EdgedlError, match="another edgedl process is writing a bundle"):
            with exclusive(tmp_path / "bundle"):
                pass


def test_temporary_folders_of_killed_processes_are_swept():
    left = Path(tempfile.mkdtemp(prefix=f"edgedl-train-{_dead_pid()}-"))
    (left / "model.keras").write_text("x")
    mine = Path(tempfile.mkdtemp(prefix=f"edgedl-train-{os.getpid()}-"))
    try:
        with temp_dir("train") as folder:
            assert Path(folder).name.startswith(f"edgedl-train-{os.getpid()}-")
        assert not left.exists() and mine.exists()  # a live writer's folder stays
    finally:
        mine.rmdir()


def test_validate_a_keras_file_finds_the_exports_beside_it(tiny_runs, tmp_path, capsys):
    import shutil

    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copy(tiny_runs["mlp"] / "model.keras", folder / "m.keras")
    shutil.copytree(tiny_runs["mlp"] / "exports", folder / "exports")
    heldout = np.load(tiny_runs["mlp"] / "heldout.npz")
    np.savez(folder / "data.npz", x=heldout["x"][:50], y=heldout["y"][:50])
    code, out, err = run_cli(["validate", folder / "m.keras", "--data", folder / "data.npz", "--input-scale", "1"],
                             capsys)
    assert "mlp_fp32.tflite" in out and "mlp_int8.onnx" in out, out + err


def test_a_bare_pipeline_never_imports_code_from_a_foreign_models_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mlp.toml").write_text('[model]\narchitecture = "evil.py:build"\n')
    (tmp_path / "models" / "evil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w')\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(["pipeline", "--out", tmp_path / "out"], capsys)
    assert code == 2 and "--unsafe" in err and not (tmp_path / "ran").exists()
    from edgedl.train.architectures import registry

    with pytest.raises(EdgedlError):  # the file defines no build(); what matters is the line before it ran
        registry.get(f"{tmp_path / 'models' / 'evil.py'}:build")
    announced = capsys.readouterr().err
    assert f"importing architecture code from {tmp_path / 'models' / 'evil.py'}" in announced
    assert (tmp_path / "ran").exists()  # it did run, after the line said it would


@pytest.mark.parametrize("value", ["inf", "1e308", "0", "-5", "lots"])
def test_environment_limits_are_checked_once_with_one_line(value, monkeypatch, capsys):
    monkeypatch.setenv("EDGEDL_MEMORY_LIMIT_MB", value)
    code, _, err = run_cli(["inspect", "nothing.tflite"], capsys)
    assert code == 2 and f"EDGEDL_MEMORY_LIMIT_MB={value!r} is not a usable limit" in err


def test_hostile_files_get_one_line_not_a_traceback(tmp_path, capsys):
    import zipfile

    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    code, _, err = run_cli(["pipeline", deep, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "Traceback" not in err and deep.name in err
    fifo = tmp_path / "labels.txt"
    os.mkfifo(fifo)
    from edgedl.core.card import read_labels

    with pytest.raises(EdgedlError, match="not a regular file"):
        read_labels(fifo)  # would block forever on a read
    bad = tmp_path / "labels2.txt"
    bad.write_text("cat\ndog\x1b[2J\n")
    with pytest.raises(EdgedlError, match="control character"):
        read_labels(bad)
    from edgedl.data import read_named

    np.savez(tmp_path / "zero.npz", x=np.float32(3))
    with pytest.raises(EdgedlError, match="0-d"):
        read_named(tmp_path / "zero.npz", ["x"], [], None, "data")
    buffer = __import__("io").BytesIO()
    np.save(buffer, np.zeros((2, 4), np.float32))
    with zipfile.ZipFile(tmp_path / "neg.npz", "w") as archive:
        archive.writestr("x.npy", buffer.getvalue().replace(b"(2, 4)", b"(-2, 4)"))
    with pytest.raises(EdgedlError, match="impossible shape"):
        read_named(tmp_path / "neg.npz", ["x"], [], None, "data")


def test_a_recipe_with_a_bad_target_stops_before_training(tmp_path, capsys):
    recipe = tmp_path / "t.toml"
    recipe.write_text('[model]\narchitecture = "mlp"\n[export]\ntargets = ["tflite:int9"]\n')
    code, _, err = run_cli(["pipeline", recipe, "--out", tmp_path / "o"], capsys)
    assert code == 2 and "int9" in err and "did you mean 'int8'" in err and not (tmp_path / "o").exists()


def test_a_failed_export_of_an_unreadable_model_leaves_no_folder(tmp_path, capsys):
    model = tmp_path / "broken.keras"
    model.write_bytes(b"PK\x03\x04 not really a zip")
    code, _, err = run_cli(["export", model, "--format", "tflite", "--quantize", "none", "--out", tmp_path / "x"],
                           capsys)
    assert code != 0 and not (tmp_path / "x").exists()


def test_a_bundle_whose_manifest_was_edited_fails_its_self_test(tiny_exports, tmp_path):
    import json
    import shutil

    from edgedl.deploy.bundle import bundle

    out = tmp_path / "b"
    bundle(tiny_exports["mlp"] / "mlp_fp32.tflite", out, targets=["rpi"], say=lambda m: None)

    def self_test(edit) -> subprocess.CompletedProcess:
        copy = tmp_path / f"copy{len(list(tmp_path.iterdir()))}"
        shutil.copytree(out, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        edit(manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        return subprocess.run([sys.executable, str(copy / "run.py"), "--self-test"], capture_output=True, text=True)

    assert self_test(lambda m: None).returncode == 0
    changed = self_test(lambda m: m["preprocessing"].update(scale=1.0))
    assert changed.returncode == 1 and "contract sha256" in changed.stdout
    unsealed = self_test(lambda m: (m["preprocessing"].update(scale=1.0), m.pop("contract_sha256")))
    assert unsealed.returncode == 1 and "raw golden sample" in unsealed.stdout  # the raw-input path catches it
    typed = self_test(lambda m: m["preprocessing"].update(scale="big"))
    assert typed.returncode == 1 and "preprocessing.scale must be" in typed.stderr and "Traceback" not in typed.stderr


def test_exports_of_an_older_model_are_stale_not_unfaithful(tiny_runs, tmp_path):
    import json
    import shutil

    from edgedl.validate.run import ValidateOptions, validate

    run = Path(shutil.copytree(tiny_runs["mlp"], tmp_path / "run"))
    sidecar = run / "exports" / "mlp_fp32.tflite.json"
    facts = json.loads(sidecar.read_text())
    facts["source_model"]["sha256"] = "0" * 64  # as if exported before the model was retrained
    sidecar.write_text(json.dumps(facts))
    lines = []
    summary = validate(run, [run / "exports" / "mlp_fp32.tflite"], ValidateOptions(samples=20), say=lines.append)
    row = summary["artifacts"][0]
    assert not summary["passed"] and row["stale"] and "export it again" in row["error"]
    assert any("stale: exported from an older version" in line for line in lines)


def test_a_small_keras_file_declaring_a_huge_layer_is_refused_in_a_bounded_child(tmp_path, monkeypatch):
    """78 KB that declares a 64 GB Dense layer: the bounded child runs out, this process lives and says why.
    The probing worker stays warm between good files, and one that died is replaced for the next."""
    import json
    import shutil
    import zipfile

    import keras

    from edgedl.core.errors import ModelError
    from edgedl.runners import modelio
    from edgedl.runners.modelio import load_keras_model

    model = keras.Sequential([keras.Input((64,), name="x"), keras.layers.Dense(10, name="probs")])
    model.save(tmp_path / "small.keras")
    with zipfile.ZipFile(tmp_path / "small.keras") as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")["config"]["units"] = 250_000_000
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(tmp_path / "huge.keras", "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    monkeypatch.setenv("EDGEDL_MEMORY_LIMIT_MB", "2048")
    for name in ("a", "b"):
        shutil.copy(tmp_path / "small.keras", tmp_path / f"{name}.keras")  # not loaded yet: each is probed
    load_keras_model(tmp_path / "a.keras")
    warm = modelio._PROBER.pool
    load_keras_model(tmp_path / "b.keras")
    assert modelio._PROBER.pool is warm and modelio._PROBER.tasks == 2, "good files share a warm worker"
    with pytest.raises(ModelError, match="huge.keras.*memory limit"):
        load_keras_model(tmp_path / "huge.keras")
    assert modelio._PROBER.pool is None, "the worker it ended is not kept"


def test_a_regression_card_on_a_classifier_is_one_line(tiny_runs, tiny_exports, capsys):
    code, _, err = run_cli(["validate", tiny_runs["mlp"], tiny_exports["mlp"] / "mlp_fp32.tflite", "--task",
                            "regression", "--samples", "20"], capsys)
    assert code == 1 and "regression targets hold 1" in err and "internal error" not in err


def test_validate_report_refuses_a_users_file_and_its_md_unless_forced(tiny_runs, tiny_exports, tmp_path, capsys):
    artifact = tiny_exports["mlp"] / "mlp_fp32.tflite"
    notes = tmp_path / "notes.json"
    notes.write_text("my notes\n")
    code, _, err = run_cli(["validate", tiny_runs["mlp"], artifact, "--report", notes], capsys)
    assert code == 2 and "edgedl did not write it" in err and notes.read_text() == "my notes\n"
    beside = tmp_path / "mine.md"  # the .md written beside a report is a user's file too
    beside.write_text("# mine\n")
    code, _, err = run_cli(["validate", tiny_runs["mlp"], artifact, "--report", tmp_path / "mine.json"], capsys)
    assert code == 2 and "its .md" in err and beside.read_text() == "# mine\n"
    code, _, err = run_cli(["validate", tiny_runs["mlp"], artifact, "--report", notes, "--force"], capsys)
    assert code == 0 and json.loads(notes.read_text())["artifacts"][0]["passed"], err


def test_labels_that_do_not_match_the_outputs_are_refused_in_validate(tiny_runs, tiny_exports, tmp_path, capsys):
    artifact = tiny_exports["mlp"] / "mlp_fp32.tflite"
    three = tmp_path / "labels.txt"
    three.write_text("a\nb\nc\n")
    code, _, err = run_cli(["validate", tiny_runs["mlp"], artifact, "--labels", three,
                            "--report", tmp_path / "r.json"], capsys)
    assert code == 2 and "3 labels were given but output 'probs' has 10 classes" in err
    card = tmp_path / "m.card.toml"
    card.write_text('[outputs.nope]\ntask = "classification"\n')
    code, _, err = run_cli(["validate", tiny_runs["mlp"], artifact, "--card", card, "--report", tmp_path / "r.json"],
                           capsys)
    assert code == 2 and "[outputs.nope] is not an output of this model" in err
    assert not (tmp_path / "r.json").exists()


def test_finetune_on_a_bare_keras_file_says_how_to_make_a_run(tiny_runs, tmp_path, capsys):
    bare = tmp_path / "mine.keras"
    bare.write_bytes((tiny_runs["mlp"] / "model.keras").read_bytes())  # away from its run folder
    code, _, err = run_cli(["finetune", bare, "--out", tmp_path / "ft"], capsys)
    assert code == 2 and f"edgedl train --model {bare}" in err and "Usage:" not in err
    assert not (tmp_path / "ft").exists()
