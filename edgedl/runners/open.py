"""``open_runner``: what every caller (validate, bench's child, bundle, mcu-check, drift) opens a file with."""

from __future__ import annotations

from pathlib import Path

from .base import Runner
from .local import backend_for, local_runner


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
    return local_runner(path, backend, threads=threads, xnnpack=xnnpack, safe_mode=safe_mode)
