"""The registry of architectures: the seed ones by name, and a user's own by reference.

This module imports the seed modules (they never import it back), so the package and its
children hold no import cycle. A user's own architecture needs no edit here:
``--model my_file.py:build`` or ``--model my_package.module:build`` names any function
``build(input_shape, num_classes)`` that returns a Keras model.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from ...core.errors import UsageError
from . import cnn, lstm, mlp
from .base import DEFAULT_TOLERANCES, Architecture

_REGISTRY: dict[str, Architecture] = {arch.name: arch for module in (mlp, cnn, lstm) for arch in module.ARCHITECTURES}


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Architecture:
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
    arch = _REGISTRY.get(arch_name) if arch_name else None
    if arch is not None:
        limits.update(arch.tolerances.get(precision, {}))
    return limits


def _from_reference(reference: str) -> Architecture:
    """``path/to/file.py:function`` or ``package.module:function``."""
    target, _, attr = reference.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.exists():
                raise UsageError(f"architecture file not found: {path}")
            print(f"importing architecture code from {path.resolve()} (function {attr}): it runs as Python",
                  file=sys.stderr)  # code about to run is never silent
            spec = importlib.util.spec_from_file_location(f"edgedl_user_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        build = getattr(module, attr)
    except (ImportError, AttributeError, SyntaxError) as exc:
        raise UsageError(f"cannot load architecture {reference!r}: {exc}") from exc
    return Architecture(name=reference, build=build)
