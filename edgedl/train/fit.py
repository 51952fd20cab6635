"""Fit a model on a dataset and write ``model.keras`` + ``manifest.json`` (+ calibration, held-out split).

Everything lands in a staging folder first and is renamed into place with the manifest last, so
an interrupted run leaves the previous manifest and model untouched.
"""

from __future__ import annotations

import dataclasses
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from .. import data as data_lib
from ..core.env import import_keras, keras_backend, library_versions
from ..core.errors import DataError, EdgedlError, TrainingError, UsageError
from ..core.files import sha256_file, staging_dir, sweep_leftovers, write_json, write_npz
from ..core.layout import CALIBRATION_FILE, HELDOUT_FILE, HISTORY_FILE, MANIFEST, MODEL_FILE
from ..core.metrics import task_metrics
from ..core.outputs import claim, name_from_reference
from ..recipe import TRAIN_SETTINGS, TrainConfig, check_settings
from ..runners.modelio import model_facts
from ..subject import decide, model_input
from .architectures import registry as architectures
from .losses import classification_loss


def train(config: TrainConfig, say=print) -> dict:
    """Train, evaluate on the held-out split, write the run folder; return the manifest.

    On JAX or PyTorch the training happens in a child process with Keras on that backend
    (train/backends.py); this process, and export after it, stay on TensorFlow."""
    from . import backends

    arch, settings = _resolve(config)  # a bad name or bad data fails before anything is created
    backend = backends.choose(config.backend, say) if config.backend != keras_backend() else config.backend
    backends.check_combination(backend, config.strategy, config.qat_epochs)
    if backend != keras_backend():
        return backends.train_in_child(dataclasses.replace(config, backend=backend), backend)
    dataset = data_lib.load_dataset(config.data, seed=config.seed, task=config.task)
    if arch is not None and dataset.task == "regression" and arch.name in architectures.names():
        raise UsageError(f"the seed architecture {arch.name!r} is a classifier (softmax output); {dataset.name} "
                         "has real-valued targets", hint="train your own architecture with a linear output: "
                         f"--model my_arch.py:build, where build is {ARCHITECTURE_SIGNATURE}")
    if dataset.task == "regression" and settings.get("label_smoothing"):
        raise UsageError(f"label smoothing spreads a class label over the classes; {dataset.name} has real-valued "
                         "targets", hint="drop label_smoothing (or --label-smoothing) for a regression model")
    from . import distribute

    if config.qat_epochs and config.mixed_precision:
        raise UsageError("--qat and --mixed-precision do not go together: fake quantization needs float32",
                         hint="drop --mixed-precision")
    setup = distribute.configure(config.device, config.strategy, config.mixed_precision) \
        if backend == "tensorflow" else distribute.configure_backend(backend, config.device, config.mixed_precision)
    out = claim(config.out, "run") if setup.is_chief else None  # only the chief writes
    if out is not None:
        sweep_leftovers(out)
    keras = import_keras()
    keras.utils.set_random_seed(config.seed)
    with setup.strategy.scope():
        model = _build_model(config, arch, dataset, keras)
        if setup.mixed_precision:
            model = _float32_output(model, keras)
        _compile(model, settings, keras, dataset.task, steps_per_epoch=_steps(dataset, settings, setup),
                 replicas=setup.replicas)
    facts = model_facts(model)
    preprocessing = decide(dataset.x_train.dtype, facts, natural_scale=dataset.natural_scale)
    say(f"input preprocessing: {preprocessing['reason']}")
    x_train, x_val, x_test = (_model_inputs(x, preprocessing, model, what) for x, what in
                              ((dataset.x_train, "training"), (dataset.x_val, "validation"), (dataset.x_test, "test")))
    preprocessing["input_range"] = data_lib.value_range(x_train)  # later data is checked against it
    sequence = _is_sequence_output(model)
    started = time.perf_counter()
    if config.qat_epochs:
        from .qat import refuse_unsupported

        refuse_unsupported(model)  # before the float training, not after it
    history = _fit(model, x_train, dataset.y_train, x_val, dataset.y_val, settings, config, sequence, setup)
    if config.qat_epochs:
        model, history["qat"] = _qat(model, (x_train, dataset.y_train, x_val, dataset.y_val), dataset.task,
                                     settings, config, say)
        settings["qat"] = {k: v for k, v in history["qat"].items() if k != "history"}
    elapsed = time.perf_counter() - started
    predictions = _predict(model, x_test, setup)
    _refuse_diverged(model, history, predictions, settings)
    metrics = _metrics(predictions, dataset, history)
    if not setup.is_chief:
        return {"metrics": metrics, "chief": False}
    return _write_run(out, model, dataset, arch, settings, config, setup, history, metrics, elapsed,
                      (x_train, x_test), preprocessing)


