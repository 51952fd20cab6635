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


# Default parity limits, per precision (validate/parity.py: TOLERANCE_KEYS says what each means).
# fp32 exports compute the same maths in another order, so they agree to rounding, which grows with
# the output's magnitude and the depth of the network: |Δ| ≤ 1e-5 + 1e-4 × max|output| (a MobileNet's
# softmax differs by 1.1e-5 at cosine 1.000000) and cosine ≥ 0.99999. fp16 stores weights in half
# precision (about 3 decimal digits): judged by decisions and cosine, not by an absolute error.
# Quantized models are judged by what they decide (agreement, accuracy) and, for int8, by error in
# quantization steps; regression outputs by their error as a share of the output's range and the
# change of their mean absolute error.
DEFAULT_TOLERANCES = {
    "fp32": {"atol": 1e-5, "rtol": 1e-4, "min_cosine": 0.99999, "min_agreement": 0.999, "max_accuracy_drop": 0.001,
             "max_rel_error": 1e-4, "max_mae_increase": 0.001},
    "fp16": {"min_cosine": 0.999, "min_agreement": 0.995, "max_accuracy_drop": 0.003, "max_rel_error": 0.01,
             "max_mae_increase": 0.01},
    "dynamic": {"min_agreement": 0.99, "max_accuracy_drop": 0.005, "max_rel_error": 0.05, "max_mae_increase": 0.05},
    "int8": {"min_agreement": 0.99, "max_accuracy_drop": 0.005, "max_mean_error_steps": 2.0, "max_rel_error": 0.05,
             "max_mae_increase": 0.05},
}
# The rescues of a failed int8 (int16x8 activations, int8 with float layers) answer to int8's gates:
# they exist to pass them. Their outputs are float, so there are no output steps to count.
DEFAULT_TOLERANCES["int16x8"] = DEFAULT_TOLERANCES["mixed"] = {
    k: v for k, v in DEFAULT_TOLERANCES["int8"].items() if k != "max_mean_error_steps"}
