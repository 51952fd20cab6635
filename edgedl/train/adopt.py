"""Adopt a model trained elsewhere: a ``.keras`` file plus a model card become a run folder.

The run folder is the same one ``edgedl train`` writes (model.keras, manifest.json, heldout.npz,
calibration.npz, history.json), so export, validate, bench, bundle and the pipeline treat the model
exactly like one edgedl trained. What training would have recorded comes from the card: the task,
the class names, how raw data becomes model input, the held-out data and the calibration data.
The preprocessing decision is printed and recorded like a trained run's.
"""

from __future__ import annotations

import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from .. import data as data_lib
from ..core.env import library_versions
from ..core.errors import DataError, UsageError
from ..core.files import staging_dir, sweep_leftovers, write_json, write_npz
from ..core.layout import CALIBRATION_FILE, HELDOUT_FILE, HISTORY_FILE, MANIFEST, MODEL_FILE
from ..core.metrics import task_metrics
from ..core.outputs import claim, safe_name
from ..runners.keras import KerasRunner
from ..runners.modelio import model_facts
from ..subject import Declared, Subject
from .fit import _file_entry


def adopt(model_path: str | Path, card_path: str | Path, out: str | Path, name: str | None = None,
          unsafe: bool = False, say=print) -> dict:
    """Write the run folder ``out`` for ``model_path`` described by the card; return its manifest."""
    model_path = Path(model_path)
    subject = Subject.resolve(model_path, Declared(card=card_path), name=name)
    card = subject.card
    if not card.heldout:
        raise UsageError(f"model card {card_path} names no held-out data",
                         hint="add [data] heldout = \"heldout.npz\" (inputs x or one per input; labels y)")
    runner = KerasRunner(model_path, safe_mode=not unsafe)
    facts = model_facts(runner.model)
    out = claim(out, "run")
    sweep_leftovers(out)
    started = time.perf_counter()
    heldout, labels, preprocessing = _load(subject, card.heldout, runner, facts, say)
    calibration = _load(subject, card.calibration, runner, facts, say)[0] if card.calibration else None
    outputs = runner.infer(heldout)
    task = card.task or ("classification" if labels and labels[0].dtype.kind in "iu" else "regression")
    with staging_dir(out, "run") as staging:
        shutil.copyfile(model_path, staging / MODEL_FILE)
        write_npz(staging / HELDOUT_FILE, **_keyed("x", heldout, runner.inputs), **_keyed("y", labels, runner.outputs))
        if calibration is not None:
            write_npz(staging / CALIBRATION_FILE, **_keyed("x", calibration, runner.inputs))
        write_json(staging / HISTORY_FILE, {})
        manifest = _manifest(model_path, card, runner, task, preprocessing, heldout, labels, outputs, staging,
                             name, calibration is not None, time.perf_counter() - started)
        write_json(staging / MANIFEST, manifest)
        for file in (MODEL_FILE, HELDOUT_FILE, CALIBRATION_FILE, HISTORY_FILE, MANIFEST):
            if (staging / file).exists():
                os.replace(staging / file, out / file)
    return manifest


def _load(subject: Subject, path: Path, runner, facts: dict, say):
    """The card's raw samples as model inputs (the subject's one preprocessing decision), and labels."""
    outputs = [t.name for t in runner.outputs]
    classes = dict(zip(outputs, facts["output_classes"], strict=True))
    raw, labels = subject.read(path, runner.inputs, outputs, None, "model card data", facts, classes)
    # no training range to check against yet: this data defines it
    arrays, preprocessing = subject.to_model(raw, runner.inputs, facts, path.name, say, check_range=False)
    counts = {len(a) for a in arrays.values()} | {len(y) for y in labels.values()}
    if len(counts) != 1:
        raise DataError(f"{path}: inputs and labels hold different numbers of samples: {sorted(counts)}")
    return list(arrays.values()), [labels[name] for name in outputs if name in labels], preprocessing


def _keyed(prefix: str, arrays: list, specs) -> dict:
    """``x``/``y`` for a single tensor, else ``x_<name>``/``y_<name>`` (what validate reads back)."""
    if not arrays:
        return {}
    if len(arrays) == 1:
        return {prefix: arrays[0]}
    return {f"{prefix}_{t.name}": array for t, array in zip(specs, arrays, strict=False)}


def _manifest(model_path, card, runner, task, preprocessing, heldout, labels, outputs, staging, name,
              calibrated, seconds) -> dict:
    first = heldout[0]
    if preprocessing is not None:
        preprocessing["input_range"] = data_lib.value_range(first) if first.dtype.kind == "f" else None
    metrics = {"epochs_run": 0, **task_metrics(task, outputs[0], labels[0] if labels else None)}
    return {
        "edgedl": "training-run/1",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "name": safe_name(name or model_path.stem),
        "architecture": None,
        "model_source": str(model_path),
        "adopted": {"card": str(card.path), **card.describe()},
        "model": _file_entry(staging / MODEL_FILE),
        "inputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in runner.inputs],
        "outputs": [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in runner.outputs],
        "task": task,
        "sequence_output": len(outputs[0].shape) == 3,
        "class_names": card.labels or [],
        "dataset": {"name": card.heldout.stem, "sample_shape": list(first.shape[1:]),
                    "sample_kind": data_lib.sample_kind(first), "dtype": str(first.dtype), "task": task,
                    "sizes": {"train": 0, "val": 0, "test": len(first)}, "preprocessing": preprocessing,
                    "source": str(card.train) if card.train else None},
        "training": {"adopted": True, "time_s": round(seconds, 2), "devices": [], "epochs": 0},
        "metrics": metrics,
        "calibration": {**_file_entry(staging / CALIBRATION_FILE), "count": None} if calibrated else None,
        "heldout": {**_file_entry(staging / HELDOUT_FILE), "count": len(first)},
        "history": HISTORY_FILE,
        "versions": library_versions(),
    }
