"""Which Keras backend trains: TensorFlow, JAX or PyTorch. Export always runs on TensorFlow.

A Keras 3 model trained on any backend saves a ``.keras`` file every backend loads, so edgedl trains
wherever the user's GPU is supported and converts with TensorFlow, the only converter to TFLite.
Training on JAX or PyTorch runs in a child process (``backend_child.py``) whose ``KERAS_BACKEND`` is
set before Keras is imported and which never imports TensorFlow; this process and the export worker
stay on TensorFlow.

``auto`` picks the backend that sees a GPU — TensorFlow, then JAX, then PyTorch, each asked in a
child process — and TensorFlow on the CPU when none does (without asking anyone when the machine
has no NVIDIA device node at all: the common case costs nothing).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from ..core.env import TRAINING_BACKEND
from ..core.errors import TrainingError, UsageError
from ..core.files import temp_dir

BACKENDS = ("auto", "tensorflow", "jax", "torch")
EXTRA = {"jax": 'pip install -e ".[jax]"  (jax[cpu]==0.10.2; on a CUDA machine jax[cuda12]==0.10.2)',
         "torch": 'pip install -e ".[torch]"  (torch==2.13.0)'}
MODULE = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}

# What each backend says about GPUs, asked in a child so that this process imports none of them.
PROBES = {
    "tensorflow": "import os, json; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'; import tensorflow as tf; "
                  "print(json.dumps([d.name for d in tf.config.list_physical_devices('GPU')]))",
    "jax": "import json, jax; print(json.dumps([str(d) for d in jax.devices() if d.platform == 'gpu']))",
    "torch": "import json, torch; print(json.dumps([torch.cuda.get_device_name(i) "
             "for i in range(torch.cuda.device_count())]))",
}


def installed(backend: str) -> bool:
    return importlib.util.find_spec(MODULE[backend]) is not None


def choose(requested: str, say=print) -> str:
    """The backend to train with, said out loud; a backend asked for by name must be installed."""
    if requested not in BACKENDS:
        raise UsageError(f"unknown backend {requested!r}; choose one of {', '.join(BACKENDS)}")
    if requested != "auto":
        if not installed(requested):
            raise UsageError(f"--backend {requested}: {MODULE[requested]} is not installed", hint=EXTRA[requested])
        return requested
    if not any(Path(node).exists() for node in ("/dev/nvidiactl", "/dev/nvidia0")):
        say("backend: tensorflow (auto: no NVIDIA GPU device on this machine, training on the CPU)")
        return "tensorflow"
    for backend in ("tensorflow", "jax", "torch"):
        gpus = _probe(backend) if installed(backend) else []
        if gpus:
            say(f"backend: {backend} (auto: it sees {len(gpus)} GPU(s): {', '.join(gpus)})")
            return backend
    say("backend: tensorflow (auto: an NVIDIA device is present but no installed backend sees it; "
        "a CUDA build is needed: docs/TRAINING.md)")
    return "tensorflow"


def _probe(backend: str) -> list[str]:
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}  # a probe must not grab the card
    try:
        done = subprocess.run([sys.executable, "-c", PROBES[backend]], capture_output=True, text=True, timeout=120,
                              env=env)
        return json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else []
    except (subprocess.TimeoutExpired, json.JSONDecodeError, IndexError):
        return []


def check_combination(backend: str, strategy: str, qat_epochs: int) -> None:
    """What only TensorFlow does stays TensorFlow's: refused up front, with the way out."""
    if backend in ("tensorflow", "auto"):
        return
    if strategy in ("mirrored", "multiworker"):
        raise UsageError(f"--strategy {strategy} is tf.distribute: multi-worker and mirrored training stay on "
                         f"TensorFlow, not {backend}", hint="use --backend tensorflow, or --strategy none")
    if qat_epochs:
        raise UsageError(f"quantization-aware training runs on TensorFlow, not {backend}",
                         hint=f"train on {backend}, then `edgedl finetune RUN --qat` (TensorFlow)")


def train_in_child(config, backend: str) -> dict:
    """Run ``fit.train(config)`` in a child process with Keras on ``backend``; return its manifest.

    The child's progress goes straight to this process's stdout and stderr; its failure comes back as
    this process's error, in one line (the child writes it to the result file, not as a traceback)."""
    import functools

    from ..core.env import die_with_parent

    with temp_dir("train") as tmp:
        spec, result = Path(tmp) / "config.json", Path(tmp) / "result.json"
        spec.write_text(json.dumps({"config": _plain(config), "result": str(result)}))
        env = {**os.environ, "KERAS_BACKEND": backend, TRAINING_BACKEND: backend,
               "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONUNBUFFERED": "1"}
        if config.device == "cpu":  # decided before the backend is imported: it reads these once
            env.update(JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
        # No memory limit here (JAX reserves large virtual ranges), only: it dies with this process.
        done = subprocess.run([sys.executable, "-m", "edgedl.train.backend_child", str(spec)], env=env,
                              preexec_fn=functools.partial(die_with_parent, os.getpid()))
        outcome = json.loads(result.read_text()) if result.exists() else {}
        if "manifest" in outcome:
            return outcome["manifest"]
        message = outcome.get("error") or f"the training process ended with exit code {done.returncode}"
        raise (UsageError if outcome.get("usage") else TrainingError)(f"training on {backend}: {message}")


def _plain(config) -> dict:
    fields = dataclasses.asdict(config)
    fields["out"] = str(config.out)
    return fields
