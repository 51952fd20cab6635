"""Runners: one per backend, all with the same public face (see base.py). Backends load lazily.

Open a file with ``runners.open.open_runner``; ``runners.local`` maps a file to its backend. This
package module imports only the public types, so that no module of the folder imports its package.
"""

from __future__ import annotations

from .base import Runner, TensorInfo, dequantize, quantize

__all__ = ["Runner", "TensorInfo", "quantize", "dequantize"]
