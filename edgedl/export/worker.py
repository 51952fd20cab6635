"""The conversion side of export, run inside the worker process (TensorFlow is imported here).

The loaded model, its calibration arrays and its float ONNX bytes are cached for the life of the
worker, so several targets of one model load TensorFlow and the model once.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..core.env import import_keras, library_versions, quiet_output
from ..core.errors import ExportError
from ..core.files import atomic_path, write_json
from ..core.layout import SUFFIX, relative_to, sidecar_path
from ..core.outputs import inside
from ..runners.modelio import input_names
from .calibration import load_calibration

_CACHE: dict = {}


def convert_target(src: dict, target: dict, out_dir: Path, options: dict) -> dict:
    with quiet_output():
        return _convert_target(src, target, out_dir, options)


def _convert_target(src: dict, target: dict, out_dir: Path, options: dict) -> dict:
    started = time.perf_counter()
    model = _model(src, options)
    fmt, precision = target["format"], target["precision"]
    reason = unsupported_reason(model, fmt, precision)
    if reason:
        raise ExportError(reason)
    calibration = _calibration(src, options, model) if precision == "int8" else None
    extra: dict = {}
    if fmt == "tflite":
        from . import tflite

        blob = tflite.convert(model, precision, calibration and calibration[0], options["io"], options["allow_flex"])
    else:
        blob, extra = _onnx_bytes(src, model, precision, calibration, options)
    path = inside(out_dir, out_dir / f"{src['name']}_{precision}{SUFFIX[fmt]}")  # never written elsewhere
    facts = {
        "target": f"{fmt} {precision}", "precision": precision, "name": src["name"],
        "architecture": src["architecture"],
        "io": options["io"] if (fmt == "tflite" and precision == "int8") else "float",
        # Paths in a sidecar are relative to the sidecar, so a folder can move or be bundled from anywhere.
        "source_model": {"path": relative_to(src["model_path"], out_dir), "sha256": src["model_sha256"]},
        "calibration": _relative_calibration(calibration[1], out_dir) if calibration else None,
        "versions": library_versions(), **extra,
    }
    return _write_with_sidecar(path, blob, fmt, options, facts, started)


def _relative_calibration(info: dict, out_dir: Path) -> dict:
    return {**info, "path": relative_to(info["path"], out_dir)}


def _write_with_sidecar(path: Path, blob: bytes, fmt: str, options: dict, facts: dict, started: float) -> dict:
    """Write the artifact atomically, only after the runtime loads the bytes and they use allowed ops.

    The sidecar is written completely *before* the artifact is renamed into place, so an artifact
    on disk always has its sidecar (a full disk can leave a sidecar alone, which nothing trusts).
    """
    from ..runners.describe import describe

    sidecar = sidecar_path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)
        info = describe(tmp, isolate=False, kind=fmt)  # bytes the converter just produced
        if info["flex_ops"] and not options["allow_flex"]:
            raise ExportError(f"the result needs ops outside the builtin set ({', '.join(info['flex_ops'])})",
                              hint="simplify the model, or pass --allow-flex knowingly")
        record = {**info, "file": path.name, **facts, "time_s": round(time.perf_counter() - started, 2)}
        if record.get("stateful"):
            record["notes"] = ["stateful: reset variable tensors (interpreter.reset_all_variables()) before "
                               "every inference; the fused LSTM keeps h/c between invokes"]
        try:
            write_json(sidecar, record)
        except BaseException:
            sidecar.unlink(missing_ok=True)
            raise
    return record


# ---------------------------------------------------------------- model, calibration, ONNX cache

def _model(src: dict, options: dict):
    key = (src["model_path"], repr(options["input_shapes"]), options["seq_len"])
    if key not in _CACHE:
        from ..runners.modelio import load_keras_model

        model = load_keras_model(src["model_path"], safe_mode=not options["unsafe"])
        _CACHE.clear()
        _CACHE[key] = fix_input_shapes(model, options["input_shapes"], options["seq_len"])
    return _CACHE[key]


def fix_input_shapes(model, shapes: dict, seq_len: int | None):
    """Rebuild the model on inputs with concrete sizes where the user gave them."""
    if not shapes and seq_len is None:
        return model
    unknown = set(shapes) - {"*"} - set(input_names(model))
    if unknown:
        raise ExportError(f"--input-shape names {', '.join(sorted(unknown))}, but the model's inputs are "
                          f"{', '.join(input_names(model))}")
    keras = import_keras()
    inputs = []
    for tensor in model.inputs:
        name = tensor.name.split(":")[0]
        shape = list(shapes.get(name) or shapes.get("*") or tensor.shape[1:])
        if seq_len is not None and len(shape) >= 2 and shape[0] is None:
            shape[0] = seq_len
        inputs.append(keras.Input(shape=tuple(shape), name=name, dtype=tensor.dtype))
    outputs = model(inputs if len(inputs) > 1 else inputs[0])
    return keras.Model(inputs, outputs, name=model.name)


def _calibration(src: dict, options: dict, model) -> tuple[list[np.ndarray], dict]:
    path = src["calibration_path"]
    if not path:
        raise ExportError("int8 export needs calibration data and this model has no training run",
                          hint="pass --calibration data.npz (key x, or one key per input name)")
    key = ("calibration", path, options["calibration_samples"])
    if key not in _CACHE:
        _CACHE[key] = load_calibration(path, options["calibration_samples"], model)
    arrays, info = _CACHE[key]
    if src["calibration_sha256"]:
        info = {**info, "recorded_sha256": src["calibration_sha256"]}
    return arrays, info


def _onnx_bytes(src: dict, model, precision: str, calibration, options: dict) -> tuple[bytes, dict]:
    from . import onnx as onnx_export

    key = ("onnx-fp32", src["model_path"], options["opset"])
    if key not in _CACHE:
        _CACHE[key] = onnx_export.convert(model, opset=options["opset"])
    float_bytes = _CACHE[key]
    extra = {"opset": options["opset"]}
    if precision == "fp32":
        return float_bytes, extra
    blob, quant = onnx_export.quantize(float_bytes, calibration[0], input_names(model), options["onnx_quant"])
    return blob, {**extra, "onnx_quantization": quant}


# ---------------------------------------------------------------- preflight

RECURRENT = ("LSTM", "GRU", "SimpleRNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D")


def _layers(model):
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.__class__.__name__ in ("Sequential", "Functional", "Model"):
            yield from _layers(layer)
        else:
            yield layer


def _is_recurrent(model) -> bool:
    return any(layer.__class__.__name__ in RECURRENT for layer in _layers(model))


def unsupported_reason(model, fmt: str, precision: str) -> str | None:
    """Why (fmt, precision) cannot be done for this model, with the closest working alternative."""
    if fmt != "tflite":
        return None
    from . import fused_lstm

    for layer in _layers(model):
        kind = layer.__class__.__name__
        if kind == "LSTM":
            reason = fused_lstm.unsupported_reason(layer)
            if reason:
                return f"layer {layer.name!r}: {reason}; closest alternative: --format onnx"
        elif kind in RECURRENT and precision == "int8":
            return (f"layer {layer.name!r} ({kind}): full-integer int8 TFLite of this recurrent layer crashes the "
                    "converter; closest alternatives: --quantize dynamic (int8 weights), or --format onnx --quantize int8")
    return None


def preflight(src: dict, targets: list[dict], options: dict) -> dict:
    with quiet_output():
        return _preflight(src, targets, options)


def _preflight(src: dict, targets: list[dict], options: dict) -> dict:
    from ..core.errors import EdgedlError

    findings = []
    model = _model(src, options)
    for tensor in model.inputs:
        open_dims = [i for i, d in enumerate(tensor.shape[1:], 1) if d is None]
        if open_dims:
            findings.append({"level": "error", "message": f"input {tensor.name!r} has open dimensions {open_dims} "
                             f"(shape {tuple(tensor.shape)})",
                             "fix": "pass --input-shape (e.g. 28,28) or --seq-len N"})
    for target in targets:
        reason = unsupported_reason(model, target["format"], target["precision"])
        if reason:
            findings.append({"level": "error", "message": f"{target['format']} {target['precision']}: {reason}",
                             "fix": "drop this mode or use the alternative named"})
    if not any(f["level"] == "error" for f in findings):
        try:
            from . import tflite

            tflite.convert(model, "fp32", None)
            findings.append({"level": "ok", "message": "float TFLite converts with builtin ops only", "fix": ""})
        except EdgedlError as exc:
            findings.append({"level": "error", "message": exc.one_line(),
                             "fix": "ops outside the builtin set need --allow-flex (not runnable by LiteRT's wheel)"})
    return {"model": src["model_path"], "ok": not any(f["level"] == "error" for f in findings),
            "recurrent": _is_recurrent(model), "findings": findings}
