"""Fit a model on a dataset and write ``model.keras`` + ``manifest.json`` (+ calibration, held-out split).

Everything lands in a staging folder first and is renamed into place with the manifest last, so
an interrupted run leaves the previous manifest and model untouched.
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .. import data as data_lib
from ..core.env import import_keras, library_versions
from ..core.errors import DataError, EdgedlError, TrainingError
from ..core.files import sha256_file, staging_dir, sweep_leftovers, write_json, write_npz
from ..core.layout import CALIBRATION_FILE, HELDOUT_FILE, HISTORY_FILE, MANIFEST, MODEL_FILE
from ..core.metrics import accuracy
from ..core.outputs import claim, name_from_reference
from ..recipe import TRAIN_SETTINGS, TrainConfig, check_settings
from .architectures import registry as architectures


def train(config: TrainConfig) -> dict:
    """Train, evaluate on the held-out split, write the run folder; return the manifest."""
    arch, settings = _resolve(config)  # a bad name or bad data fails before anything is created
    dataset = data_lib.load_dataset(config.data, seed=config.seed)
    from . import distribute

    setup = distribute.configure(config.device, config.strategy, config.mixed_precision)
    out = claim(config.out, "run") if setup.is_chief else None  # only the chief writes
    if out is not None:
        sweep_leftovers(out)
    keras = import_keras()
    keras.utils.set_random_seed(config.seed)
    with setup.strategy.scope():
        model = _build_model(config, arch, dataset, keras)
        if setup.mixed_precision:
            model = _float32_output(model, keras)
        _compile(model, settings, keras, steps_per_epoch=_steps(dataset, settings, setup), replicas=setup.replicas)
    x_train = data_lib.fit_to_input(dataset.x_train, model.input_shape[1:], "training")
    x_val = data_lib.fit_to_input(dataset.x_val, model.input_shape[1:], "validation")
    x_test = data_lib.fit_to_input(dataset.x_test, model.input_shape[1:], "test")
    sequence = _is_sequence_output(model)
    started = time.perf_counter()
    history = _fit(model, x_train, dataset.y_train, x_val, dataset.y_val, settings, config, sequence, setup)
    elapsed = time.perf_counter() - started
    predictions = _predict(model, x_test, setup)
    _refuse_diverged(model, history, predictions, settings)
    test_accuracy = accuracy(predictions, dataset.y_test)
    metrics = {
        "test_accuracy": test_accuracy,
        "val_accuracy": float(max(history.get("val_accuracy", [0.0]))),
        "epochs_run": len(history.get("loss", [])),
    }
    if not setup.is_chief:
        return {"metrics": metrics, "chief": False}
    return _write_run(out, model, dataset, arch, settings, config, setup, history, metrics, elapsed)


def _resolve(config: TrainConfig):
    model_spec = str(config.model)
    if model_spec.endswith(".keras"):
        arch = None
    else:
        arch = architectures.get(model_spec)
    defaults = {"epochs": 10, "batch_size": 64, "learning_rate": 1e-3, "augment": "none", "patience": 5}
    defaults.update(arch.training if arch else {})
    for key in TRAIN_SETTINGS:
        value = getattr(config, key)
        if value is not None:
            defaults[key] = value
    check_settings(defaults, config.seed)
    return arch, defaults


def _build_model(config, arch, dataset, keras):
    if arch is not None:
        return _call_builder(arch, dataset.sample_shape, dataset.num_classes, keras)
    from ..runners.modelio import load_keras_model

    model = load_keras_model(config.model, safe_mode=not config.extra.get("unsafe", False))
    units = model.output_shape[-1]
    if units is not None and dataset.num_classes > units:
        raise DataError(
            f"labels out of range: the data has {dataset.num_classes} classes but {config.model} outputs {units}"
        )
    return model


ARCHITECTURE_SIGNATURE = "build(input_shape: tuple, num_classes: int) -> keras.Model"


def _call_builder(arch, input_shape: tuple, num_classes: int, keras):
    """Call a (possibly user) architecture function; anything but a Keras model is a clear usage error."""
    from ..core.errors import UsageError

    try:
        model = arch.build(tuple(input_shape), num_classes)
    except TypeError as exc:
        raise UsageError(f"architecture {arch.name!r} could not be called as {ARCHITECTURE_SIGNATURE}: {exc}",
                         hint="see README, Your own model") from exc
    if not isinstance(model, keras.Model):
        raise UsageError(f"architecture {arch.name!r} returned {type(model).__name__}, not a keras.Model",
                         hint=f"the function must be {ARCHITECTURE_SIGNATURE}")
    return model


def _float32_output(model, keras):
    """Under mixed_float16 the softmax must run in float32 (stable, and what export expects)."""
    last = model.layers[-1].name

    def clone(layer):
        config = layer.get_config()
        if layer.name == last:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    rebuilt = keras.models.clone_model(model, clone_function=clone)
    return rebuilt


def _compile(model, settings, keras, steps_per_epoch, replicas=1):
    # Linear scaling rule: N replicas take one step per N per-replica batches, so the peak learning
    # rate grows N-fold to keep the same progress per sample (2 workers: 94.3 % vs 94.6 % for one
    # process, instead of 93.5 % without scaling; docs/BENCHMARKS.md).
    settings["effective_learning_rate"] = settings["learning_rate"] * replicas
    schedule = keras.optimizers.schedules.CosineDecay(
        settings["effective_learning_rate"], decay_steps=max(1, settings["epochs"] * steps_per_epoch), alpha=0.05
    )
    optimizer = keras.optimizers.Adam(schedule, clipnorm=settings.get("clipnorm"))
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def _steps(dataset, settings, setup) -> int:
    global_batch = settings["batch_size"] * setup.replicas
    return max(1, -(-len(dataset.y_train) // global_batch))


def _is_sequence_output(model) -> bool:
    return len(model.output_shape) == 3


def _fit(model, x_train, y_train, x_val, y_val, settings, config, sequence, setup) -> dict:
    keras = import_keras()
    from .augment import ShiftedBatches, worker_dataset

    steps = model.input_shape[1] if sequence else None
    y_fit = _per_step(y_train, steps) if sequence else y_train
    y_val_fit = _per_step(y_val, steps) if sequence else y_val
    global_batch = settings["batch_size"] * setup.replicas  # the batch per replica stays as configured
    augment = settings.get("augment", "none") == "shift"
    if setup.workers > 1:
        from . import worker_loop

        batches = worker_dataset(x_train, y_fit, global_batch, config.seed, augment, setup.worker_index,
                                 setup.workers)
        # tf.distribute splits each worker's batches of global size across all replicas, so a
        # worker's shard lasts len(x) / global_batch steps, the same number as one process takes.
        steps_per_epoch = len(x_train) // global_batch
        return worker_loop.fit(model, batches, x_val, y_val_fit, settings, setup.strategy, steps_per_epoch)
    else:
        batches = ShiftedBatches(x_train, y_fit, batch_size=global_batch, seed=config.seed, augment=augment)
    callbacks = [keras.callbacks.TerminateOnNaN(), keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=settings.get("patience", 5), restore_best_weights=True,
        start_from_epoch=min(3, settings["epochs"] - 1),
    )]
    history = model.fit(
        batches, validation_data=(x_val, y_val_fit), epochs=settings["epochs"],
        callbacks=callbacks, verbose=_verbosity(config.verbose),
    )
    return {key: [float(v) for v in values] for key, values in history.history.items()}


def _predict(model, x: np.ndarray, setup) -> np.ndarray:
    # predict() splits batches across replicas correctly (predict_on_batch does not under a
    # strategy); under multi-worker training Keras' predict loop fails too, so call the model.
    if setup.workers > 1:
        return np.concatenate([np.asarray(model(x[i : i + 256], training=False)) for i in range(0, len(x), 256)])
    return model.predict(x, batch_size=256, verbose=0)


def _per_step(labels: np.ndarray, steps: int) -> np.ndarray:
    """The sequence model names the digit at every step (it has read more of it each step)."""
    return np.repeat(labels[:, None], steps, axis=1)


def _verbosity(verbose) -> int | str:
    if verbose != "auto":
        return verbose
    # Keras' live progress bar on a terminal; one line per epoch in CI logs.
    return "auto" if os.isatty(1) else 2


def _refuse_diverged(model, history: dict, predictions: np.ndarray, settings: dict) -> None:
    """A model whose loss, weights or outputs are NaN/Inf is garbage: no run is written for it."""
    losses = history.get("loss", [])
    bad_epoch = next((i + 1 for i, value in enumerate(losses) if not np.isfinite(value)), None)
    bad_weights = sum(int(np.count_nonzero(~np.isfinite(w))) for w in model.get_weights())
    bad_outputs = int(np.count_nonzero(~np.isfinite(predictions)))
    if bad_epoch is None and not bad_weights and not bad_outputs:
        return
    where = f"the loss became NaN/Inf in epoch {bad_epoch}" if bad_epoch else (
        f"{bad_weights} weights are NaN/Inf" if bad_weights else f"{bad_outputs} test outputs are NaN/Inf")
    raise TrainingError(f"training diverged: {where}; no run was written",
                        hint=f"lower --learning-rate (was {settings['learning_rate']:g}), add clipnorm, or scale "
                             "the data to a small range")


def _write_run(out, model, dataset, arch, settings, config, setup, history, metrics, elapsed) -> dict:
    with staging_dir(out, "run") as staging:
        model_path = staging / MODEL_FILE
        try:
            model.save(model_path)
        except OSError as exc:  # full disk, file-size limit
            raise EdgedlError(f"cannot write {out / MODEL_FILE}: {exc.strerror or exc}") from exc
        calib_x, calib_idx = data_lib.calibration_subset(dataset.x_train, config.calibration_samples, config.seed)
        write_npz(staging / CALIBRATION_FILE, x=calib_x, indices=calib_idx)
        write_npz(staging / HELDOUT_FILE, x=dataset.x_test, y=dataset.y_test)
        write_json(staging / HISTORY_FILE, history)
        manifest = _manifest(model, dataset, arch, settings, config, setup, metrics, elapsed, staging)
        write_json(staging / MANIFEST, manifest)
        for name in (MODEL_FILE, CALIBRATION_FILE, HELDOUT_FILE, HISTORY_FILE, MANIFEST):
            os.replace(staging / name, out / name)  # manifest last: it only ever names complete files
    return manifest


def _manifest(model, dataset, arch, settings, config, setup, metrics, elapsed, staging) -> dict:
    return {
        "edgedl": "training-run/1",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "name": name_from_reference(arch.name if arch else str(config.model)),
        "architecture": arch.name if arch else None,
        "model_source": str(config.model),
        "model": _file_entry(staging / MODEL_FILE),
        "inputs": [tensor_spec(t) for t in model.inputs],
        "outputs": [tensor_spec(t) for t in model.outputs],
        "task": "classification",
        "sequence_output": _is_sequence_output(model),
        "class_names": dataset.class_names,
        "dataset": dataset.describe(),
        "seed": config.seed,
        "training": {
            **settings,
            "time_s": round(elapsed, 2),
            "devices": setup.devices,
            "strategy": setup.name,
            "replicas": setup.replicas,
            "mixed_precision": setup.mixed_precision,
            "global_batch_size": settings["batch_size"] * setup.replicas,
        },
        "metrics": metrics,
        "calibration": {**_file_entry(staging / CALIBRATION_FILE), "count": min(config.calibration_samples,
                                                                                len(dataset.y_train))},
        "heldout": {**_file_entry(staging / HELDOUT_FILE), "count": len(dataset.y_test)},
        "history": HISTORY_FILE,
        "versions": library_versions(),
    }


def _file_entry(path: Path) -> dict:
    return {"file": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}


def tensor_spec(tensor) -> dict:
    shape = [None if d is None else int(d) for d in tensor.shape]
    name = getattr(tensor, "name", "tensor").split(":")[0]
    return {"name": name, "shape": shape, "dtype": str(getattr(tensor, "dtype", "float32"))}


__all__ = ["train"]
