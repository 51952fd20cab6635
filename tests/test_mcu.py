"""Microcontrollers: the seed int8 models under TFLite Micro's own interpreter, their arena confirmed
by an independent run, the C files compiled, and a model too big for a small board refused for it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import run_cli

from edgedl.deploy.mcu import MCU_TOLERANCE, mcu_check

SEEDS = ("mlp", "cnn", "lstm")


@pytest.fixture(scope="module")
def seed_reports(tiny_exports):
    return {arch: mcu_check(tiny_exports[arch] / f"{arch}_int8.tflite", samples=60, say=lambda m: None)
            for arch in SEEDS}


def test_seed_int8_models_run_in_tflite_micro_like_litert(seed_reports):
    for arch, report in seed_reports.items():
        assert report["passed"] and not report["unsupported"], (arch, report.get("error"), report.get("failed_because"))
        parity = report["parity"]
        assert parity["samples"] == 60 and parity["max_steps"] <= MCU_TOLERANCE["max_steps"], (arch, parity)
        assert parity["agreement"] >= MCU_TOLERANCE["min_agreement"], (arch, parity)
        # the resolver registers exactly the model's op kinds, one call each
        assert len(report["resolver"]) == len(report["ops"]) == len(set(report["resolver"]))
        assert report["ram"]["total"] == report["arena"]["with_margin"] + report["ram"]["io_buffers"]
        # I/O buffers: one int8 sample in (64 pixels, or 8×8 rows) and the 10 int8 scores out
        assert report["ram"]["io_buffers"] == 64 + 10, (arch, report["ram"])
        assert report["arena"]["with_margin"] >= report["arena"]["minimum"] + 256
        flash = report["flash"]
        assert flash["total"] == flash["model"] + flash["framework"] + sum(flash["kernels"].values())
        assert set(flash["kernels"]) == set(report["ops"])
        assert len(report["boards"]) >= 8 and all(v["fits"] for v in report["boards"].values()), arch
    assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in seed_reports["lstm"]["ops"]  # the fused, stateful LSTM
    assert "CONV_2D" in seed_reports["cnn"]["ops"]


# Independent of edgedl's code: TFLite Micro's interpreter, a fresh process per run, fed the first
# held-out-like input (zeros work for every int8 model: allocation, not values, decides the arena).
INDEPENDENT_RUN = """
import sys, numpy as np
from tflite_micro.python.tflite_micro import runtime
model = open(sys.argv[1], "rb").read()
interpreter = runtime.Interpreter.from_bytes(model, arena_size=int(sys.argv[2]))
detail = interpreter.get_input_details(0)
interpreter.set_input(np.zeros(detail["shape"], detail["dtype"]), 0)
interpreter.invoke()
print("ran", interpreter.get_output(0).shape)
"""


def _runs_with(model, arena: int) -> bool:
    done = subprocess.run([sys.executable, "-c", INDEPENDENT_RUN, str(model), str(arena)], capture_output=True,
                          text=True, timeout=120)
    return done.returncode == 0 and "ran" in done.stdout  # a too-small arena errors or segfaults


def test_arena_is_confirmed_to_within_ten_percent_by_an_independent_run(seed_reports, tiny_exports):
    for arch, report in seed_reports.items():
        model, arena = tiny_exports[arch] / f"{arch}_int8.tflite", report["arena"]["minimum"]
        assert _runs_with(model, arena), f"{arch}: the measured arena {arena} B does not run"
        assert not _runs_with(model, int(arena * 0.9)), f"{arch}: {int(arena * 0.9)} B (−10 %) still runs"


@pytest.fixture(scope="module")
def mlp_bundle(tiny_exports, tmp_path_factory):
    from edgedl.api import bundle

    out = tmp_path_factory.mktemp("mcu") / "mlp_int8"
    bundle(tiny_exports["mlp"] / "mlp_int8.tflite", out, targets=["mcu", "nano33ble"], min_agreement=0.95,
           max_accuracy_drop=0.03)
    return out


def test_bundle_records_the_check_and_writes_the_firmware_folder(mlp_bundle):
    manifest = json.loads((mlp_bundle / "manifest.json").read_text())
    mcu = manifest["mcu"]
    assert mcu["parity"]["passed"] and mcu["target"]["fits"] and mcu["target"]["board"].startswith("Arduino Nano")
    main_cc = (mlp_bundle / "mcu" / "main.cc").read_text()
    assert f"constexpr int kArenaSize = {mcu['arena']['with_margin']};" in main_cc
    assert f"MicroMutableOpResolver<{len(mcu['resolver'])}>" in main_cc
    assert all(f"resolver.{call}();" in main_cc for call in mcu["resolver"])
    assert main_cc.count("resolver.Add") == len(mcu["resolver"])
    for name in ("model_data.cc", "model_data.h", "golden_data.cc", "golden_data.h", "README.md", "CMakeLists.txt",
                 "platformio.ini"):
        assert (mlp_bundle / "mcu" / name).stat().st_size > 0, name
    # the same checks again from the bundle folder (its golden vectors), as a user would run them
    again = mcu_check(mlp_bundle, target="nano33ble", say=lambda m: None)
    assert again["passed"] and again["parity"]["samples"] == manifest["golden"]["count"]


def test_generated_c_files_compile_with_the_host_compiler(mlp_bundle, tmp_path):
    compiler = shutil.which("g++")
    if compiler is None:
        if os.environ.get("CI"):
            pytest.fail("CI must compile the generated C++: g++ is missing (.ci/run installs it)")
        pytest.skip("no g++ on this machine")
    for name in ("model_data.cc", "golden_data.cc"):
        done = subprocess.run([compiler, "-std=c++17", "-Wall", "-Wextra", "-Werror", "-c", name, "-o",
                               str(tmp_path / (name + ".o"))], cwd=mlp_bundle / "mcu", capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    # linked into a host program, the array holds exactly the model's bytes, 16-byte aligned
    (tmp_path / "dump.cc").write_text(
        '#include <cstdio>\n#include <cstdint>\n#include "model_data.h"\n'
        "int main() { if (reinterpret_cast<uintptr_t>(g_model_data) % 16) return 2;\n"
        "  fwrite(g_model_data, 1, g_model_data_len, stdout); return 0; }\n")
    binary = tmp_path / "dump"
    done = subprocess.run([compiler, "-std=c++17", "-I", str(mlp_bundle / "mcu"), str(tmp_path / "dump.cc"),
                           str(tmp_path / "model_data.cc.o"), "-o", str(binary)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    dumped = subprocess.run([str(binary)], capture_output=True, timeout=30)
    assert dumped.returncode == 0 and dumped.stdout == (mlp_bundle / "mlp_int8.tflite").read_bytes()


@pytest.fixture(scope="module")
def wide_mlp(tmp_path_factory):
    """64 → 768 → 768 → 10, int8: about 650 KB of weights, more than an STM32F4 Nucleo's 512 KB flash."""
    import keras

    root = tmp_path_factory.mktemp("wide")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,), name="x"), keras.layers.Dense(768, activation="relu"),
                              keras.layers.Dense(768, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    model.save(root / "wide.keras")
    rng = np.random.default_rng(0)
    np.savez(root / "calibration.npz", x=rng.random((32, 64), dtype=np.float32))
    np.savez(root / "heldout.npz", x=rng.random((40, 64), dtype=np.float32), y=rng.integers(0, 10, 40))
    from edgedl.api import export

    export(root / "wide.keras", quantize="int8", calibration=str(root / "calibration.npz"), input_scale=1.0)
    return root


def test_a_model_too_big_for_a_small_board_is_refused_with_the_numbers(wide_mlp, capsys, tmp_path):
    artifact = wide_mlp / "exports" / "wide_int8.tflite"
    code, out, err = run_cli(["mcu-check", artifact, "--data", wide_mlp / "heldout.npz", "--target", "stm32f401re"],
                             capsys)
    assert code == 1, out + err
    assert "TFLite Micro vs LiteRT" in out and "✗ stm32f401re" in out and "✓ stm32h743" in out
    line = err.strip().splitlines()[-1]
    assert "does not fit ST NUCLEO-F401RE: flash needs" in line and "of 480.0 KB usable (short by" in line
    # the bundle is refused for that board too (parity limits opened: the weights are random), nothing left behind
    code, out, err = run_cli(["bundle", artifact, "--out", tmp_path / "b", "--data", wide_mlp / "heldout.npz",
                              "--target", "stm32f401re", "--max-accuracy-drop", "1", "--min-agreement", "0"], capsys)
    assert code != 0 and "does not fit ST NUCLEO-F401RE" in err and not (tmp_path / "b").exists()


@pytest.mark.slow
def test_export_for_a_microcontroller_refuses_an_op_without_a_tflite_micro_kernel(tmp_path, capsys):
    import keras

    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(8, activation="gelu", name="smooth"),
                              keras.layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "gelu.keras")
    np.savez(tmp_path / "calibration.npz", x=np.random.default_rng(0).random((16, 8), dtype=np.float32))
    code, out, err = run_cli(["export", tmp_path / "gelu.keras", "--quantize", "int8", "--calibration",
                              tmp_path / "calibration.npz", "--input-scale", "1", "--target", "mcu"], capsys)
    assert code != 0 and "GELU" in err and "smooth" in err, err
    assert not list((tmp_path / "exports").glob("*.tflite"))


