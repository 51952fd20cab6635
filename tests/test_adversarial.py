"""The adversarial suite: real hostile files, kills, odd paths and races against every command.

Each case states what a hostile or careless user does and what edgedl must do: refuse with one line
and a non-zero exit, keep the user's files byte for byte, never certify garbage, never trust a
leftover, never hang. docs/RELIABILITY.md counts the cases per class.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
pytestmark = pytest.mark.slow


def tree(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` with its sha256 (links by their target text): what must not change."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            found[str(path.relative_to(folder))] = "link:" + os.readlink(path)
        elif path.is_file():
            found[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def one_line_error(code: int, err: str, expected_code: int, words: str) -> None:
    assert code == expected_code, err
    lines = [line for line in err.strip().splitlines() if line.startswith("edgedl: error")]
    assert len(lines) == 1 and words in lines[0], err
    assert "Traceback" not in err


@pytest.fixture
def run(tiny_runs, tiny_exports, tmp_path) -> Path:
    """A private copy of the tiny MLP run with its exports (tests may damage it)."""
    copy = tmp_path / "r"
    shutil.copytree(tiny_runs["mlp"], copy)
    return copy


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "thesis.txt").write_text("four years of work")
    (path / "data").mkdir(exist_ok=True)
    (path / "data" / "x.csv").write_text("1,2,3")
    return path


# ---------------------------------------------------------------- data loss

DATA_LOSS = [(c, w) for c in ("bundle", "export", "train", "pipeline", "validate")
             for w in ("cwd", "user folder", "symlink to user folder", "source run")
             if (c, w) != ("train", "source run")]  # retraining a run into its own folder replaces it: intended


@pytest.mark.parametrize("command, where", DATA_LOSS)
def test_never_overwrites_what_edgedl_did_not_make(command, where, run, tmp_path, capsys, monkeypatch):
    project = user_folder(tmp_path / "project")
    monkeypatch.chdir(project)
    out = {"cwd": ".", "user folder": str(project / "data"), "source run": str(run)}.get(where)
    if where == "symlink to user folder":
        (tmp_path / "link").symlink_to(project / "data")
        out = str(tmp_path / "link")
    protected = {"user": tree(project), "run": tree(run)}
    recipe = tmp_path / "r.toml"
    recipe.write_text('[model]\narchitecture = "mlp"\n[data]\nsource = "digits8x8"\n[train]\nepochs = 1\n')
    args = {"bundle": ["bundle", run / "exports" / "mlp_fp32.tflite", "--out", out],
            "export": ["export", run, "--out", out],
            "train": ["train", "--model", "mlp", "--data", "digits8x8", "--epochs", "1", "--out", out],
            "pipeline": ["pipeline", recipe, "--epochs", "1", "--out", out],
            "validate": ["validate", run, "--save-results", out]}[command]
    code, _, err = run_cli(args, capsys)
    one_line_error(code, err, 2, "--out" if command != "validate" else "--save-results")
    assert tree(project) == protected["user"] and tree(run) == protected["run"]


def test_export_into_the_run_folder_itself_is_refused(run, capsys):
    before = tree(run)
    code, _, err = run_cli(["export", run, "--out", run], capsys)
    one_line_error(code, err, 2, "must not overwrite")
    assert tree(run) == before


def test_a_bundle_replaces_an_earlier_bundle_but_not_files_put_into_it(run, tmp_path, capsys):
    artifact = run / "exports" / "mlp_fp32.tflite"
    out = tmp_path / "b"
    assert run_cli(["bundle", artifact, "--out", out], capsys)[0] == 0
    assert run_cli(["bundle", artifact, "--out", out], capsys)[0] == 0  # a bundle over a bundle
    (out / "notes.md").write_text("mine")
    before = tree(out)
    code, _, err = run_cli(["bundle", artifact, "--out", out], capsys)
    one_line_error(code, err, 2, "files edgedl did not write (notes.md)")
    assert tree(out) == before


def test_a_symlink_inside_an_old_bundle_is_never_followed(run, tmp_path, capsys):
    victim = user_folder(tmp_path / "victim")
    before = tree(victim)
    out = tmp_path / "b"
    assert run_cli(["bundle", run / "exports" / "mlp_fp32.tflite", "--out", out], capsys)[0] == 0
    (out / "android" / "evil").symlink_to(victim)
    code, _, err = run_cli(["bundle", run / "exports" / "mlp_fp32.tflite", "--out", out], capsys)
    one_line_error(code, err, 2, "android/evil")
    assert tree(victim) == before


# ---------------------------------------------------------------- never certify garbage

def test_training_that_diverges_writes_no_run(tmp_path, capsys):
    from sklearn.datasets import load_digits

    digits = load_digits()
    np.savez(tmp_path / "huge.npz", x_train=digits.images.astype(np.float32) * 1e30, y_train=digits.target)
    code, _, err = run_cli(["train", "--model", "mlp", "--data", tmp_path / "huge.npz", "--epochs", "2",
                            "--out", tmp_path / "r"], capsys)
    one_line_error(code, err, 1, "training diverged")
    assert not (tmp_path / "r" / "manifest.json").exists() and not (tmp_path / "r" / "model.keras").exists()


@pytest.mark.parametrize("args, words", [
    (["--learning-rate", "inf"], "must be a finite number"),
    (["--learning-rate", "nan"], "must be a finite number"),
    (["--batch-size", "0"], "--batch-size"),
    (["--seed", "-1"], "--seed"),
    (["--epochs", "0"], "--epochs"),
])
def test_senseless_training_options_are_usage_errors(args, words, tmp_path, capsys):
    code, _, err = run_cli(["train", "--model", "mlp", "--data", "digits8x8", *args, "--out", tmp_path / "r"], capsys)
    assert code == 2 and words in err and "Traceback" not in err, err
    assert not (tmp_path / "r").exists()


def _nan_model(path: Path) -> None:
    import keras

    model = keras.Sequential([keras.Input((64,), name="pixels"), keras.layers.Dense(10, activation="softmax")])
    weights = model.get_weights()
    weights[0][0, 0] = np.nan
    model.set_weights(weights)
    model.save(path)


def test_a_nan_reference_certifies_nothing(run, tmp_path, capsys):
    _nan_model(tmp_path / "nan.keras")
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((20, 64)).astype(np.float32))
    code, _, err = run_cli(["validate", tmp_path / "nan.keras", run / "exports" / "mlp_fp32.tflite",
                            "--data", tmp_path / "x.npz", "--report", tmp_path / "v.json"], capsys)
    one_line_error(code, err, 1, "NaN/Inf")


def test_a_constant_reference_is_flagged(run, tmp_path, capsys):
    import keras

    model = keras.Sequential([keras.Input((64,), name="pixels"), keras.layers.Dense(10, activation="softmax",
                                                                                      kernel_initializer="zeros")])
    model.save(tmp_path / "flat.keras")
    targets = ["export", tmp_path / "flat.keras", "--out", tmp_path / "e"]
    assert run_cli(targets, capsys)[0] == 0
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((20, 64)).astype(np.float32))
    code, out, _ = run_cli(["validate", tmp_path / "flat.keras", tmp_path / "e", "--data", tmp_path / "x.npz",
                            "--json"], capsys)
    report = json.loads(out)
    assert report["warnings"] and "same for all 20 inputs" in report["warnings"][0]


def test_run_py_checks_the_model_on_every_load(run, tmp_path, capsys):
    out = tmp_path / "b"
    assert run_cli(["bundle", run / "exports" / "mlp_fp32.tflite", "--out", out], capsys)[0] == 0
    np.save(tmp_path / "x.npy", np.zeros((1, 64), np.float32))
    model = out / "mlp_fp32.tflite"
    model.write_bytes(model.read_bytes()[:-1] + b"\x01")
    done = subprocess.run([sys.executable, out / "run.py", tmp_path / "x.npy"], capture_output=True, text=True)
    assert done.returncode == 1 and "changed or replaced" in done.stderr and "Traceback" not in done.stderr


# ---------------------------------------------------------------- crash consistency

def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        found |= {int(c) for c in children}
    return found | {g for c in list(found) for g in _children(c) if Path(f"/proc/{c}").exists()}


def _wait_gone(pids: set[int], seconds: float = 30) -> set[int]:
    deadline = time.monotonic() + seconds
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if Path(f"/proc/{p}").exists() and "Z" not in _state(p)}
        if alive:
            time.sleep(0.1)  # polling for an event (process exit) with a deadline, not a stand-in for one
    return alive


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return "Z"


def test_sigkill_during_export_leaves_nothing_trusted_and_no_worker(run, tmp_path):
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "edgedl", "export", str(run), "-f", "tflite,onnx",
                             "-q", "none,fp16,dynamic,int8", "--out", str(out)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True, env=ENV)
    for line in proc.stderr:  # wait until the first artifact is done and the second is under way
        if line.strip().startswith("[2/"):
            break
    else:
        pytest.fail("export never started its second target")
    workers = _children(proc.pid)
    assert workers and proc.poll() is None, "the kill must land mid-export, on live workers"
    proc.kill()
    proc.wait()
    assert not _wait_gone(workers), "export workers must die with their parent"
    (out / ".mlp_fp16.tflite.999999-dead.edgedl-tmp").write_bytes(b"half an artifact")  # what a kill leaves
    done = subprocess.run([sys.executable, "-m", "edgedl", "validate", str(run), str(out), "--report",
                           str(tmp_path / "v.json")], capture_output=True, text=True, env=ENV)
    report = json.loads((tmp_path / "v.json").read_text())
    assert all(".edgedl-tmp" not in a["artifact"] for a in report["artifacts"]), done.stderr
    done = subprocess.run([sys.executable, "-m", "edgedl", "export", str(run), "-f", "tflite", "-q", "fp16",
                           "--out", str(out)], capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr
    assert not [p for p in out.iterdir() if p.name.endswith(".edgedl-tmp")], "the rerun sweeps dead leftovers"
    for artifact in out.glob("*.tflite"):
        assert artifact.with_name(artifact.name + ".json").exists(), "an artifact is never without its sidecar"


@pytest.mark.parametrize("after", ["train", "export", "validate"])
def test_sigkill_during_pipeline_then_rerun_passes(after, tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text('[model]\narchitecture = "mlp"\n[data]\nsource = "digits8x8"\n[train]\nepochs = 2\n'
                      '[export]\ntargets = ["tflite:fp32", "onnx:fp32"]\n'
                      '[gates]\nmin_agreement = 0.5\nmax_accuracy_drop = 0.5\n')
    args = [sys.executable, "-m", "edgedl", "pipeline", str(recipe), "--bench-time", "0.05", "--no-layers",
            "--out", str(tmp_path / "p")]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=ENV)
    for line in proc.stdout:
        if line.strip().startswith(f"{after}") and "done" in line:
            break
    else:
        pytest.fail(f"the pipeline never reported {after} done")
    assert proc.poll() is None, "the kill must land mid-pipeline"
    proc.kill()
    proc.wait()
    done = subprocess.run(args, capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "all gates pass" in done.stdout
    leftovers = [p for p in (tmp_path / "p").rglob("*") if p.name.endswith((".edgedl-tmp", ".edgedl-staging"))]
    assert not leftovers


def test_interrupt_message_is_true(tmp_path):
    """'No partial files were kept' is printed only after checking that none are left."""
    from edgedl.core import files

    writing = files.atomic_path(tmp_path / "a.bin")
    tmp = writing.__enter__()  # an interrupt arrives while the file is half-written
    tmp.write_bytes(b"x")
    staging = files.staging_dir(tmp_path, "run")
    folder = staging.__enter__()
    (folder / "model.keras").write_bytes(b"y")
    assert files.remove_in_flight() == [] and not tmp.exists() and not folder.exists()
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- hostile files

def _onnx_loop_model(path: Path) -> None:
    """y = x @ W + 0 × (a Loop's count), the count being 1e9 × sum(x): zeros pass, real data hangs."""
    import onnx
    from onnx import TensorProto, helper

    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
         helper.make_node("Constant", [], ["one"], value=helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])),
         helper.make_node("Add", ["acc_in", "one"], ["acc_out"])], "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, [])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, [])])
    constant = lambda name, kind, value: helper.make_node(  # noqa: E731
        "Constant", [], [name], value=helper.make_tensor(name, kind, [], [value]))
    nodes = [
        helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
        constant("k", TensorProto.FLOAT, 1e9), constant("zero", TensorProto.FLOAT, 0.0),
        constant("true", TensorProto.BOOL, True),
        helper.make_node("Mul", ["s", "k"], ["m"]),
        helper.make_node("Cast", ["m"], ["trips"], to=TensorProto.INT64),
        helper.make_node("Loop", ["trips", "true", "zero"], ["count"], body=body),
        helper.make_node("Mul", ["count", "zero"], ["nothing"]),
        helper.make_node("MatMul", ["x", "W"], ["logits"]),
        helper.make_node("Add", ["logits", "nothing"], ["probs"]),
    ]
    weight = helper.make_tensor("W", TensorProto.FLOAT, [64, 10], np.full(640, 0.01, np.float32))
    graph = helper.make_graph(nodes, "hang", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["n", 10])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, path)


