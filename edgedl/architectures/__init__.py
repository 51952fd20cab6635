"""Seed architectures, registered by name, and the facts declared beside each one.

A user's own architecture needs no edit here: ``--model my_file.py:build`` or
``--model my_package.module:build`` names any function ``build(input_shape, num_classes)`` that
returns a Keras model. Any ``.keras`` file works too.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError


@dataclass(frozen=True)
class Architecture:
    """How to build a model, and what is known about it before any export.

    ``tolerances`` maps a precision to the parity limits validate applies by default.
    ``training`` holds the settings that reach the documented accuracy (docs/BENCHMARKS.md).
    """

    name: str
    build: Callable
    summary: str
    training: dict = field(default_factory=dict)
    tolerances: dict = field(default_factory=dict)
    recurrent: bool = False


# Default parity limits, per precision. fp32 exports compute the same maths in another order,
# so they agree to rounding; fp16 stores weights in half precision (about 3 decimal digits);
# int8 is judged by what it decides (agreement, accuracy) and by error in quantization steps.
DEFAULT_TOLERANCES = {
    "fp32": {"atol": 1e-5, "min_agreement": 0.999, "max_accuracy_drop": 0.001},
    "fp16": {"atol": 1e-2, "min_agreement": 0.995, "max_accuracy_drop": 0.003},
    # dynamic-range quantizes weights (and activations on the fly): judged like int8, by decisions.
    "dynamic": {"atol": None, "min_agreement": 0.99, "max_accuracy_drop": 0.005},
    "int8": {"atol": None, "min_agreement": 0.99, "max_accuracy_drop": 0.005, "max_mean_error_steps": 2.0},
}

_REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    _REGISTRY[arch.name] = arch
    return arch


def names() -> list[str]:
    _load_seeds()
    return sorted(_REGISTRY)


def get(name: str) -> Architecture:
    _load_seeds()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        return _from_reference(name)
    raise UsageError(
        f"unknown model {name!r}",
        hint=f"choose one of {', '.join(names())}, a .keras file, or file.py:function",
    )


def tolerances_for(arch_name: str | None, precision: str) -> dict:
    limits = dict(DEFAULT_TOLERANCES.get(precision, DEFAULT_TOLERANCES["fp32"]))
    if arch_name:
        _load_seeds()
        arch = _REGISTRY.get(arch_name)
        if arch is not None:
            limits.update(arch.tolerances.get(precision, {}))
    return limits


def _load_seeds() -> None:
    from . import cnn, lstm, mlp  # noqa: F401  (registers on import)


def _from_reference(reference: str) -> Architecture:
    """``path/to/file.py:function`` or ``package.module:function``."""
    target, _, attr = reference.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.exists():
                raise UsageError(f"architecture file not found: {path}")
            spec = importlib.util.spec_from_file_location(f"edgedl_user_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        build = getattr(module, attr)
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise UsageError(f"cannot load architecture {reference!r}: {exc}") from exc
    return Architecture(name=reference, build=build, summary=f"user architecture {reference}")
