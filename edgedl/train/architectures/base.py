"""What an architecture is, and the parity limits every model gets unless its architecture says otherwise."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Architecture:
    """How to build a model, and what is known about it before any export.

    ``build(input_shape, num_classes)`` returns a Keras model; ``input_shape`` excludes the batch.
    ``tolerances`` maps a precision to the parity limits validate applies by default.
    ``training`` holds the settings that reach the documented accuracy (docs/BENCHMARKS.md).
    """

    name: str
    build: Callable
    training: dict = field(default_factory=dict)
    tolerances: dict = field(default_factory=dict)


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
