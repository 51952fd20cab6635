"""The one place a file is mapped to its backend, and a backend runner made in this process.

Below both ``open.py`` (which may isolate the runner in a child process) and ``isolation.py``
(whose child makes the runner here), so neither imports the other's package or module.
"""

from __future__ import annotations

from pathlib import Path

from ..core.layout import format_of
from .base import Runner

BACKENDS = {"tflite": "litert", "onnx": "onnxruntime", "keras": "keras"}


def backend_for(path: str | Path) -> str:
    """The runner for a file, by its suffix."""
    return BACKENDS[format_of(path)]


def local_runner(path: str | Path, backend: str, threads: int | None = 1, xnnpack: bool = True,
                 safe_mode: bool = True) -> Runner:
    """A runner in this process. Only for files edgedl itself just wrote, or inside an isolated child."""
    if backend == "litert":
        from .litert import LiteRTRunner

        return LiteRTRunner(path, threads=threads, xnnpack=xnnpack)
    if backend == "onnxruntime":
        from .onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, threads=threads)
    from .keras import KerasRunner

    return KerasRunner(path, safe_mode=safe_mode, threads=threads)