def test_a_token_model_exports_for_a_microcontroller_and_runs_in_tflite_micro(tmp_path, capsys):
    """Keras 3's Embedding lowered to LESS/ADD/SELECT around a GATHER; TFLite Micro has no SELECT (v1)
    kernel, so every token model was blocked. It is exported as one GATHER."""
    import keras

    tokens = keras.Input((12,), dtype="int32", name="tokens")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(50, 8, name="embed")(tokens))
    keras.Model(tokens, keras.layers.Dense(3, activation="softmax")(pooled)).save(tmp_path / "tokens.keras")
    ids = np.random.default_rng(0).integers(0, 50, (64, 12)).astype(np.int32)
    np.savez(tmp_path / "calibration.npz", tokens=ids)
    np.savez(tmp_path / "heldout.npz", x=ids[:20], y=np.zeros(20, np.int64))
    code, out, err = run_cli(["export", tmp_path / "tokens.keras", "--quantize", "int8", "--calibration",
                              tmp_path / "calibration.npz", "--target", "mcu", "--out", tmp_path / "exports"], capsys)
    assert code == 0, out + err
    record = json.loads((tmp_path / "exports" / "tokens_int8.tflite.json").read_text())
    assert "GATHER" in record["ops"] and "SELECT" not in record["ops"], record["ops"]
    report = mcu_check(tmp_path / "exports" / "tokens_int8.tflite", data=str(tmp_path / "heldout.npz"),
                       say=lambda m: None)
    assert report["passed"] and not report["unsupported"], (report.get("error"), report.get("unsupported"))


