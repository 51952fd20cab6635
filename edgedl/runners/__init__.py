"""Runners: one per backend, all with the same public face (see base.py). Backends load lazily.

``open_runner`` is the one place a file is mapped to its backend; every caller (validate, bench's
child process, bundle, drift, ONNX recipe scoring) goes through it or a Runner's public methods.
"""

from __future__ import annotations

from pathlib import Path

from ..core.layout import format_of
from .base import Runner, TensorInfo, dequantize, quantize

BACKENDS = {"tflite": "litert", "onnx": "onnxruntime", "keras": "keras"}


def backend_for(path: str | Path) -> str:
    """The runner for a file, by its suffix."""
    return BACKENDS[format_of(path)]


def open_runner(path: str | Path, threads: int | None = 1, xnnpack: bool = True, safe_mode: bool = True,
                isolated: bool = True, backend: str | None = None) -> Runner:
    """A runner for ``path``, chosen by its suffix unless ``backend`` names one.

    ``isolated`` runs .tflite/.onnx files in a bounded child process (runners.isolation): a file
    that crashes, hangs or exhausts the runtime becomes an ArtifactError and this process lives on.
    Pass False only for files edgedl itself just wrote, or inside such a child.
    ``threads`` None (or 0) keeps the runtime's own default, as an app that sets nothing gets.
    """
    backend = backend or backend_for(path)
    if isolated and backend != "keras":
        from .isolation import IsolatedRunner

        return IsolatedRunner(path, backend, threads=threads, xnnpack=xnnpack)
    if backend == "litert":
        from .litert import LiteRTRunner

        return LiteRTRunner(path, threads=threads, xnnpack=xnnpack)
    if backend == "onnxruntime":
        from .onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, threads=threads)
    from .keras import KerasRunner

    return KerasRunner(path, safe_mode=safe_mode, threads=threads)


__all__ = ["Runner", "TensorInfo", "open_runner", "backend_for", "quantize", "dequantize"]
