"""Hardening: every bad input gets a one-line error, nothing is half-written, no crash escapes."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, run_cli
from hypothesis import given, settings
from hypothesis import strategies as st

from edgedl.runners.base import dequantize, quantize

# Unbuffered: the signal tests read the child's progress lines as they are printed.
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")


def _files(tmp: Path, tiny_runs, tiny_exports) -> dict[str, Path]:
    """Bad files of every kind, next to good ones to derive them from."""
    good_tflite = (tiny_exports["mlp"] / "mlp_fp32.tflite").read_bytes()
    good_onnx = (tiny_exports["mlp"] / "mlp_fp32.onnx").read_bytes()
    good_keras = (tiny_runs["mlp"] / "model.keras").read_bytes()
    made = {
        "empty.keras": b"", "garbage.keras": os.urandom(300), "truncated.keras": good_keras[: len(good_keras) // 2],
        "empty.tflite": b"", "garbage.tflite": os.urandom(300), "truncated.tflite": good_tflite[: len(good_tflite) // 3],
        "empty.onnx": b"", "garbage.onnx": os.urandom(300), "truncated.onnx": good_onnx[: len(good_onnx) // 3],
        "model.pb": good_tflite,
    }
    for name, data in made.items():
        (tmp / name).write_bytes(data)
    return {name: tmp / name for name in made}


CASES = [
    # (command template, file, exit code, words in the error)
    (["export", "{f}"], "empty.keras", 1, "empty, truncated or not a Keras archive"),
    (["export", "{f}"], "garbage.keras", 1, "empty, truncated or not a Keras archive"),
    (["export", "{f}"], "truncated.keras", 1, "Keras"),
    (["inspect", "{f}"], "empty.tflite", 1, "is empty"),
    (["inspect", "{f}"], "garbage.tflite", 1, "not a loadable TFLite model"),
    (["inspect", "{f}"], "truncated.tflite", 1, "truncated.tflite"),
    (["inspect", "{f}"], "garbage.onnx", 1, "garbage.onnx"),
    (["inspect", "{f}"], "truncated.onnx", 1, "truncated.onnx"),
    (["inspect", "{f}"], "model.pb", 2, "unknown artifact type .pb"),
    (["validate", "{run}", "{f}"], "garbage.tflite", 1, "not faithful"),
    (["validate", "{run}", "{f}"], "empty.onnx", 1, "not faithful"),
    (["bench", "{f}"], "garbage.onnx", 1, "measurement(s) failed"),
    (["bench", "{f}"], "truncated.tflite", 1, "measurement(s) failed"),
    (["bundle", "{f}", "--out", "{tmp}/b"], "garbage.tflite", 1, "no manifest"),
]


@pytest.mark.parametrize("template, name, code, words", CASES, ids=[f"{c[0][0]}-{c[1]}" for c in CASES])
def test_bad_files(template, name, code, words, tmp_path, tiny_runs, tiny_exports, capsys):
    files = _files(tmp_path, tiny_runs, tiny_exports)
    args = [a.format(f=files[name], run=tiny_runs["mlp"], tmp=tmp_path) for a in template]
    got, _, err = run_cli(args, capsys)
    assert got == code, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("edgedl: error:") and words in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "b").exists()


def _lambda_model(path: Path) -> None:
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2.0), keras.layers.Dense(2)])
    model.save(path)


@pytest.mark.slow
def test_lambda_layer_refused_in_safe_mode_and_allowed_with_unsafe(tmp_path, capsys):
    _lambda_model(tmp_path / "lam.keras")
    code, _, err = run_cli(["export", tmp_path / "lam.keras", "--out", tmp_path / "o"], capsys)
    assert code == 1 and "refused in safe mode" in err and "--unsafe" in err
    code, _, err = run_cli(["export", tmp_path / "lam.keras", "--unsafe", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert (tmp_path / "o" / "lam_fp32.tflite").exists()


@pytest.mark.slow
def test_unknown_custom_layer_is_named(tmp_path, capsys):
    import keras

    @keras.saving.register_keras_serializable(package="tmp")
    class Twice(keras.layers.Layer):
        def call(self, x):
            return x * 2

    keras.Sequential([keras.Input((3,)), Twice(), keras.layers.Dense(2)]).save(tmp_path / "custom.keras")
    keras.saving.get_custom_objects().clear()
    code, _, err = run_cli(["export", tmp_path / "custom.keras", "--out", tmp_path / "o"], capsys)
    assert code == 1 and "custom layer" in err


@pytest.mark.parametrize("x, words", [(np.zeros((0, 64), np.float32), "has 0 samples"),
                                      (np.zeros((4, 64), np.float32), "has 4 samples"),
                                      (np.zeros((20, 7), np.float32), "expects"),
                                      (np.full((20, 64), np.nan, np.float32), "holds NaN or Inf values")])
def test_bad_calibration_sets(x, words, tmp_path, tiny_runs, capsys):
    np.savez(tmp_path / "c.npz", x=x)
    code, _, err = run_cli(["export", tiny_runs["mlp"], "-q", "int8", "--calibration", tmp_path / "c.npz",
                            "--out", tmp_path / "o"], capsys)
    assert code == 1 and words in err, err
    assert "the converter" not in err  # bad data is blamed on the data
    assert not list((tmp_path / "o").glob("*.tflite"))


def test_validation_data_of_the_wrong_shape(tmp_path, tiny_runs, tiny_exports, capsys):
    np.savez(tmp_path / "d.npz", x=np.zeros((10, 5, 5), np.float32))
    code, _, err = run_cli(["validate", tiny_runs["mlp"], tiny_exports["mlp"] / "mlp_fp32.tflite", "--data",
                            tmp_path / "d.npz", "--report", tmp_path / "r.json"], capsys)
    assert code == 1 and "expects (64,)" in err


def test_unwritable_export_dir(tmp_path, tiny_runs, capsys):
    (tmp_path / "file").write_text("")
    code, _, err = run_cli(["export", tiny_runs["mlp"], "--out", tmp_path / "file" / "x"], capsys)
    assert code == 1 and "cannot write to output directory" in err


def test_full_disk_leaves_no_partial_files(tmp_path, tiny_runs):
    """RLIMIT_FSIZE = 20 kB: the model file cannot be written; the previous run stays whole."""
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["cnn"], run, ignore=shutil.ignore_patterns("exports"))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    done = subprocess.run([sys.executable, "-m", "edgedl", "train", "--model", "cnn", "--data", "digits8x8",
                           "--epochs", "1", "--out", str(run)], capture_output=True, text=True, env=ENV,
                          preexec_fn=limit, timeout=300)
    assert done.returncode == 1, done.stderr[-500:]
    assert "File too large" in done.stderr.strip().splitlines()[-1] and "Traceback" not in done.stderr
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != ".edgedl.json"]  # only the marker


def test_atomic_write_under_a_file_size_limit(tmp_path):
    script = ("import resource\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))\n"
              "from edgedl.core.files import write_bytes\n"
              "from edgedl.core.errors import EdgedlError\n"
              f"try:\n    write_bytes({str(tmp_path / 'big.bin')!r}, bytes(5000))\n"
              "except EdgedlError as exc:\n    print(exc.one_line())\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV)
    assert "File too large" in done.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_training_keeps_the_previous_run(sig, tmp_path, tiny_runs):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["cnn"], run, ignore=shutil.ignore_patterns("exports"))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    # Keras prints "Epoch 2/200" when the second epoch starts: the signal then lands mid-training,
    # after TensorFlow's import, the data load and one whole epoch (early stopping needs more).
    proc = subprocess.Popen([sys.executable, "-m", "edgedl", "train", "--model", "cnn", "--data", "digits",
                             "--epochs", "200", "--out", str(run)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    for line in proc.stdout:
        if line.startswith("Epoch 2/"):
            break
    assert proc.poll() is None, "training ended before it could be interrupted"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)  # also drains the rest of stdout
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err[-1000:]
    after = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert after == before, "an interrupted run must leave the previous manifest and model untouched"
    assert not [p for p in run.iterdir() if p.name.startswith(".") and p.name != ".edgedl.json"]  # only the marker


def test_converter_crash_is_reported_and_other_targets_continue(tmp_path, tiny_runs):
    """A converter that segfaults (injected through sitecustomize in the worker process)."""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal\n"
        "import edgedl.export.tflite as tflite\n"
        "def crash(*args, **kwargs):\n"
        "    os.kill(os.getpid(), signal.SIGSEGV)\n"
        "tflite.convert = crash\n")
    env = dict(ENV, PYTHONPATH=f"{hook}{os.pathsep}{ROOT}")
    done = subprocess.run([sys.executable, "-m", "edgedl", "export", str(tiny_runs["mlp"]), "-f", "tflite,onnx",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert "the converter crashed (process died) during tflite fp32" in done.stderr
    assert (tmp_path / "o" / "mlp_fp32.onnx").exists() and not (tmp_path / "o" / "mlp_fp32.tflite").exists()
    assert "Traceback" not in done.stderr


@settings(max_examples=200, deadline=None)
@given(scale=st.floats(1e-4, 10), zero_point=st.integers(-128, 127), value=st.floats(-1e4, 1e4))
def test_quantize_round_trip(scale, zero_point, value):
    q = quantize(np.array([value], np.float32), scale, zero_point, "int8")
    back = dequantize(q, scale, zero_point)[0]
    low, high = (-128 - zero_point) * scale, (127 - zero_point) * scale
    if low <= value <= high:
        assert abs(back - value) <= scale / 2 + 1e-4 * scale + 1e-6 * abs(value)
    else:
        assert back == pytest.approx(min(max(value, low), high), rel=1e-5, abs=1e-5)


@settings(max_examples=30, deadline=None)
@given(shapes=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 4)), min_size=1, max_size=3),
       seed=st.integers(0, 1000))
def test_saved_result_round_trip(tmp_path_factory, shapes, seed):
    from edgedl.validate.results import RunResult, load_result, save_result

    rng = np.random.default_rng(seed)
    outputs = [rng.normal(size=s).astype(np.float32) for s in shapes]
    result = RunResult("m.tflite", "litert", outputs, [f"o{i}" for i in range(len(outputs))], "abc",
                       {"precision": "int8"}, 0.5)
    path = tmp_path_factory.mktemp("r") / "res"
    save_result(result, path)
    loaded = load_result(path)
    assert loaded.output_names == result.output_names and loaded.info == result.info
    assert all(np.array_equal(a, b) for a, b in zip(loaded.outputs, outputs, strict=True))


def test_fuzzed_artifacts_never_crash_the_process(tmp_path, tiny_exports, capsys):
    """Bounded fuzz: mutated real model bytes give a clean result or a clean one-line error."""
    rng = np.random.default_rng(0)
    outcomes = {"ok": 0, "error": 0}
    for source in (tiny_exports["mlp"] / "mlp_int8.tflite", tiny_exports["mlp"] / "mlp_fp32.onnx"):
        original = bytearray(source.read_bytes())
        for i in range(12):
            data = bytearray(original)
            if i % 3 == 0:
                data = data[: rng.integers(1, len(data))]
            else:
                for position in rng.integers(0, len(data), size=8):
                    data[position] = rng.integers(0, 256)
            path = tmp_path / f"m{i}{source.suffix}"
            path.write_bytes(bytes(data))
            code, _, err = run_cli(["inspect", path], capsys)
            assert code in (0, 1) and "Traceback" not in err
            outcomes["ok" if code == 0 else "error"] += 1
    assert outcomes["error"] > 0


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def test_repeated_validation_and_runs_do_not_leak(tiny_runs, tiny_exports):
    import gc

    from edgedl.runners.litert import LiteRTRunner
    from edgedl.runners.onnxrt import OnnxRuntimeRunner

    x = np.random.default_rng(0).random((50, 64)).astype(np.float32)

    def cycles(count):
        for i in range(count):
            for cls, name in ((LiteRTRunner, "mlp_int8.tflite"), (OnnxRuntimeRunner, "mlp_fp32.onnx")):
                with cls(tiny_exports["mlp"] / name) as runner:
                    runner.infer([x])
            if i % 25 == 24:  # a full collection costs 0.2 s with TensorFlow loaded, a cycle 3 ms
                gc.collect()
        gc.collect()

    cycles(30)
    start = rss_mb()
    cycles(200)
    assert rss_mb() - start < 25, "RSS must not grow with repeated runs"


def test_repeated_validate_and_bench_calls_do_not_leak(tiny_runs, tiny_exports, tmp_path):
    import gc

    from edgedl.api import bench
    from edgedl.validate.run import ValidateOptions, validate

    artifact = tiny_exports["mlp"] / "mlp_fp32.tflite"
    validate(tiny_runs["mlp"], [artifact], ValidateOptions(save_results=str(tmp_path / "ref"),
                                                            report=str(tmp_path / "r.json")), say=lambda m: None)
    options = ValidateOptions(reference=str(tmp_path / "ref" / "reference"), report=str(tmp_path / "r.json"))

    def cycle():
        validate(tiny_runs["mlp"], [artifact], options, say=lambda m: None)  # reference: no Keras load
        bench(artifact, runs=5, warmup=1)
        gc.collect()

    for _ in range(3):
        cycle()
    start = rss_mb()
    for _ in range(8):
        cycle()
    assert rss_mb() - start < 20, "validate and bench must not grow the caller's memory"


def test_an_interrupted_export_keeps_what_completed_and_leaves_nothing_half_written(tmp_path, tiny_runs):
    """SIGINT while the warm worker converts: the export says what completed, lists exactly that, and no
    temporary or partial file stays behind (the worker is killed with the export, not left writing)."""
    out = tmp_path / "o"
    proc = subprocess.Popen([sys.executable, "-m", "edgedl", "export", str(tiny_runs["cnn"]), "-f", "tflite,onnx",
                             "-q", "none,fp16,dynamic,int8", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=ENV)
    seen = []
    for line in proc.stdout:  # the third target has started: two artifacts are complete
        seen.append(line)
        if line.startswith("[3/"):
            break
    assert proc.poll() is None, "the export ended before it could be interrupted: " + "".join(seen)
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=120)
    said = "".join(seen) + rest
    assert proc.returncode == 130 and "Traceback" not in said, said[-1500:]
    listed = {a["file"] for a in json.loads((out / "artifacts.json").read_text())["artifacts"]}
    written = {p.name for p in out.iterdir() if p.suffix in (".tflite", ".onnx")}
    assert {"cnn_fp32.tflite", "cnn_fp16.tflite"} <= listed and listed == written, (listed, written, said)
    assert all((out / f"{name}.json").is_file() for name in written), "every artifact keeps its sidecar"
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and p.name not in (".edgedl.json",
                                                                                          ".edgedl.lock")]
    assert f"interrupted: {len(listed)} artifact(s) completed" in said
