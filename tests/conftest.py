"""Shared fixtures: tiny models trained once per session on scikit-learn's 8×8 digits."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parent.parent


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run ``edgedl ARGS`` in-process the way the console script does; return (exit code, out, err)."""
    from edgedl.cli import main

    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory) -> dict[str, Path]:
    """mlp, cnn, lstm and lstm_seq trained for 12 epochs on 8×8 digits (seconds each)."""
    from edgedl.api import train

    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for arch in ("mlp", "cnn", "lstm", "lstm_seq"):
        out = root / arch
        train(model=arch, data="digits8x8", epochs=12, out=out, calibration_samples=64, verbose=0)
        runs[arch] = out
    return runs


@pytest.fixture(scope="session")
def tiny_exports(tiny_runs) -> dict[str, Path]:
    """Every seed architecture × format × precision, exported once for the session."""
    from edgedl.export import export, plan_targets

    targets, _ = plan_targets(["tflite", "onnx"], ["none", "fp16", "dynamic", "int8"])
    folders = {}
    for arch, run in tiny_runs.items():
        export(run, targets)
        folders[arch] = run / "exports"
    return folders


def pytest_configure(config):
    sys.path.insert(0, str(ROOT))


# Tests that train or convert real models take seconds each: they form the slow tier, and
# `pytest -m "not slow"` runs the rest in well under a minute (README, Development).
SLOW_FIXTURES = {"tiny_runs", "tiny_exports", "cnn_bundle", "seed_bundles", "seed_reports", "mlp_bundle", "wide_mlp"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames) or item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.slow)
