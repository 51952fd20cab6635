"""The command line: fast --help without TensorFlow, exit codes, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import run_cli

COMMANDS = ["train", "finetune", "export", "validate", "bench", "bundle", "pipeline", "inspect", "device-check",
            "mcu-check", "firmware", "explore"]


def test_help_imports_no_tensorflow():
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from edgedl.cli import cli\n"
        f"for args in [['--help']] + [[c, '--help'] for c in {COMMANDS!r}]:\n"
        "    result = CliRunner().invoke(cli, args)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
        "heavy = [m for m in ('tensorflow', 'keras', 'onnxruntime', 'tf2onnx', 'ai_edge_litert') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_lists_every_command_with_its_summary(capsys):
    from edgedl.cli import cli

    assert sorted(cli.commands) == sorted(COMMANDS)
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    listing = out.split("Commands:", 1)[1].splitlines()  # the section click builds, not the docstring
    for name, command in cli.commands.items():
        summary = command.get_short_help_str(limit=40)[:20]
        assert any(line.strip().startswith(name) and summary in line for line in listing), (name, summary)


@pytest.mark.parametrize("args, code, message", [
    (["train", "--model", "nope"], 2, "unknown model 'nope'"),
    (["train", "--data", "/nonexistent/data.npz"], 1, "data file not found"),
    (["train", "--data", "mnist"], 1, "never downloads"),
    (["export", "/nonexistent.keras"], 1, "model not found"),
    (["export", "x.keras", "--format", "coreml"], 2, "unknown format 'coreml'"),
    (["export", "x.keras", "--format", "onnx", "--quantize", "fp16"], 2, "onnx has no fp16 mode"),
    (["inspect", "/nonexistent.tflite"], 1, "artifact not found"),
    (["bench", "/nonexistent.onnx"], 1, "artifact not found"),
    (["bundle", "model.onnx", "--out", "b"], 2, "bundles are built from .tflite"),
])
def test_bad_input_one_line_error(args, code, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    got, _, err = run_cli(args, capsys)
    assert got == code, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("edgedl: error: ") and message in last, err
    assert "Traceback" not in err
    assert sum(line.startswith("edgedl: error") for line in err.splitlines()) == 1


@pytest.mark.slow
def test_inspect_json_on_foreign_tflite(tmp_path, capsys):
    from test_export import tiny_tflite

    path = tiny_tflite(tmp_path)
    capsys.readouterr()  # the converter's own chatter
    code, out, _ = run_cli(["inspect", "--json", path], capsys)
    assert code == 0
    info = json.loads(out)[0]
    assert info["format"] == "tflite" and info["inputs"][0]["shape"][-1] == 4 and info["outputs"][0]["shape"][-1] == 3
