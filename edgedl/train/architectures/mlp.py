"""Seed MLP: Dense(64, relu) → Dense(10, softmax) on flattened images."""

from __future__ import annotations

import math

from .base import Architecture


def build(input_shape: tuple, num_classes: int):
    import keras

    flat = (math.prod(input_shape),)
    return keras.Sequential(
        [
            keras.Input(shape=flat, name="pixels"),
            keras.layers.Dense(64, activation="relu", name="hidden"),
            keras.layers.Dense(num_classes, activation="softmax", name="probs"),
        ],
        name="mlp",
    )


ARCHITECTURES = [Architecture(
    name="mlp",
    build=build,
    training={"epochs": 100, "batch_size": 64, "learning_rate": 3e-3, "augment": "affine", "label_smoothing": 0.1,
              "patience": 20},
)]
