"""Training batches with seeded random shifts, done in the input pipeline (never inside the model).

Augmenting here keeps the exported graph identical to the seed architecture. Each epoch's
shuffle and shifts come from ``(seed, epoch)``, so the same seed gives the same weights.
"""

from __future__ import annotations

import numpy as np

from ..core.env import import_keras

MAX_SHIFT = 2  # pixels at 28×28; a handwritten digit moved by 2 px is still the same digit


def max_shift(height: int, width: int) -> int:
    """The shift scales with the image: 2 px at 28×28, 1 px at 8×8 (2 px would be a quarter of it)."""
    return max(1, round(min(height, width) * MAX_SHIFT / 28))


def _shift_images(images: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Move each (H, W, ...) sample by up to ``max_shift`` pixels, filling with zeros."""
    count, height, width = images.shape[:3]
    pad = [(0, 0), (max_shift, max_shift), (max_shift, max_shift)] + [(0, 0)] * (images.ndim - 3)
    padded = np.pad(images, pad)
    offsets = rng.integers(0, 2 * max_shift + 1, size=(count, 2))
    shifted = np.empty_like(images)
    for i, (dy, dx) in enumerate(offsets):
        shifted[i] = padded[i, dy : dy + height, dx : dx + width]
    return shifted


def shift_batch(batch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shift image samples; flat samples that are square images (MLP inputs) are shifted as images."""
    if batch.ndim >= 3:
        return _shift_images(batch, rng, max_shift(*batch.shape[1:3]))
    side = int(round(np.sqrt(batch.shape[1])))
    if side * side != batch.shape[1]:
        return batch  # not a square image: leave flat features alone
    return _shift_images(batch.reshape(len(batch), side, side), rng, max_shift(side, side)).reshape(batch.shape)


def _make_class():
    keras = import_keras()

    class ShiftedBatches(keras.utils.PyDataset):
        """Shuffled mini-batches; images (rank ≥ 2 per sample) are randomly shifted when ``augment``."""

        def __init__(self, x, y, batch_size, seed, augment):
            super().__init__(workers=1, use_multiprocessing=False)
            self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
            self.augment = augment
            self.epoch = 0
            self._order = self._permutation()

        def _permutation(self) -> np.ndarray:
            return np.random.default_rng((self.seed, self.epoch)).permutation(len(self.x))

        def __len__(self) -> int:
            return -(-len(self.x) // self.batch_size)

        def __getitem__(self, index):
            picked = self._order[index * self.batch_size : (index + 1) * self.batch_size]
            batch = self.x[picked]
            if self.augment:
                batch = self._shift(batch, index)
            return batch, self.y[picked]

        def _shift(self, batch: np.ndarray, index: int) -> np.ndarray:
            return shift_batch(batch, np.random.default_rng((self.seed, self.epoch, index)))

        def on_epoch_end(self):
            self.epoch += 1
            self._order = self._permutation()

    return ShiftedBatches


def __getattr__(name):
    if name == "ShiftedBatches":
        return _make_class()
    raise AttributeError(name)


def worker_dataset(x: np.ndarray, y: np.ndarray, global_batch: int, seed: int, augment: bool,
                   worker: int, workers: int):
    """This worker's shard as a tf.data pipeline, for MultiWorkerMirroredStrategy.

    The shard is cut here (equal sizes, so every worker runs the same number of steps and the
    collectives never wait forever) and tf.data's own auto-sharding is switched off. Batches are
    of the global size: tf.distribute splits them across this worker's replicas.
    """
    import tensorflow as tf

    per_worker = len(x) // workers
    shard_x = x[worker * per_worker : (worker + 1) * per_worker]
    shard_y = y[worker * per_worker : (worker + 1) * per_worker]
    dataset = tf.data.Dataset.from_tensor_slices((shard_x, shard_y))
    dataset = dataset.shuffle(per_worker, seed=seed + worker, reshuffle_each_iteration=True)
    dataset = dataset.batch(global_batch)
    if augment:
        counter = tf.data.Dataset.counter()

        def shift(batch_x, batch_y, index):
            def numpy_shift(images, step):
                return shift_batch(images, np.random.default_rng((seed, worker, int(step))))

            shifted = tf.numpy_function(numpy_shift, [batch_x, index], batch_x.dtype)
            return tf.ensure_shape(shifted, batch_x.shape), batch_y

        dataset = tf.data.Dataset.zip((dataset, counter)).map(lambda xy, i: shift(xy[0], xy[1], i))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).prefetch(2)
