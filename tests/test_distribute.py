"""tf.distribute on CPU: MirroredStrategy over 2 logical devices; a real 2-process multi-worker run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.slow

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0", PYTHONPATH=str(ROOT))


def test_mirrored_over_two_logical_cpus(tmp_path):
    script = (
        "import tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "from edgedl.api import train\n"
        f"m = train(model='mlp', data='digits8x8', epochs=10, strategy='mirrored', out={str(tmp_path / 'run')!r},"
        " verbose=0)\n"
        "print(m['training']['replicas'], m['training']['global_batch_size'], m['metrics']['test_accuracy'])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=ENV, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    replicas, global_batch, accuracy = out.stdout.splitlines()[-1].split()  # after the decisions train prints
    assert replicas == "2" and int(global_batch) == 2 * 64 and float(accuracy) > 0.3
    assert json.loads((tmp_path / "run" / "manifest.json").read_text())["training"]["strategy"] == "mirrored"


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_worker_run_on_localhost(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(2):
        env = dict(ENV, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "edgedl", "train", "--model", "mlp", "--data", "digits8x8", "--epochs", "6",
             "--strategy", "multiworker", "--out", str(tmp_path / f"out{index}")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (_stdout, stderr) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, stderr[-2000:]
    chief = json.loads((tmp_path / "out0" / "manifest.json").read_text())
    assert chief["training"]["strategy"] == "multiworker" and chief["training"]["replicas"] == 2
    assert (tmp_path / "out0" / "model.keras").exists()
    assert not (tmp_path / "out1").exists(), "only the chief writes artifacts"
    assert "not the chief" in outputs[1][0]
    assert chief["metrics"]["test_accuracy"] > 0.5