def test_an_op_without_a_tflite_micro_kernel_is_refused_with_its_own_alternative(tmp_path, capsys):
    import keras

    features = keras.Input((6,), name="features")
    hidden = keras.layers.Dense(8, activation="gelu", name="smooth")(features)
    keras.Model(features, keras.layers.Dense(3, activation="softmax")(hidden)).save(tmp_path / "gelu.keras")
    np.savez(tmp_path / "calibration.npz", features=np.random.default_rng(0).normal(size=(32, 6)).astype(np.float32))
    code, out, err = run_cli(["export", tmp_path / "gelu.keras", "--quantize", "int8", "--calibration",
                              tmp_path / "calibration.npz", "--target", "mcu", "--out", tmp_path / "exports"], capsys)
    assert code != 0 and "layer 'smooth' → GELU" in err, out + err
    assert "relu or hard_swish" in err and "edgedl inspect" in err and "fused LSTM" not in err
    assert not list((tmp_path / "exports").glob("*.tflite"))


def test_mcu_parity_never_prints_agreement_for_a_regression_output():
    from edgedl.deploy.mcu import _parity

    rng = np.random.default_rng(0)
    reconstruction = rng.integers(-128, 127, (20, 16)).astype(np.int8)
    shaken = np.clip(reconstruction.astype(np.int16) + rng.integers(-1, 2, reconstruction.shape), -128, 127)
    shaken = shaken.astype(np.int8)  # a step either way: top-1 of a reconstruction flips, which means nothing
    as_regression = _parity([shaken], [reconstruction], ["regression"])["parity"]
    assert as_regression["agreement"] is None and as_regression["passed"] and as_regression["max_steps"] == 1
    probs = rng.integers(-128, 127, (20, 4)).astype(np.int8)
    both = _parity([shaken, probs], [reconstruction, probs], ["regression", "classification"])["parity"]
    assert both["agreement"] == 1.0  # judged on the class output, not the reconstruction before it


