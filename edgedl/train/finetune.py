"""``edgedl finetune RUN``: continue training a finished run, under int8 fake quantization (``--qat``) or
in plain float, into a new run folder.

The training data is the run's own (re-loaded from the source its manifest names, with the same split
seed; its hash must match) or, for a model edgedl did not train, ``--data``. Inputs get the
preprocessing the run recorded. The new run keeps the parent's held-out and calibration files (same
inputs), records its parent, and is a model like any other: export it with ``--quantize int8``.
A fine-tuned model is a *new* float model (a few percent of its decisions can change), so its
exports are validated against it, and its accuracy against the labels says whether it is better.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np

from .. import data as data_lib
from ..core.env import import_keras, library_versions
from ..core.errors import DataError, UsageError
from ..core.files import staging_dir, sweep_leftovers, write_json
from ..core.layout import CALIBRATION_FILE, HELDOUT_FILE, HISTORY_FILE, MANIFEST, MODEL_FILE
from ..core.outputs import claim
from ..recipe import DEFAULT_QAT_EPOCHS
from ..subject import Subject
from .fit import QAT_RATE, _file_entry, _metrics, _model_inputs


def finetune(run_dir: str | Path, out: str | Path, epochs: int = DEFAULT_QAT_EPOCHS, qat: bool = True,
             learning_rate: float | None = None, data: str | None = None, say=print) -> dict:
    """Fine-tune the model of ``run_dir`` into the new run folder ``out``; return its manifest."""
    subject, out = Subject.resolve(run_dir), Path(out)
    if subject.run_dir is None:
        raise UsageError(f"finetune continues a training run; {run_dir} is a model file without one",
                         hint=f"make a run first: edgedl train --model {run_dir} --data train.npz --out runs/NAME")
    run_dir, parent = subject.run_dir, subject.manifest
    if out.resolve() == run_dir.resolve():
        raise UsageError("finetune writes a new run: --out must differ from the run it starts from")
    from ..runners.modelio import load_keras_model

    model = load_keras_model(subject.model_path)
    if qat:
        from .qat import refuse_unsupported

        refuse_unsupported(model)
    dataset = _dataset(parent, data)
    recorded = subject.recorded or {"scale": 1.0, "offset": 0.0}
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UsageError("finetune handles models with one input and one output",
                         hint="fine-tune a multi-input or multi-output model in Keras, then `edgedl export` it")
    x_train, x_val = (_model_inputs(x, recorded, model, what) for x, what in
                      ((dataset.x_train, "training"), (dataset.x_val, "validation")))
    training = parent.get("training") or {}
    rate = learning_rate or (training.get("learning_rate") or 1e-3) * QAT_RATE
    batch = int(training.get("batch_size") or 64)
    out = claim(out, "run")
    sweep_leftovers(out)
    started = time.perf_counter()
    say(f"fine-tuning {run_dir} for {epochs} epoch(s) at learning rate {rate:g}"
        + (" under int8 fake quantization" if qat else " in float"))
    if qat:
        from .qat import finetune as qat_finetune

        model, record = qat_finetune(model, x_train, dataset.y_train, x_val, dataset.y_val, dataset.task, epochs,
                                     rate, batch, int(parent.get("seed", 0)), say)
    else:
        model, record = _float_finetune(model, x_train, dataset.y_train, x_val, dataset.y_val, dataset.task,
                                        epochs, rate, batch, int(parent.get("seed", 0)))
    metrics = _heldout_metrics(model, run_dir, dataset.task, record["history"])
    return _write(out, run_dir, parent, model, metrics, record | {"qat": qat}, time.perf_counter() - started)


def _heldout_metrics(model, run_dir: Path, task: str, history: dict) -> dict:
    """The fine-tuned model on the run's own held-out file (the split every export is validated on)."""
    from types import SimpleNamespace

    with np.load(run_dir / HELDOUT_FILE, allow_pickle=False) as heldout:
        x, y = heldout["x"], heldout["y"]
    predictions = model.predict(x, batch_size=256, verbose=0)
    return _metrics(predictions, SimpleNamespace(task=task, y_test=y),
                    {"loss": history.get("qat_loss") or history.get("loss", []),
                     "val_accuracy": history.get("qat_val_accuracy") or history.get("val_accuracy")})


def _dataset(parent: dict, data: str | None):
    described = parent.get("dataset") or {}
    source = data or described.get("source")
    if not source:
        raise UsageError("this run does not name the data it was trained on (a model edgedl did not train)",
                         hint="pass --data train.npz (x_train, y_train), or name it in the model card: "
                              "[data] train = \"train.npz\"")
    dataset = data_lib.load_dataset(source, seed=int(described.get("split_seed", parent.get("seed", 0))),
                                    task=parent.get("task"))
    if data is None and described.get("test_sha256") and dataset.describe()["test_sha256"] != described["test_sha256"]:
        raise DataError(f"the data at {source} is not what this run was trained on (its held-out split differs)",
                        hint="pass the training data with --data")
    return dataset


def _float_finetune(model, x_train, y_train, x_val, y_val, task, epochs, rate, batch, seed):
    """The control for QAT: the same schedule in float, keeping the epoch with the lowest val loss."""
    keras = import_keras()
    from .best import BestEpoch

    keras.utils.set_random_seed(seed)
    loss = "mse" if task == "regression" else "sparse_categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(rate), loss=loss,
                  metrics=["mae"] if task == "regression" else ["accuracy"])
    best = BestEpoch(patience=epochs, start_from_epoch=0)
    history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=epochs, batch_size=batch,
                        callbacks=[best], verbose=0)
    return model, {"epochs": epochs, "learning_rate": rate, "batch_size": batch, "kept_epoch": best.best_epoch,
                   "history": {k: [float(v) for v in values] for k, values in history.history.items()}}


def _write(out: Path, run_dir: Path, parent: dict, model, metrics: dict, record: dict, elapsed: float) -> dict:
    with staging_dir(out, "run") as staging:
        model.save(staging / MODEL_FILE)
        for name in (CALIBRATION_FILE, HELDOUT_FILE):  # the same inputs: the parent's files, as they are
            if (run_dir / name).exists():
                shutil.copyfile(run_dir / name, staging / name)
        write_json(staging / HISTORY_FILE, record["history"])
        manifest = {**parent, "model": _file_entry(staging / MODEL_FILE), "metrics": metrics,
                    "name": f"{parent.get('name', run_dir.name)}-{'qat' if record['qat'] else 'ft'}",
                    "parent": {"run": str(run_dir.resolve()), "model_sha256": parent["model"]["sha256"],
                               "metrics": parent.get("metrics")},
                    "finetune": {k: v for k, v in record.items() if k != "history"} | {"time_s": round(elapsed, 2)},
                    "versions": library_versions()}
        for key in ("calibration", "heldout"):
            if parent.get(key):
                manifest[key] = {**parent[key], **_file_entry(staging / parent[key]["file"])}
        write_json(staging / MANIFEST, manifest)
        names = [MODEL_FILE, HISTORY_FILE] + [n for n in (CALIBRATION_FILE, HELDOUT_FILE) if (staging / n).exists()]
        for name in names + [MANIFEST]:
            os.replace(staging / name, out / name)  # manifest last
    return manifest


__all__ = ["finetune"]