def _qat(model, arrays, task: str, settings: dict, config, say) -> tuple[object, dict]:
    """Quantization-aware fine-tuning after float training, at a tenth of the peak learning rate."""
    from .qat import finetune

    x_train, y_train, x_val, y_val = arrays
    rate = settings["learning_rate"] * QAT_RATE
    say(f"quantization-aware fine-tuning: {config.qat_epochs} epoch(s) at learning rate {rate:g} "
        f"({QAT_RATE:g} × the peak)")
    return finetune(model, x_train, y_train, x_val, y_val, task, config.qat_epochs, rate, settings["batch_size"],
                    config.seed, say)


QAT_RATE = 0.1  # fine-tuning starts from a trained model: a tenth of the peak rate (1e-4 for the seeds)


def _model_inputs(x, preprocessing: dict, model, what: str) -> np.ndarray:
    return model_input(x, preprocessing, model.input_shape[1:], str(model.inputs[0].dtype), what)


def _metrics(predictions: np.ndarray, dataset, history: dict) -> dict:
    restored = history.get("restored_epoch")
    common = {"epochs_run": len(history.get("loss", [])), "restored_epoch": restored}
    scores = task_metrics(dataset.task, predictions, dataset.y_test)
    if dataset.task == "regression":
        return {**scores, "val_loss": history["val_loss"][restored - 1] if restored else None, **common}
    val = history.get("val_accuracy") or [0.0]
    return {**scores, "val_accuracy": float(val[restored - 1] if restored else max(val)), **common}


def _resolve(config: TrainConfig):
    model_spec = str(config.model)
    if model_spec.endswith(".keras"):
        arch = None
    else:
        arch = architectures.get(model_spec)
    defaults = {"epochs": 10, "batch_size": 64, "learning_rate": 1e-3, "augment": "none", "label_smoothing": 0.0,
                "patience": 5}
    defaults.update(arch.training if arch else {})
    for key in TRAIN_SETTINGS:
        value = getattr(config, key)
        if value is not None:
            defaults[key] = value
    check_settings(defaults, config.seed)
    return arch, defaults


def _build_model(config, arch, dataset, keras):
    if arch is not None:
        return _call_builder(arch, dataset.sample_shape, dataset.outputs, keras)
    from ..runners.modelio import load_keras_model

    model = load_keras_model(config.model, safe_mode=not config.extra.get("unsafe", False))
    units = model.output_shape[-1]
    if units is not None and dataset.num_classes > units:
        raise DataError(
            f"labels out of range: the data has {dataset.num_classes} classes but {config.model} outputs {units}"
        )
    return model


# num_classes is the number of classes, or of regression targets; input_shape excludes the batch.
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


def _compile(model, settings, keras, task, steps_per_epoch, replicas=1):
    # Linear scaling rule: N replicas take one step per N per-replica batches, so the peak learning
    # rate grows N-fold to keep the same progress per sample (2 workers: 94.3 % vs 94.6 % for one
    # process, instead of 93.5 % without scaling; docs/BENCHMARKS.md).
    settings["effective_learning_rate"] = settings["learning_rate"] * replicas
    schedule = keras.optimizers.schedules.CosineDecay(
        settings["effective_learning_rate"], decay_steps=max(1, settings["epochs"] * steps_per_epoch), alpha=0.05
    )
    optimizer = keras.optimizers.Adam(schedule, clipnorm=settings.get("clipnorm"))
    if task == "regression":
        model.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
    else:
        model.compile(optimizer=optimizer, loss=classification_loss(settings.get("label_smoothing", 0.0)),
                      metrics=["accuracy"])



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
    augment = settings.get("augment", "none")
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
    from .best import BestEpoch

    best = BestEpoch(patience=settings.get("patience", 5), start_from_epoch=min(3, settings["epochs"] - 1))
    history = model.fit(
        batches, validation_data=(x_val, y_val_fit), epochs=settings["epochs"],
        callbacks=[keras.callbacks.TerminateOnNaN(), best], verbose=_verbosity(config.verbose),
    )
    recorded = {key: [float(v) for v in values] for key, values in history.history.items()}
    if best.best_epoch is not None:
        print(best.summary(), flush=True)
    return recorded | {"restored_epoch": best.best_epoch, "stopped_early": best.stopped}


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