def test_mcu_check_verifies_the_artifact_and_takes_a_foreign_one_with_data(tiny_runs, tiny_exports, tmp_path, capsys):
    artifact = tiny_exports["mlp"] / "mlp_int8.tflite"
    changed = tmp_path / "changed" / artifact.name
    changed.parent.mkdir()
    shutil.copy(artifact.with_name(artifact.name + ".json"), changed.with_name(artifact.name + ".json"))
    blob = bytearray(artifact.read_bytes())
    blob[-100] ^= 1  # one bit after export
    changed.write_bytes(bytes(blob))
    code, _, err = run_cli(["mcu-check", changed], capsys)
    assert code == 1 and "changed or replaced after it was written" in err
    foreign = tmp_path / "foreign" / artifact.name  # no sidecar: a file edgedl did not export
    foreign.parent.mkdir()
    shutil.copy(artifact, foreign)
    code, _, err = run_cli(["mcu-check", foreign], capsys)
    assert code != 0 and "--data" in err
    with np.load(tiny_runs["mlp"] / "heldout.npz") as heldout:
        np.savez(tmp_path / "inputs.npz", x=heldout["x"][:20].reshape(20, -1).astype(np.float32) / 16.0)
    code, out, err = run_cli(["mcu-check", foreign, "--data", tmp_path / "inputs.npz", "--json",
                              tmp_path / "mcu.json"], capsys)
    assert code == 0, out + err
    assert json.loads((tmp_path / "mcu.json").read_text())["parity"]["samples"] == 20


def test_mcu_check_never_passes_an_int8_file_that_validate_refused(tiny_runs, tiny_exports, tmp_path, capsys):
    folder = tmp_path / "exports"
    folder.mkdir()
    for name in ("mlp_int8.tflite", "mlp_int8.tflite.json"):
        shutil.copy(tiny_exports["mlp"] / name, folder / name)
    with np.load(tiny_runs["mlp"] / "heldout.npz") as heldout:
        np.savez(tmp_path / "inputs.npz", x=heldout["x"][:20].reshape(20, -1).astype(np.float32) / 16.0)
    args = ["mcu-check", folder / "mlp_int8.tflite", "--data", tmp_path / "inputs.npz", "--json", tmp_path / "r.json"]
    code, out, err = run_cli(args, capsys)
    assert code == 0 and "compares TFLite Micro with LiteRT only" in out + err  # says what it did not judge
    (folder / "validation.json").write_text(json.dumps({"artifacts": [{
        "artifact": "mlp_int8.tflite", "passed": False,
        "outputs": [{"name": "probs", "passed": False, "failures": ["top-1 agreement 91.00% < 99.00%"]}]}]}))
    code, out, err = run_cli(args, capsys)
    report = json.loads((tmp_path / "r.json").read_text())
    assert code == 1 and not report["passed"] and report["parity"]["passed"]  # TFLite Micro matched LiteRT…
    assert "validate` refused this int8 file" in report["failed_because"] and "91.00%" in report["failed_because"]


def test_a_tflite_micro_mismatch_is_explained_by_comparing_litert_s_two_kernel_sets(tiny_runs, tiny_exports):
    """When TFLite Micro differs, LiteRT's builtin kernels are run too: the three pairwise distances say
    whether TFLite Micro is the odd one out, or the model is fragile (LiteRT disagrees with itself)."""
    from edgedl.deploy.mcu import kernel_comparison, kernel_verdict
    from edgedl.runners.open import open_runner

    model = tiny_exports["mlp"] / "mlp_int8.tflite"
    with np.load(tiny_runs["mlp"] / "heldout.npz") as heldout:
        inputs = [heldout["x"][:30].reshape(30, -1).astype(np.float32) / 16.0]
    with open_runner(model) as runner:
        xnnpack = runner.run(runner.prepare(inputs))
    off = [np.clip(y.astype(np.int16) + 40, -128, 127).astype(y.dtype) for y in xnnpack]  # a wrong TFLM kernel
    found = kernel_comparison(model, inputs, off, xnnpack)
    assert found["xnnpack_vs_builtin"] <= MCU_TOLERANCE["max_steps"] < found["tflm_vs_builtin"]
    assert "differs from both of LiteRT's kernel sets" in found["verdict"]
    fragile = kernel_verdict({"tflm_vs_xnnpack": 68, "tflm_vs_builtin": 3, "xnnpack_vs_builtin": 68}, 8)
    assert fragile.startswith("the model is fragile in int8") and "68 steps" in fragile
    assert "matches LiteRT's builtin" in kernel_verdict(
        {"tflm_vs_xnnpack": 12, "tflm_vs_builtin": 1, "xnnpack_vs_builtin": 5}, 8)
