"""Firmware: the seed MLP bundle's own mcu/ files compiled for Cortex-M4 and Cortex-M0+ with CMSIS-NN
against the pinned TFLite Micro tree (``../shared/tflm``, or $EDGEDL_TFLM_ROOT), run on qemu's boards.

The library is compiled once for the session into a session cache folder (XDG_CACHE_HOME), only the
sources the MLP's link needs. Without the Arm toolchain these tests skip locally; on CI (CI=true,
where .ci/run installs it) they fail instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from edgedl.deploy.boards import BOARDS, board_core
from edgedl.deploy.firmware_build import DEBIAN_PACKAGES, TOOLS

TREE = Path(os.environ.get("EDGEDL_TFLM_ROOT") or ROOT.parent / "shared" / "tflm")


def _need_toolchain():
    missing = [tool for tool in TOOLS if shutil.which(tool) is None] + ([] if TREE.is_dir() else [str(TREE)])
    if missing and os.environ.get("CI"):
        pytest.fail(f"CI must provide {', '.join(missing)} (apt-get install {DEBIAN_PACKAGES}; ../shared/tflm)")
    if missing:
        pytest.skip(f"no {', '.join(missing)} here")


@pytest.fixture(scope="session")
def firmware_cache(tmp_path_factory):
    """One cache for the session: the cold library build is paid once per core. EDGEDL_TEST_FIRMWARE_CACHE
    names a folder to keep between sessions instead (a developer's warm cache)."""
    folder = Path(os.environ.get("EDGEDL_TEST_FIRMWARE_CACHE") or tmp_path_factory.mktemp("xdg-cache"))
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(folder)
    yield folder
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


@pytest.fixture(scope="module")
def fw_bundle(tiny_runs, tmp_path_factory):
    """The seed MLP (the pre-built tiny one: 12 epochs on 8×8 digits), its int8 file bundled with its mcu/
    folder."""
    _need_toolchain()
    from edgedl.api import bundle

    out = tmp_path_factory.mktemp("firmware") / "mlp_int8"
    bundle(tiny_runs["mlp"] / "exports" / "mlp_int8.tflite", out, targets=["mcu"], min_agreement=0.95,
           max_accuracy_drop=0.03)
    return out


@pytest.fixture(scope="module")
def m4_run(fw_bundle, firmware_cache):
    from edgedl.deploy.firmware import firmware

    x86_arena = json.loads((fw_bundle / "manifest.json").read_text())["mcu"]["arena"]["with_margin"]
    report = firmware(fw_bundle, core_name="cortex-m4", tflm=str(TREE), say=lambda m: None)
    return report, x86_arena


@pytest.mark.slow  # trains and bundles an MLP; builds firmware
def test_mlp_firmware_passes_on_cortex_m4_and_the_bundle_records_it(m4_run, fw_bundle):
    report, _ = m4_run
    assert report["passed"] and report["max_steps"] <= 8 and report["golden_vectors"] == 8, report["output"]
    manifest = json.loads((fw_bundle / "manifest.json").read_text())
    record = manifest["firmware"]["cortex-m4"]
    assert record["passed"] and record["board"] == "mps2-an386" and "CMSIS-NN" in record["kernels"]
    flash, ram = record["memory"]["flash"], record["memory"]["ram"]
    size = record["memory"]["size"]
    assert flash["total"] == size["text"] + size["data"] and ram["total"] == size["data"] + size["bss"]
    model_bytes = manifest["model"]["size"]
    assert model_bytes <= flash["model"] < model_bytes + 16  # the model's array, 16-byte aligned
    assert flash["tflm"] > 10_000 and flash["libc_startup"] > 5_000 and flash["strings_padding"] >= 0
    assert ram["app"] >= record["arena"]["recorded"]  # the arena is a static array of main.cc
    ins = record["instructions"]
    assert ins["invokes"] == 8 and 0 < ins["min"] <= ins["per_invoke"] <= ins["max"]
    assert record["estimates"]["cpi_assumed"] == 1.0 and "estimate" in record["estimates"]["label"]
    assert "Arduino Nano 33 BLE Sense" in record["estimates"]["ms_at"]  # a Cortex-M4 board
    nano = record["boards"]["nano33ble"]  # a Cortex-M4 board: fitted with the linked image's numbers
    assert nano["basis"].startswith("firmware") and nano["fits"]
    assert nano["ram_headroom"] == nano["usable_ram"] - ram["total"]
    assert nano["flash_headroom"] == nano["usable_flash"] - (flash["total"] - flash["golden"])
    assert record["boards"]["esp32s3"]["basis"].startswith("not emulated")
    assert "mcu-check" in record["boards"]["stm32h743"]["basis"]  # a Cortex-M7: no run for it here
    readme_table = (TREE / "README.md").read_text()
    assert record["build"]["commits"]["tflite_micro"] in readme_table
    assert record["build"]["commits"]["cmsis_nn"] in readme_table
    assert record["build"]["compiler"].startswith("arm-none-eabi-g++")
    assert "Firmware on emulated Cortex-M cores" in (fw_bundle / "README.md").read_text()


@pytest.mark.slow  # trains and bundles an MLP; builds firmware
def test_recorded_arena_is_the_32_bit_one_within_the_margin(m4_run, fw_bundle):
    report, x86_arena = m4_run
    used = report["arena"]["used"]
    manifest = json.loads((fw_bundle / "manifest.json").read_text())
    recorded = manifest["mcu"]["arena"]["with_margin"]
    minimum = report["arena"]["minimum"]  # bisected on the core: the smallest arena that passes
    assert used <= minimum <= recorded <= minimum * 1.05 + 256 + 16, (used, minimum, recorded)  # 16-byte steps
    assert recorded < x86_arena  # x86-64's pointers and structs are wider than the 32-bit core's
    main_cc = (fw_bundle / "mcu" / "main.cc").read_text()
    assert f"constexpr int kArenaSize = {recorded};" in main_cc
    assert f"constexpr int kArenaSize = {x86_arena};  // mcu-check, x86-64" in main_cc  # the 64-bit host keeps its own
    assert report["arena"]["recorded"] == recorded  # the confirming run used the arena the bundle ships


@pytest.mark.slow  # trains and bundles an MLP; builds firmware
def test_mlp_firmware_passes_on_cortex_m0plus_through_the_cli(m4_run, fw_bundle, capsys):
    code, out, err = run_cli(["firmware", fw_bundle, "--core", "cortex-m0plus", "--tflm", TREE], capsys)
    assert code == 0, err
    assert "PASS on cortex-m0plus (microbit" in out and "instructions per Invoke" in out
    assert re.search(r"flash [\d,]+ B = model [\d,]+ \+ TFLite Micro and kernels [\d,]+ \+ C library", out)
    manifest = json.loads((fw_bundle / "manifest.json").read_text())
    assert set(manifest["firmware"]) == {"cortex-m4", "cortex-m0plus"}


@pytest.mark.slow  # trains and bundles an MLP; builds firmware
def test_a_changed_golden_output_makes_the_firmware_fail(m4_run, fw_bundle, tmp_path, capsys):
    mcu = tmp_path / "mcu"
    shutil.copytree(fw_bundle / "mcu", mcu)
    golden = (mcu / "golden_data.cc").read_text()
    start = golden.index("kGoldenOutput0[")
    brace = golden.index("{", start) + 1
    first = golden[brace:].split(",")[0]
    changed = max(-128, min(127, int(first) + 60 if int(first) < 60 else int(first) - 60))
    (mcu / "golden_data.cc").write_text(golden[:brace] + golden[brace:].replace(first, f"\n  {changed}", 1))
    code, out, err = run_cli(["firmware", mcu, "--core", "m4", "--tflm", TREE], capsys)
    assert code == 1 and "FAIL on cortex-m4" in err and "60 int8 step(s)" in err, (out, err)
    assert "full log:" in err and len(err.strip().splitlines()) == 1


def test_no_tree_says_how_to_make_one(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("EDGEDL_TFLM_ROOT", raising=False)
    (tmp_path / "mcu").mkdir()
    for name in ("main.cc", "model_data.cc", "golden_data.cc"):
        (tmp_path / "mcu" / name).write_text("// placeholder: never compiled, the tree is checked first\n")
    if all(shutil.which(tool) for tool in TOOLS):
        code, _, err = run_cli(["firmware", tmp_path, "--core", "m4"], capsys)
        assert code == 2 and "create_tflm_tree.py" in err and len(err.strip().splitlines()) == 1, err
        code, _, err = run_cli(["firmware", tmp_path, "--core", "m4", "--tflm", tmp_path], capsys)
        assert code == 1 and "is not a TFLite Micro tree" in err and len(err.strip().splitlines()) == 1, err
    code, _, err = run_cli(["firmware", tmp_path / "model.tflite", "--core", "m4"], capsys)
    assert code == 2 and "edgedl bundle" in err
    code, _, err = run_cli(["firmware", tmp_path, "--target", "esp32s3"], capsys)
    assert code == 2 and "Xtensa" in err and "no Cortex-M core" in err, err


def test_boards_know_their_cortex_m_core():
    assert board_core(BOARDS["nano33ble"]) == ("cortex-m4", 64)
    assert board_core(BOARDS["stm32h743"]) == ("cortex-m7", 480)
    assert board_core(BOARDS["nrf5340"]) == ("cortex-m33", 128)
    assert board_core(BOARDS["esp32s3"]) is None
    cores = {board_core(b)[0] for b in BOARDS.values() if board_core(b)}
    assert {"cortex-m4", "cortex-m7", "cortex-m33"} <= cores


@pytest.mark.slow  # trains and bundles an MLP; builds TFLite Micro for the host
def test_the_bundles_cmake_project_builds_and_passes_on_the_host(fw_bundle, firmware_cache, capsys):
    if shutil.which("cmake") is None and not os.environ.get("CI"):
        pytest.skip("no cmake here")
    code, out, err = run_cli(["firmware", fw_bundle, "--host", "--tflm", TREE], capsys)
    assert code == 0, err
    assert "PASS on this machine through CMake" in out and "worst difference 0 int8 step(s)" in out


def test_an_image_larger_than_the_emulated_board_is_refused_with_the_numbers(tmp_path):
    from edgedl.deploy.firmware import CORES, _check_fits
    from edgedl.deploy.firmware_build import FirmwareError

    log = tmp_path / "build.log"
    m0, m55 = CORES["cortex-m0plus"], CORES["cortex-m55"]
    fits = {"end": 0x20000000 + 8 * 1024, "code_end": 200 * 1024, "data_end": 0x20000000 + 8 * 1024}
    _check_fits(fits, m0, log)  # 200 KB of flash, 8 KB + stack of RAM: fits the micro:bit
    with pytest.raises(FirmwareError, match=r"needs 307,200 B of flash; microbit has 256 KB"):
        _check_fits(fits | {"code_end": 300 * 1024}, m0, log)
    with pytest.raises(FirmwareError, match=r"needs 17,408 B of RAM with the stack; microbit has 16 KB"):
        _check_fits(fits | {"data_end": 0x20000000 + 13 * 1024}, m0, log)
    with pytest.raises(FirmwareError, match=r"mps3-an547 has 512 KB"):
        _check_fits({"end": 600 * 1024, "code_end": 590 * 1024, "data_end": 600 * 1024}, m55, log)


def test_an_optional_firmware_check_is_skipped_with_its_reason_and_never_passed(tmp_path, monkeypatch):
    from edgedl.deploy.firmware import firmware_cell, firmware_check

    monkeypatch.delenv("EDGEDL_TFLM_ROOT", raising=False)
    (tmp_path / "mcu").mkdir()
    (tmp_path / "mcu" / "main.cc").write_text("// placeholder: never compiled, the check is skipped first\n")
    said = []
    xtensa = firmware_check(tmp_path, "esp32s3", None, say=said.append)
    assert xtensa["passed"] is None and "not a Cortex-M core" in xtensa["skipped"]
    no_tree = firmware_check(tmp_path, "nano33ble", None, say=said.append)
    assert no_tree["passed"] is None and re.search(r"no TFLite Micro tree|arm-none-eabi", no_tree["skipped"])
    assert firmware_cell(no_tree).startswith("skipped: ") and "PASS" not in firmware_cell(no_tree)
    assert all(line.startswith("firmware check skipped: ") for line in said)
    assert firmware_check(tmp_path / "nothing", "nano33ble", str(TREE), say=said.append)["skipped"].endswith(
        "has no mcu/ folder")


@pytest.mark.slow  # trains and bundles an MLP; builds firmware (the library is warm after the M4 run)
def test_a_boards_firmware_verdict_for_the_report(m4_run, fw_bundle, tmp_path):
    from edgedl.deploy.firmware import firmware_cell, firmware_check

    copy = tmp_path / "bundle"
    shutil.copytree(fw_bundle, copy)
    verdict = firmware_check(copy, "nano33ble", str(TREE), say=lambda m: None)
    assert verdict["passed"] and verdict["core"] == "cortex-m4" and verdict["max_steps"] == 0
    assert verdict["instructions"] > 0 and verdict["arena"] > 0 and verdict["flash"] > verdict["arena"]
    cell = firmware_cell(verdict)
    assert cell.startswith("PASS on cortex-m4, 0 step(s)") and "(estimate, CPI 1.0)" in cell


@pytest.mark.slow  # builds firmware (the library is warm after the M4 run)
def test_an_arena_too_small_for_the_cores_kernels_grows_to_what_passes(m4_run, fw_bundle, tmp_path, capsys):
    """CMSIS-NN's LSTM asked for 2,960 B of scratch that mcu-check's reference kernels never did: the
    shipped arena failed AllocateTensors on every core, and the refit only ever shrank it."""
    report, _ = m4_run
    bundle = tmp_path / "bundle"
    shutil.copytree(fw_bundle, bundle)
    main_cc = (bundle / "mcu" / "main.cc").read_text()
    short = report["arena"]["minimum"] - 512
    (bundle / "mcu" / "main.cc").write_text(re.sub(r"(#else  // 32-bit[^\n]*\nconstexpr int kArenaSize = )\d+;",
                                                   lambda m: f"{m.group(1)}{short};", main_cc))
    code, out, err = run_cli(["firmware", bundle, "--core", "m4", "--tflm", TREE], capsys)
    assert code == 0 and "too small on cortex-m4: searching upward" in out + err, (out, err)
    grown = json.loads((bundle / "manifest.json").read_text())["mcu"]["arena"]["with_margin"]
    assert grown >= report["arena"]["minimum"] > short
    assert f"constexpr int kArenaSize = {grown};" in (bundle / "mcu" / "main.cc").read_text()


@pytest.mark.slow  # exports and bundles a token model; builds firmware
def test_a_token_model_bundle_passes_its_golden_check_on_cortex_m4(firmware_cache, tmp_path, capsys):
    """int32 token ids were copied into the golden data as int8 (cut, and a quarter of the bytes)."""
    _need_toolchain()
    import keras
    import numpy as np

    tokens = keras.Input((12,), dtype="int32", name="tokens")
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Embedding(300, 8, name="embed")(tokens))
    model = keras.Model(tokens, keras.layers.Dense(3, activation="softmax", name="probs")(pooled))
    rng = np.random.default_rng(0)
    model.set_weights([w * 0 + rng.normal(0, 2.0, w.shape).astype(np.float32) for w in model.get_weights()])
    model.save(tmp_path / "t.keras")  # untrained, with weights wide enough that int8 keeps every decision
    ids = rng.integers(0, 300, (64, 12)).astype(np.int32)  # ids above 127 too
    np.savez(tmp_path / "calibration.npz", tokens=ids)
    np.savez(tmp_path / "heldout.npz", x=ids[:32], y=model.predict(ids[:32], verbose=0).argmax(-1))
    (tmp_path / "t.card.toml").write_text('task = "classification"\n[data]\nheldout = "heldout.npz"\n'
                                         'calibration = "calibration.npz"\n')
    assert run_cli(["export", tmp_path / "t.keras", "-q", "int8", "--target", "mcu", "--out", tmp_path / "e"],
                   capsys)[0] == 0
    code, out, err = run_cli(["bundle", tmp_path / "e" / "t_int8.tflite", "--target", "mcu", "--out",
                              tmp_path / "b"], capsys)
    assert code == 0, out + err
    assert "extern const int32_t kGoldenInput0[];" in (tmp_path / "b" / "mcu" / "golden_data.h").read_text()
    code, out, err = run_cli(["firmware", tmp_path / "b", "--core", "m4", "--tflm", TREE], capsys)
    assert code == 0 and "PASS on cortex-m4" in out, (out, err)
