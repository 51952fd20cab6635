"""A tabular classifier fed raw sensor readings, with a Keras Normalization layer inside.

    build(input_shape, num_classes) -> keras.Model       (edgedl's architecture signature)

The Normalization layer holds the sensors' nominal statistics (what a weather-station spec sheet
gives: temperature −5…35 °C, pressure 101.3 ± 1.2 kPa, humidity 0…1, wind gamma(2, 3) m/s), so an
app feeds readings as they come. Its float twin is exact; full-int8 PTQ is not: one per-tensor int8
input scale must cover 0…1 humidity and ~101 kPa pressure together, which leaves neither enough
steps. That is the model edgedl's rescue ladder is shown on (docs/BENCHMARKS.md, Rescuing int8).
"""

import numpy as np


def build(input_shape, num_classes):
    import keras

    mean = np.array([15.0, 101.3, 0.5, 6.0], np.float32)
    variance = np.array([40.0**2 / 12, 1.2**2, 1 / 12, 18.0], np.float32)
    inputs = keras.Input(shape=input_shape, name="readings")
    x = keras.layers.Normalization(mean=mean, variance=variance, name="normalization")(inputs)
    x = keras.layers.Dense(32, activation="relu", name="hidden1")(x)
    x = keras.layers.Dense(32, activation="relu", name="hidden2")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="weather")(x)
    return keras.Model(inputs, outputs, name="sensor")
