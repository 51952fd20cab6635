"""Seed CNN: Conv2D(32, 3×3) → MaxPool 2×2 → Flatten → Dense(128) → Dense(10) on 28×28×1."""

from __future__ import annotations

from .base import Architecture


def build(input_shape: tuple, num_classes: int):
    import keras

    return keras.Sequential(
        [
            keras.Input(shape=tuple(input_shape), name="image"),
            keras.layers.Conv2D(32, (3, 3), activation="relu", name="conv"),
            keras.layers.MaxPooling2D((2, 2), name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(128, activation="relu", name="hidden"),
            keras.layers.Dense(num_classes, activation="softmax", name="probs"),
        ],
        name="cnn",
    )


ARCHITECTURES = [Architecture(
    name="cnn",
    build=build,
    training={"epochs": 40, "batch_size": 64, "learning_rate": 2e-3, "augment": "affine", "label_smoothing": 0.1,
              "patience": 10},
)]