def test_an_onnx_loop_that_depends_on_the_data_cannot_hang_validate(run, tmp_path, capsys, monkeypatch):
    _onnx_loop_model(tmp_path / "loop.onnx")
    monkeypatch.setenv("EDGEDL_TIME_LIMIT_S", "5")
    started = time.monotonic()
    code, out, err = run_cli(["validate", run, tmp_path / "loop.onnx", "--report", tmp_path / "v.json"], capsys)
    assert code == 1 and "not faithful: loop.onnx" in err and "Traceback" not in err, err
    assert time.monotonic() - started < 120  # bounded, not forever (the limit itself is 5 s)
    row = json.loads((tmp_path / "v.json").read_text())["artifacts"][0]
    assert not row["passed"] and "did not finish within 5 s" in row["error"], out


def test_a_huge_declared_shape_is_refused_before_allocation(tmp_path, capsys):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "huge",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 100000, 100000])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 100000, 100000])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "huge.onnx")
    assert (tmp_path / "huge.onnx").stat().st_size < 200
    code, _, err = run_cli(["inspect", tmp_path / "huge.onnx"], capsys)
    one_line_error(code, err, 1, "10,000,000,000 values per sample")


def _npz_bomb(path: Path, rows: int, features: int) -> None:
    """A small .npz whose header declares ``rows × features`` float32 values: one row of values in [0, 1]
    repeated, which deflate squeezes ~100:1 (a constant row would be refused as data with no range)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False,
                                                  "shape": (rows, features)})
    block = np.tile(np.linspace(0, 1, features, dtype=np.float32), (1024, 1)).tobytes()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("x.npy", "w", force_zip64=True) as member:
            member.write(header.getvalue())  # magic string, version and header
            for _ in range(rows // 1024):
                member.write(block)


def test_an_npz_bomb_is_read_only_as_far_as_asked(run, tmp_path, capsys, monkeypatch):
    _npz_bomb(tmp_path / "bomb.npz", 200_000, 64)  # 51 MB of values in a few hundred KB
    assert (tmp_path / "bomb.npz").stat().st_size < 1_000_000
    monkeypatch.setenv("EDGEDL_MAX_DATA_BYTES", str(2 * 2**20))  # far below the declared 51 MB
    code, _, err = run_cli(["validate", run, run / "exports" / "mlp_fp32.tflite", "--data", tmp_path / "bomb.npz",
                            "--samples", "500", "--report", tmp_path / "v.json"], capsys)
    assert code in (0, 1) and "Traceback" not in err  # 500 rows read lazily: it runs (parity on repeated rows)
    assert json.loads((tmp_path / "v.json").read_text())["samples"] == 500
    code, _, err = run_cli(["validate", run, run / "exports" / "mlp_fp32.tflite", "--data", tmp_path / "bomb.npz",
                            "--samples", "100000", "--report", tmp_path / "v.json"], capsys)
    one_line_error(code, err, 1, "would need")


def test_a_keras_zip_bomb_is_refused_before_extraction(tmp_path, capsys):
    with zipfile.ZipFile(tmp_path / "bomb.keras", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", "{}")
        archive.writestr("config.json", "{}")
        with archive.open("model.weights.h5", "w", force_zip64=True) as member:
            chunk = bytes(2**20)
            for _ in range(200):
                member.write(chunk)
    assert (tmp_path / "bomb.keras").stat().st_size < 1_000_000
    code, _, err = run_cli(["export", tmp_path / "bomb.keras", "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, 1, "zip bomb")


# ---------------------------------------------------------------- traversal and names

def test_recipe_and_manifest_names_cannot_escape_out(run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    victim = user_folder(tmp_path / "victim")
    before = tree(victim)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["name"] = manifest["architecture"] = "../../victim/evil:thing"
    (run / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(["export", run, "-f", "tflite", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    written = [p.name for p in (tmp_path / "o").iterdir() if p.suffix == ".tflite"]
    assert written == ["victim_evil_thing_fp32.tflite"] and tree(victim) == before
    assert all(":" not in p.name for p in (tmp_path / "o").iterdir())


# ---------------------------------------------------------------- concurrency

def test_two_exports_into_one_folder_keep_both_index_entries(run, tmp_path):
    out = tmp_path / "o"
    procs = [subprocess.Popen([sys.executable, "-m", "edgedl", "export", str(run), "-f", fmt, "--out", str(out)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
             for fmt in ("tflite", "onnx")]
    for proc in procs:
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    index = json.loads((out / "artifacts.json").read_text())
    assert sorted(a["file"] for a in index["artifacts"]) == ["mlp_fp32.onnx", "mlp_fp32.tflite"]


# ---------------------------------------------------------------- run.py inputs

def _png_bomb(path: Path) -> None:
    from PIL import Image

    Image.new("L", (10_000, 5_000)).save(path, optimize=True)  # 50 M pixels in a few tens of KB


@pytest.fixture
def bundle_dir(run, tmp_path, capsys) -> Path:
    out = tmp_path / "b"
    code, _, err = run_cli(["bundle", run / "exports" / "mlp_fp32.tflite", "--out", out], capsys)
    assert code == 0, err
    return out


RUN_PY_CASES = {
    "wrong-shape npy": ("x.npy", lambda p: np.save(p, np.zeros((3, 7), np.float32)), "cannot be split into samples"),
    "text named png": ("x.png", lambda p: p.write_text("not an image"), "not a readable image"),
    "a folder": ("dir", lambda p: p.mkdir(), "is not a file"),
    "missing file": ("nope.npy", lambda p: None, "input not found"),
    "object npy": ("o.npy", lambda p: np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True),
                   "Python objects"),
    "nan npy": ("n.npy", lambda p: np.save(p, np.full((1, 64), np.nan, np.float32)), "NaN or Inf"),
    "png bomb": ("bomb.png", _png_bomb, "too large to decode safely"),
    "garbage npy": ("g.npy", lambda p: p.write_bytes(os.urandom(64)), "is not a .npy array"),
}


@pytest.mark.parametrize("case", list(RUN_PY_CASES))
def test_run_py_input_errors_are_one_line(case, bundle_dir, tmp_path):
    name, make, words = RUN_PY_CASES[case]
    make(tmp_path / name)
    done = subprocess.run([sys.executable, bundle_dir / "run.py", tmp_path / name], capture_output=True, text=True)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error:") and words in done.stderr and len(done.stderr.splitlines()) == 1


def test_run_py_garbage_on_stdin(bundle_dir):
    done = subprocess.run([sys.executable, bundle_dir / "run.py", "-"], input=os.urandom(100), capture_output=True)
    assert done.returncode == 1 and b"Traceback" not in done.stderr and b"standard input" in done.stderr
