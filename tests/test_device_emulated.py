"""Every seed model's int8 bundle, and the CNN's fp32 one (XNNPACK's float paths), self-test on an emulated
Raspberry Pi 4 and 5 under both runtimes."""

from __future__ import annotations

import os
import shutil

import pytest

# Setting up the emulator installs qemu-user-static with apt-get: that needs root (CI has it).
_CAN_EMULATE = shutil.which("qemu-aarch64-static") is not None or os.geteuid() == 0
pytestmark = [pytest.mark.emulated, pytest.mark.slow,
              pytest.mark.skipif(not _CAN_EMULATE, reason="needs qemu-user-static, or root to install it")]


@pytest.fixture(scope="module")
def seed_bundles(tiny_exports, tmp_path_factory):
    from edgedl.api import bundle

    root = tmp_path_factory.mktemp("bundles")
    made = {}
    for arch, precision in (("mlp", "int8"), ("cnn", "int8"), ("lstm", "int8"), ("cnn", "fp32")):
        out = root / f"{arch}_{precision}"
        # 12-epoch test models are less confident than trained ones: loosen the int8 bar
        bundle(tiny_exports[arch] / f"{arch}_{precision}.tflite", out, min_agreement=0.95, max_accuracy_drop=0.03)
        made[(arch, precision)] = out
    return made


def test_seed_bundles_on_emulated_pi(seed_bundles):
    from edgedl.deploy.device_check import device_check

    lines = []
    for (arch, precision), folder in seed_bundles.items():
        report = device_check(folder, samples=40, say=lines.append)
        assert report["passed"], "\n".join(lines)
        for check in report["checks"]:
            assert check["emulator_selfcheck"]["detail"] == "bit-identical", check
            # run.py --self-test ran on the emulated device and printed its two ✓ lines
            assert check["step"] == "done", check
            assert check["self_test_output"].count("✓") == 2 and "golden vectors" in check["self_test_output"]
            if precision == "int8":  # ARM int8 kernels may round a rare value 1 step differently
                assert check["max_steps"] <= 1 and check["agreement"] == 1.0, (arch, check)
                assert check["identical_values"] >= 0.99 * check["values"], (arch, check)
            if precision == "fp32":
                assert check["max_abs"] <= 1e-5
        assert {c["profile"] for c in report["checks"]} == {"rpi4", "rpi5"}


def test_mis_set_emulator_is_caught(seed_bundles, monkeypatch):
    """qemu's default CPU ('max') gives wrong int8 results: the self-check must refuse to trust it."""
    from edgedl.deploy.device_check import device_check

    monkeypatch.setenv("RPI_EMU_QEMU_CPU", "max")
    report = device_check(seed_bundles[("cnn", "int8")], profiles=["rpi4"], runtimes=["litert"], samples=0,
                          say=lambda m: None)
    check = report["checks"][0]
    assert not report["passed"] and check["step"] == "emulator self-check"
