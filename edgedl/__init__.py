"""edgedl: take a Keras model from training to a phone or a Raspberry Pi, proving on the way that nothing broke.

The Python API mirrors the CLI. Heavy libraries (TensorFlow, runtimes) are imported only when a
function that needs them is called.
"""

from __future__ import annotations

__version__ = "0.1.0"

_API = {
    "train": ("edgedl.api", "train"),
    "export": ("edgedl.api", "export"),
    "validate": ("edgedl.api", "validate"),
    "bench": ("edgedl.api", "bench"),
    "bundle": ("edgedl.api", "bundle"),
    "pipeline": ("edgedl.api", "pipeline"),
    "inspect": ("edgedl.api", "inspect"),
}

__all__ = sorted(_API) + ["__version__"]


def __getattr__(name: str):
    if name in _API:
        import importlib

        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'edgedl' has no attribute {name!r}")
