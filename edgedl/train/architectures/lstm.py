"""Seed LSTMs, reading image rows as timesteps.

``lstm`` is the classifier: LSTM(64) → Dense(10) on the last step.
``lstm_seq`` is the seed's sequence form: LSTM(64, return_sequences=True) → Dense(10) at every
step; it is trained to name the digit at every step, and judged on the last one.
"""

from __future__ import annotations

import math

from .base import Architecture


def _as_sequence(input_shape: tuple) -> tuple[int, int]:
    """(H, W, C) images become H timesteps of W·C features; (T, F) stays as it is."""
    steps = input_shape[0]
    return steps, math.prod(input_shape[1:]) if len(input_shape) > 1 else 1


def build(input_shape: tuple, num_classes: int):
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=_as_sequence(input_shape), name="rows"),
            keras.layers.LSTM(64, name="lstm"),
            keras.layers.Dense(num_classes, activation="softmax", name="probs"),
        ],
        name="lstm",
    )


def build_sequence(input_shape: tuple, num_classes: int):
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=_as_sequence(input_shape), name="rows"),
            keras.layers.LSTM(64, return_sequences=True, name="lstm"),
            keras.layers.Dense(num_classes, activation="softmax", name="probs"),
        ],
        name="lstm_seq",
    )


_TRAINING = {"epochs": 40, "batch_size": 64, "learning_rate": 3e-3, "augment": "affine", "label_smoothing": 0.1,
             "patience": 10, "clipnorm": 1.0}
# The fused TFLite LSTM kernel accumulates in a different order than Keras' LSTM, and the
# recurrence compounds rounding over the steps: fp32 differs by ~1e-6, a little above dense layers.
_TOLERANCES = {"fp32": {"atol": 2e-5}, "int8": {"max_accuracy_drop": 0.01}}

ARCHITECTURES = [
    Architecture(name="lstm", build=build, training=_TRAINING, tolerances=_TOLERANCES),
    Architecture(name="lstm_seq", build=build_sequence, training=_TRAINING, tolerances=_TOLERANCES),
]
