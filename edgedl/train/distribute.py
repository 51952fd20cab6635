"""Where and how training runs: device choice, tf.distribute strategies, mixed precision.

Only TensorFlow's own engines are used (MirroredStrategy, MultiWorkerMirroredStrategy); export is
the same whatever trained the model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

from ..core.env import import_tensorflow
from ..core.errors import UsageError

DEVICES = ("auto", "cpu", "gpu")
STRATEGIES = ("auto", "none", "mirrored", "multiworker")


@dataclass
class TrainingSetup:
    strategy: Any
    name: str
    replicas: int
    devices: list[str]
    is_chief: bool
    mixed_precision: bool
    workers: int = 1
    worker_index: int = 0


class _OneDevice:
    """The strategy of a JAX or PyTorch run: one process, one device, no tf.distribute."""

    num_replicas_in_sync = 1

    def scope(self):
        import contextlib

        return contextlib.nullcontext()


def configure_backend(backend: str, device: str = "auto", mixed_precision: bool = False) -> TrainingSetup:
    """Devices and precision for training on JAX or PyTorch (asked of that backend, not TensorFlow)."""
    if device not in DEVICES:
        raise UsageError(f"unknown --device {device!r}; choose one of {', '.join(DEVICES)}")
    gpus = _backend_gpus(backend)
    if device == "gpu" and not gpus:
        raise UsageError(f"--device gpu was asked for but {backend} sees no GPU",
                         hint="install the backend's CUDA build (docs/TRAINING.md), or use --device auto")
    mixed = _mixed_precision(mixed_precision, gpus)
    return TrainingSetup(strategy=_OneDevice(), name="none", replicas=1, devices=gpus or ["cpu"], is_chief=True,
                         mixed_precision=mixed)


def _backend_gpus(backend: str) -> list[str]:
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices() if d.platform == "gpu"]
    import torch

    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]


def configure(device: str = "auto", strategy: str = "auto", mixed_precision: bool = False) -> TrainingSetup:
    if device not in DEVICES:
        raise UsageError(f"unknown --device {device!r}; choose one of {', '.join(DEVICES)}")
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown --strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}")
    tf = import_tensorflow()
    gpus = _select_devices(tf, device)
    chosen = _choose_strategy(strategy, gpus)
    strategy_obj = _make_strategy(tf, chosen)
    mixed = _mixed_precision(mixed_precision, gpus)
    devices = [d.name for d in tf.config.list_logical_devices("GPU" if gpus else "CPU")]
    return TrainingSetup(
        strategy=strategy_obj,
        name=chosen,
        replicas=int(strategy_obj.num_replicas_in_sync),
        devices=devices,
        is_chief=_is_chief(),
        mixed_precision=mixed,
        workers=_tf_config_workers() if chosen == "multiworker" else 1,
        worker_index=_task_index() if chosen == "multiworker" else 0,
    )


def _select_devices(tf, device: str) -> list:
    gpus = tf.config.list_physical_devices("GPU")
    if device == "cpu" and gpus:
        tf.config.set_visible_devices([], "GPU")
        return []
    if device == "gpu" and not gpus:
        raise UsageError(
            "--device gpu was asked for but TensorFlow sees no GPU",
            hint="install tensorflow[and-cuda]==2.21.0 on a CUDA machine (docs/TRAINING.md), or use --device auto",
        )
    return gpus


def _choose_strategy(strategy: str, gpus: list) -> str:
    if strategy != "auto":
        return strategy
    if _tf_config_workers() > 1:
        return "multiworker"
    return "mirrored" if len(gpus) > 1 else "none"


def _make_strategy(tf, name: str):
    if name == "mirrored":
        # All local GPUs; without any, every logical CPU device (one, unless configured otherwise).
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy(devices=[d.name for d in devices])
    if name == "multiworker":
        if _tf_config_workers() < 1:
            raise UsageError("--strategy multiworker needs TF_CONFIG describing the cluster (docs/TRAINING.md)")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def _mixed_precision(requested: bool, gpus: list) -> bool:
    if not requested:
        return False
    if not gpus:
        # float16 matmuls on a CPU are slower than float32 and gain nothing; say so instead of doing it.
        import warnings

        warnings.warn("--mixed-precision only applies on a GPU; training in float32 on the CPU", stacklevel=2)
        return False
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    return True


def _tf_config() -> dict:
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UsageError(f"TF_CONFIG is not valid JSON: {exc}") from exc


def _tf_config_workers() -> int:
    cluster = _tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def _task_index() -> int:
    """Position of this task among all workers (a 'chief' task counts as the first)."""
    config = _tf_config()
    task = config.get("task", {})
    has_chief = "chief" in config.get("cluster", {})
    if task.get("type") == "chief":
        return 0
    return int(task.get("index", 0)) + (1 if has_chief else 0)


def _is_chief() -> bool:
    """Only the chief writes artifacts: the 'chief' task, or worker 0 when there is no chief."""
    config = _tf_config()
    task = config.get("task", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and "chief" not in config.get("cluster", {})
