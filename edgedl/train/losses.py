"""The training loss for classifiers, one definition for every training loop (fit, multi-worker)."""

from __future__ import annotations

from ..core.env import import_keras


def classification_loss(smoothing: float):
    """Cross-entropy on integer labels, with ``smoothing`` of each label spread evenly over the classes.

    Keras' sparse cross-entropy has no label smoothing, and one-hot labels would change every loop that
    feeds labels (multi-worker, QAT), so the smoothed loss is written out: (1 − ε)·CE(label) + ε·mean_c CE(c),
    which is cross-entropy against the smoothed one-hot target. The saved model is uncompiled (``portable``),
    so this loss never has to be found when model.keras is loaded."""
    keras = import_keras()
    if not smoothing:
        return keras.losses.sparse_categorical_crossentropy
    ops = keras.ops

    def smoothed_sparse_crossentropy(y_true, y_pred):
        exact = keras.losses.sparse_categorical_crossentropy(y_true, y_pred)
        spread = -ops.mean(ops.log(ops.clip(y_pred, keras.config.epsilon(), 1.0)), axis=-1)
        return (1.0 - smoothing) * exact + smoothing * spread

    return smoothed_sparse_crossentropy
