"""One exception hierarchy for everything edgedl reports to a user.

Library code raises these; only the CLI turns them into a one-line message and an exit code.
Anything that is *not* an EdgedlError is a bug and keeps its traceback.
"""

from __future__ import annotations


class EdgedlError(Exception):
    """A failure the user can act on. ``exit_code`` is what the CLI returns."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint

    def one_line(self) -> str:
        text = str(self).strip().replace("\n", " ")
        return f"{text} ({self.hint})" if self.hint else text


class UsageError(EdgedlError):
    """The command line itself is wrong (unknown name, bad option value)."""

    exit_code = 2


class DataError(EdgedlError):
    """A dataset is missing, unreadable or does not fit the model."""


class ModelError(EdgedlError):
    """A model file is missing, corrupt or unsafe to load."""


class ArtifactError(EdgedlError):
    """An exported artifact is missing, corrupt, tampered with, or does not fit its manifest."""


class TrainingError(EdgedlError):
    """Training produced no usable model (diverged to NaN/Inf, or the architecture is unusable)."""


class ExportError(EdgedlError):
    """A conversion failed or cannot be done for this model."""


class RuntimeMissing(EdgedlError):
    """A runtime (LiteRT, onnxruntime, TensorFlow) needed for this step is not installed."""


class ParityFailure(EdgedlError):
    """An export is not faithful to its original. The report has already been printed."""


class GateFailure(EdgedlError):
    """A pipeline gate (accuracy, latency, size) failed."""


class DeviceError(EdgedlError):
    """A device reached over SSH cannot be used: unreachable, refused our key or host key, lacks a runtime, hung."""
