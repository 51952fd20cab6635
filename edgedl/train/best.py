"""Early stopping that keeps the best epoch by validation loss, and says which one it kept.

Keras' EarlyStopping on val_accuracy keeps the *first* epoch that reached the best accuracy: on small
validation sets many epochs tie, and an undertrained model with flat outputs was kept (int8 then
failed). Validation loss separates epochs that accuracy ties, and an exact tie goes to the later,
better-trained epoch.
"""

from __future__ import annotations

import math


def __getattr__(name):
    # Built on first use: the class derives from keras' Callback, and importing this module must
    # not import Keras (edgedl --help stays light).
    if name == "BestEpoch":
        return _make()
    raise AttributeError(name)


def _make():
    from ..core.env import import_keras

    keras = import_keras()

    class BestEpochCallback(keras.callbacks.Callback):
        """Track the lowest val_loss (ties → the later epoch), stop after ``patience`` epochs without
        improvement (never before ``start_from_epoch``), and restore the best weights at the end."""

        def __init__(self, patience: int = 5, start_from_epoch: int = 0, monitor: str = "val_loss"):
            super().__init__()
            self.patience, self.start_from_epoch, self.monitor = patience, start_from_epoch, monitor
            self.best, self.best_epoch, self.best_weights, self.waited, self.stopped = math.inf, None, None, 0, False

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(self.monitor)
            if value is None or not math.isfinite(value):
                return
            if value <= self.best:  # equal counts: the later epoch has seen more data
                self.best, self.best_epoch, self.waited = value, epoch + 1, 0
                self.best_weights = self.model.get_weights()
            else:
                self.waited += 1
            if epoch + 1 > self.start_from_epoch and self.waited >= self.patience:
                self.stopped = True
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            if self.best_weights is not None:
                self.model.set_weights(self.best_weights)

        def summary(self) -> str:
            how = "stopped early" if self.stopped else "ran every epoch"
            return f"restored epoch {self.best_epoch} (lowest {self.monitor} {self.best:.4g}; {how})"

    return BestEpochCallback