def _write_run(out, model, dataset, arch, settings, config, setup, history, metrics, elapsed, inputs,
               preprocessing) -> dict:
    x_train, x_test = inputs  # model-ready: calibration and held-out files are in the model's input space
    with staging_dir(out, "run") as staging:
        model_path = staging / MODEL_FILE
        try:
            portable(model, setup.mixed_precision).save(model_path)
        except OSError as exc:  # full disk, file-size limit
            raise EdgedlError(f"cannot write {out / MODEL_FILE}: {exc.strerror or exc}") from exc
        calib_x, calib_idx = data_lib.calibration_subset(x_train, config.calibration_samples, config.seed)
        write_npz(staging / CALIBRATION_FILE, x=calib_x, indices=calib_idx)
        write_npz(staging / HELDOUT_FILE, x=x_test, y=dataset.y_test)
        write_json(staging / HISTORY_FILE, history)
        manifest = _manifest(model, dataset, arch, settings, config, setup, metrics, elapsed, staging, preprocessing)
        write_json(staging / MANIFEST, manifest)
        for name in (MODEL_FILE, CALIBRATION_FILE, HELDOUT_FILE, HISTORY_FILE, MANIFEST):
            os.replace(staging / name, out / name)  # manifest last: it only ever names complete files
    return manifest


def _manifest(model, dataset, arch, settings, config, setup, metrics, elapsed, staging, preprocessing) -> dict:
    return {
        "edgedl": "training-run/1",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "name": config.name or name_from_reference(arch.name if arch else str(config.model)),
        "architecture": arch.name if arch else None,
        "model_source": str(config.model),
        "model": _file_entry(staging / MODEL_FILE) | {"weights_sha256": data_lib.array_sha256(*model.get_weights())},
        "inputs": [tensor_spec(t) for t in model.inputs],
        "outputs": [tensor_spec(t) for t in model.outputs],
        "task": dataset.task,
        "sequence_output": _is_sequence_output(model),
        "class_names": dataset.class_names,
        "dataset": dataset.describe() | {"preprocessing": preprocessing, "source": str(config.data)},
        "seed": config.seed,
        "training": {
            **settings,
            "time_s": round(elapsed, 2),
            "devices": setup.devices,
            "strategy": setup.name,
            "replicas": setup.replicas,
            "mixed_precision": setup.mixed_precision,
            "backend": _backend_facts(),
            "global_batch_size": settings["batch_size"] * setup.replicas,
        },
        "metrics": metrics,
        "calibration": {**_file_entry(staging / CALIBRATION_FILE), "count": min(config.calibration_samples,
                                                                                len(dataset.y_train))},
        "heldout": {**_file_entry(staging / HELDOUT_FILE), "count": len(dataset.y_test)},
        "history": HISTORY_FILE,
        "versions": library_versions(),
    }


def _backend_facts() -> dict:
    """The Keras backend that trained, and its version (the same seed gives the same weights only on
    the same backend, version and core count)."""
    from importlib import metadata

    keras = import_keras()
    name = keras.config.backend()
    package = {"tensorflow": "tensorflow-cpu", "jax": "jax", "torch": "torch"}.get(name, name)
    try:
        version = metadata.version(package)
    except metadata.PackageNotFoundError:
        version = metadata.version("tensorflow") if name == "tensorflow" else None
    return {"name": name, "version": version}


def portable(model, mixed_precision: bool):
    """What is saved: the same layers and weights, uncompiled, and float32 throughout.

    Uncompiled, because a compiled model saves its optimizer as the training backend built it (PyTorch:
    keras.src.backend.torch.optimizers.torch_adam, which a TensorFlow process loading with compile=True
    then imports torch for; JAX: jit_compile=true): nothing backend-specific goes into model.keras.
    float32, because a mixed-precision model saves per-layer mixed_float16 policies that TFLite and
    ONNX conversion fail on ('tf.Conv2D' is neither a custom op nor a flex op); its variables are
    float32 already, so nothing is lost."""
    keras = import_keras()
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        def clone(layer):
            config = layer.get_config()
            if mixed_precision:
                config["dtype"] = "float32"
            return layer.__class__.from_config(config)

        # cloned as if uncompiled: clone_model would rebuild the compile config, which fails on a loss it
        # cannot look up by name (the label-smoothed one) and would then have saved the compiled original
        compiled, model.compiled = model.compiled, False
        try:
            copy = keras.models.clone_model(model, clone_function=clone)
        finally:
            model.compiled = compiled
    except (ValueError, TypeError):  # a subclassed model cannot be cloned: saved as it is
        if mixed_precision:
            raise
        return model
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    copy.compiled = False  # nothing about training goes into model.keras
    return copy


def _file_entry(path: Path) -> dict:
    return {"file": path.name, "sha256": sha256_file(path), "size": path.stat().st_size}


def tensor_spec(tensor) -> dict:
    shape = [None if d is None else int(d) for d in tensor.shape]
    name = getattr(tensor, "name", "tensor").split(":")[0]
    return {"name": name, "shape": shape, "dtype": str(getattr(tensor, "dtype", "float32"))}


__all__ = ["train"]
