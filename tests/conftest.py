"""Shared fixtures: tiny models trained once per session on scikit-learn's 8×8 digits."""

from __future__ import annotations

import os
import shutil
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
    """mlp, cnn, lstm and lstm_seq trained for 12 epochs on 8×8 digits, with every export: built once by
    tools/make_test_models.py (test_subject.py fails when they are stale) and copied for each session."""
    sys.path.insert(0, str(ROOT / "tools"))
    import make_test_models

    source = make_test_models.OUT
    if not make_test_models.is_fresh():  # the staleness test fails the suite; this session still gets real ones
        source = make_test_models.build(tmp_path_factory.mktemp("tiny-built") / "tiny")
    root = tmp_path_factory.mktemp("runs")
    return {arch: Path(shutil.copytree(source / arch, root / arch)) for arch in make_test_models.ARCHS}


@pytest.fixture(scope="session")
def tiny_exports(tiny_runs) -> dict[str, Path]:
    """Every seed architecture × format × precision (exported when the models were built)."""
    return {arch: run / "exports" for arch, run in tiny_runs.items()}


def pytest_configure(config):
    sys.path.insert(0, str(ROOT))


# Tests that train or convert real models take seconds each: they form the slow tier, and
# `pytest -m "not slow"` runs the rest in well under a minute (README, Development).
SLOW_FIXTURES = {"tiny_runs", "tiny_exports", "cnn_bundle", "seed_bundles", "seed_reports", "mlp_bundle", "wide_mlp"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(item.fixturenames) or item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.slow)
