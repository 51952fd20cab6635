"""Training under MultiWorkerMirroredStrategy with a custom loop.

Keras 3's ``model.fit`` does not run under MultiWorkerMirroredStrategy (keras-team/keras#20585:
PerReplica values reach code that expects tensors), so multi-worker training uses
``strategy.run`` directly: per-replica losses scaled by the global batch, gradients all-reduced
by the strategy, Keras' optimizer and model unchanged. Every worker evaluates the same weights
on the validation split, so early-stopping decisions agree across workers without talking.
"""

from __future__ import annotations

import numpy as np

from ..core.metrics import accuracy


def fit(model, dataset, x_val, y_val, settings: dict, strategy, steps_per_epoch: int, say=print) -> dict:
    import tensorflow as tf

    from .losses import classification_loss

    loss_fn = classification_loss(settings.get("label_smoothing", 0.0))  # per sample, as the loop reduces it
    global_batch = settings["batch_size"] * strategy.num_replicas_in_sync
    optimizer = model.optimizer

    def replica_step(x, y):
        with tf.GradientTape() as tape:
            probs = model(x, training=True)
            per_sample = tf.reshape(loss_fn(y, probs), [tf.shape(x)[0], -1])
            loss = tf.nn.compute_average_loss(tf.reduce_mean(per_sample, axis=1), global_batch_size=global_batch)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    @tf.function
    def train_step(iterator):
        x, y = next(iterator)
        losses = strategy.run(replica_step, args=(x, y))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    history: dict[str, list[float]] = {"loss": [], "val_accuracy": []}
    best, best_weights, waited = -1.0, None, 0
    distributed = strategy.experimental_distribute_dataset(dataset)
    for epoch in range(settings["epochs"]):
        iterator = iter(distributed)
        losses = [float(train_step(iterator)) for _ in range(steps_per_epoch)]
        val_accuracy = _accuracy(model, x_val, y_val)
        history["loss"].append(float(np.mean(losses)))
        history["val_accuracy"].append(val_accuracy)
        say(f"epoch {epoch + 1}/{settings['epochs']}: loss {np.mean(losses):.4f}, val_accuracy {val_accuracy:.4f}")
        if val_accuracy > best:
            best, best_weights, waited = val_accuracy, model.get_weights(), 0
        else:
            waited += 1
            if epoch >= 3 and waited >= settings.get("patience", 5):
                break
    if best_weights is not None:
        model.set_weights(best_weights)  # keep the best epoch on validation, as fit's EarlyStopping does
    return history


def _accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    probs = np.concatenate([np.asarray(model(x[i : i + 256], training=False)) for i in range(0, len(x), 256)])
    return accuracy(probs, y)
