"""Runners: one per backend, all with the same ``infer`` (see base.py). Backends load lazily."""

from __future__ import annotations

from pathlib import Path

from .base import Runner, TensorInfo, dequantize, quantize

BACKENDS = {"tflite": "litert", "onnx": "onnxruntime", "keras": "keras"}


def backend_for(path: str | Path) -> str:
    """The runner for a file, by its suffix (the one place suffixes are mapped: edgedl.inspect)."""
    from ..inspect import format_of

    return BACKENDS[format_of(path)]


def open_runner(path: str | Path, threads: int = 1, xnnpack: bool = True, safe_mode: bool = True,
                isolated: bool = True) -> Runner:
    """A runner for ``path``, chosen by its suffix.

    ``isolated`` first loads .tflite/.onnx files in a child process (edgedl.isolation), so a file
    that crashes the native runtime becomes an ArtifactError instead of killing this process.
    """
    backend = backend_for(path)
    if isolated and backend != "keras":
        from ..isolation import probe

        probe(path)
    if backend == "litert":
        from .litert import LiteRTRunner

        return LiteRTRunner(path, threads=threads, xnnpack=xnnpack)
    if backend == "onnxruntime":
        from .onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, threads=threads)
    from .keras import KerasRunner

    return KerasRunner(path, safe_mode=safe_mode)


__all__ = ["Runner", "TensorInfo", "open_runner", "backend_for", "quantize", "dequantize"]
