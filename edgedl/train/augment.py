"""Training batches with seeded random shifts or affine warps, done in the input pipeline (never inside the model).

Augmenting here keeps the exported graph identical to the seed architecture. Each epoch's
shuffle and warps come from ``(seed, epoch)``, so the same seed gives the same weights.

``shift`` moves each image by whole pixels. ``affine`` is what handwriting varies by: a small
rotation, a size change, a slant (shear) and a move, resampled bilinearly. On the built-in digits,
with label smoothing, it lifted the CNN to 98.7 % held-out (3 seeds; 97.5–98.1 % with shifts only) and
97.0 % on USPS digits it never saw (docs/BENCHMARKS.md, Training).
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


# Handwriting's own spread: the same digit written again is turned by up to ~12°, drawn 10 % larger
# or smaller and slanted by up to ~0.15; larger warps made held-out accuracy worse (docs/BENCHMARKS.md).
MAX_ROTATION_DEG = 12.0
SCALE_RANGE = (0.9, 1.1)
MAX_SHEAR = 0.15


def _warp_matrices(count: int, rng: np.random.Generator) -> np.ndarray:
    """One random 2×2 map per sample: rotation · shear · scale (output coordinates → source coordinates)."""
    angle = np.deg2rad(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, count))
    scale = rng.uniform(*SCALE_RANGE, count)
    shear = rng.uniform(-MAX_SHEAR, MAX_SHEAR, count)
    cos, sin = np.cos(angle), np.sin(angle)
    rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], -2)
    slant = np.stack([np.stack([np.ones(count), shear], -1), np.stack([np.zeros(count), np.ones(count)], -1)], -2)
    return rotation @ slant / scale[:, None, None]


def _affine_images(images: np.ndarray, rng: np.random.Generator, max_move: int) -> np.ndarray:
    """Warp each (H, W, ...) sample about its centre and move it, bilinear, zeros outside the image."""
    count, height, width = images.shape[:3]
    flat = images.reshape(count, height, width, -1).astype(np.float32)
    centre = np.array([(height - 1) / 2, (width - 1) / 2])
    grid = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij"), -1).reshape(-1, 2) - centre
    move = rng.uniform(-max_move, max_move, (count, 1, 2))
    source = np.einsum("nij,pj->npi", _warp_matrices(count, rng), grid) + centre + move  # (n, H·W, 2)
    padded = np.pad(flat, [(0, 0), (1, 1), (1, 1), (0, 0)])  # a zero border: out-of-image reads give 0
    low = np.floor(source)
    frac = (source - low)[..., None]
    y0 = np.clip(low[..., 0].astype(np.int64) + 1, 0, height + 1)
    x0 = np.clip(low[..., 1].astype(np.int64) + 1, 0, width + 1)
    y1, x1 = np.minimum(y0 + 1, height + 1), np.minimum(x0 + 1, width + 1)
    rows = np.arange(count)[:, None]
    top = padded[rows, y0, x0] * (1 - frac[:, :, 1]) + padded[rows, y0, x1] * frac[:, :, 1]
    bottom = padded[rows, y1, x0] * (1 - frac[:, :, 1]) + padded[rows, y1, x1] * frac[:, :, 1]
    warped = (top * (1 - frac[:, :, 0]) + bottom * frac[:, :, 0]).reshape(images.shape)
    if np.issubdtype(images.dtype, np.integer):
        warped = np.rint(warped)
    return warped.astype(images.dtype)


def _image_op(kind: str):
    return _affine_images if kind == "affine" else _shift_images


def shift_batch(batch: np.ndarray, rng: np.random.Generator, kind: str = "shift") -> np.ndarray:
    """Shift (or warp) image samples; flat samples that are square images (MLP inputs) are treated as images."""
    augment = _image_op(kind)
    if batch.ndim >= 3:
        return augment(batch, rng, max_shift(*batch.shape[1:3]))
    side = int(round(np.sqrt(batch.shape[1])))
    if side * side != batch.shape[1]:
        return batch  # not a square image: leave flat features alone
    return augment(batch.reshape(len(batch), side, side), rng, max_shift(side, side)).reshape(batch.shape)


def _make_class():
    keras = import_keras()

    class ShiftedBatches(keras.utils.PyDataset):
        """Shuffled mini-batches; images (rank ≥ 2 per sample) are randomly shifted or warped (``augment``)."""

        def __init__(self, x, y, batch_size, seed, augment):
            super().__init__(workers=1, use_multiprocessing=False)
            self.x, self.y, self.batch_size, self.seed = x, y, batch_size, seed
            self.augment = augment  # "none", "shift" or "affine"
            self.epoch = 0
            self._order = self._permutation()

        def _permutation(self) -> np.ndarray:
            return np.random.default_rng((self.seed, self.epoch)).permutation(len(self.x))

        def __len__(self) -> int:
            return -(-len(self.x) // self.batch_size)

        def __getitem__(self, index):
            picked = self._order[index * self.batch_size : (index + 1) * self.batch_size]
            batch = self.x[picked]
            if self.augment != "none":
                batch = self._shift(batch, index)
            return batch, self.y[picked]

        def _shift(self, batch: np.ndarray, index: int) -> np.ndarray:
            return shift_batch(batch, np.random.default_rng((self.seed, self.epoch, index)), self.augment)

        def on_epoch_end(self):
            self.epoch += 1
            self._order = self._permutation()

    return ShiftedBatches


def __getattr__(name):
    if name == "ShiftedBatches":
        return _make_class()
    raise AttributeError(name)


def worker_dataset(x: np.ndarray, y: np.ndarray, global_batch: int, seed: int, augment: str,
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
    if augment != "none":
        counter = tf.data.Dataset.counter()

        def shift(batch_x, batch_y, index):
            def numpy_shift(images, step):
                return shift_batch(images, np.random.default_rng((seed, worker, int(step))), augment)

            shifted = tf.numpy_function(numpy_shift, [batch_x, index], batch_x.dtype)
            return tf.ensure_shape(shifted, batch_x.shape), batch_y

        dataset = tf.data.Dataset.zip((dataset, counter)).map(lambda xy, i: shift(xy[0], xy[1], i))
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return dataset.with_options(options).prefetch(2)
