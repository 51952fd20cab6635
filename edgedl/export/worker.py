"""The conversion side of export, run inside the worker process (TensorFlow is imported here).

The loaded model, its calibration arrays and its float ONNX bytes are cached for the life of the
worker, so several targets of one model load TensorFlow and the model once.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from ..core.env import import_keras, library_versions, quiet_output
from ..core.errors import EdgedlError, ExportError
from ..core.files import atomic_path, write_json
from ..core.layout import relative_to, sidecar_path
from ..core.outputs import inside
from ..runners.modelio import input_names, output_names
from ..subject import Subject
from .calibration import load_calibration
from .plan import CALIBRATED, UNROLLED_TAG, Target
from .ranges import choose_method, faithfulness

_CACHE: dict = {}
_SESSION: list[int] = []  # the export session the cache belongs to (run.py keeps this worker warm)


def begin(session: int) -> None:
    """A task of export ``session``: a new session starts from nothing, as a fresh worker would (no
    cached model, calibration or ONNX bytes; Keras' layer-name counters reset, so tensor names and the
    artifact's bytes do not depend on what the worker converted before)."""
    if _SESSION == [session]:
        return
    _CACHE.clear()
    _SESSION[:] = [session]
    import_keras().backend.clear_session()


def convert_target(src: dict, target: dict, out_dir: Path, options: dict) -> dict:
    with quiet_output():
        return _convert_target(src, target, out_dir, options)


def _convert_target(src: dict, target: dict, out_dir: Path, options: dict) -> dict:
    started = time.perf_counter()
    model = _model(src, options)
    fmt, precision = target["format"], target["precision"]
    unrolled = target.get("tag") == UNROLLED_TAG
    reason = unsupported_reason(model, fmt, precision, unrolled)
    if reason:
        raise ExportError(reason)
    calibration = _calibration(src, options, model) if precision in CALIBRATED else None
    searched = target.get("keep_float") is not None  # a search may find that no layer needs to be float
    keep_float = tuple(target["keep_float"] if searched else options.get("keep_float") or ())
    if precision == "mixed" and not keep_float and not searched:
        raise ExportError("a mixed target needs the layers to keep in float", hint="pass --keep-float LAYER,… or auto")
    extra: dict = {"keep_float": list(keep_float)} if precision == "mixed" else {}
    extra.update(target.get("facts") or {})
    if fmt == "tflite":
        from . import tflite

        blob, range_facts = _tflite_bytes(model, precision, calibration, options, keep_float, unrolled)
        extra.update(range_facts)
        if unrolled:
            extra["unrolled"] = {"timesteps_fixed": True, "note": "recurrent layers written out over the input's "
                                 "fixed timesteps: a sequence of another length needs a new export"}
        if options.get("target") and precision == "int8":
            _refuse_ops_without_tflm_kernel(blob, model, options["target"])
        if precision in ("int16x8", "mixed"):
            extra["integer_ops"] = integer_share(blob)
        if precision == "dynamic" and not tflite.quantized_weights(blob):
            extra["no_effect"] = True  # flagged in the sidecar, the report, and never recommended
            extra["notes"] = ["dynamic-range quantized no weight (the converter skips weight tensors under 1024 "
                              "values): this file computes like fp32; ship fp32, or int8 for integer-only targets"]
    else:
        blob, onnx_facts = _onnx_bytes(src, model, precision, calibration, options, keep_float)
        extra.update(onnx_facts)
    path = inside(out_dir, out_dir / Target(fmt, precision, tag=target.get("tag") or "").file_name(src["name"]))
    facts = {
        "keras_outputs": output_names(model),
        "target": f"{fmt} {precision}", "precision": precision, "name": src["name"],
        "architecture": src["architecture"],
        "io": options["io"] if (fmt == "tflite" and precision == "int8") else "float",  # int16x8, mixed: float I/O
        # Paths in a sidecar are relative to the sidecar, so a folder can move or be bundled from anywhere.
        "source_model": {"path": relative_to(src["model_path"], out_dir), "sha256": src["model_sha256"]},
        "calibration": _relative_calibration(calibration[1], out_dir) if calibration else None,
        "versions": library_versions(), **extra,
    }
    return _write_with_sidecar(path, blob, fmt, options, facts, started)


def _tflite_bytes(model, precision: str, calibration, options: dict, keep_float: tuple[str, ...],
                  unrolled: bool = False) -> tuple[bytes, dict]:
    """The artifact's bytes, and how its activation ranges were chosen (for the sidecar)."""
    from . import tflite

    method = options.get("calibration_method") or "minmax"
    if precision not in tflite.RANGED:
        blob = _tflite_one(model, precision, calibration, options, keep_float, "minmax", unrolled)
        if precision in CALIBRATED and method != "minmax":  # said, not silently ignored
            return blob, {"calibration_method": "minmax", "notes": [
                f"{precision} uses min/max activation ranges: the converter calibrates and quantizes it in one "
                f"step, so --calibration-method {method} applies to int8 and mixed targets only"]}
        return blob, {}
    if method != "auto":
        return (_tflite_one(model, precision, calibration, options, keep_float, method, unrolled),
                {"calibration_method": method})
    return choose_method(lambda m: _tflite_one(model, precision, calibration, options, keep_float, m, unrolled),
                         _litert_score(model, calibration[0]))


def _tflite_one(model, precision: str, calibration, options: dict, keep_float: tuple[str, ...], method: str,
                unrolled: bool = False) -> bytes:
    from . import tflite

    try:
        blob = tflite.convert(model, precision, calibration and calibration[0], options["io"], options["allow_flex"],
                              keep_float, method, unrolled)
    except ExportError as exc:
        op = re.search(r"16x8-bit not yet supported for op: '(\w+)'", str(exc))
        if precision == "int16x8" and op:
            raise _int16_refusal(op.group(1), model, "the converter has no 16-bit kernel for it") from exc
        raise
    if precision == "int16x8":
        _check_int16(blob, model)
    return blob


def _litert_score(model, calibration: list[np.ndarray]):
    """Scores a candidate against the Keras model on the calibration samples (first output, as ONNX's
    choice is scored), running it in LiteRT in a child process."""
    from ..runners.isolation import isolated_bytes
    from ..runners.keras import KerasRunner

    reference = KerasRunner(model).infer(calibration)[0]
    # by name: a TFLite file may order its inputs differently from the Keras model
    named = dict(zip(input_names(model), calibration, strict=True))

    def score(blob: bytes) -> dict:
        with isolated_bytes(blob, ".tflite", "litert") as runner:
            return faithfulness(reference, runner.infer(named)[0], blob)

    return score


def _check_int16(blob: bytes, model) -> None:
    """Every int16 op must have a LiteRT kernel: the measured table first, then one allocate + invoke
    in a child process (the int16 SQUARED_DIFFERENCE passes prepare and fails only when invoked)."""
    from ..runners.isolation import isolated_bytes, probe_feeds
    from ..runners.litert_kernels import INT16_REFUSED
    from . import tflite

    for op, _, dtype in tflite.ops_with_types(blob):
        if dtype == "INT16" and op in INT16_REFUSED:
            raise _int16_refusal(op, model, INT16_REFUSED[op], blob)
    try:
        with isolated_bytes(blob, ".tflite", "litert") as runner:
            runner.infer(probe_feeds(runner.inputs, "the int16x8 model"))
    except EdgedlError as exc:
        failed = re.search(r"\((\w+)\) failed to (prepare|invoke)", str(exc))
        if failed:
            raise _int16_refusal(failed.group(1), model, f"LiteRT failed to {failed.group(2)} it", blob) from exc
        raise ExportError(f"the int16x8 model does not run in LiteRT: {exc.one_line()}") from exc


def _int16_refusal(op: str, model, why: str, blob: bytes | None = None) -> ExportError:
    """A refusal naming the op and the Keras layers it comes from (found in the float graph if needed)."""
    from ..runners.modelio import layer_classes, layers_in
    from . import tflite

    graph = tflite.ops_with_tensors(blob if blob is not None else tflite.convert(model, "fp32", None))
    known = layer_classes(model)
    layers = sorted({layer for name, tensor in graph if name == op for layer in layers_in(tensor, known)})
    where = f" (layer{'s' if len(layers) > 1 else ''} {', '.join(repr(n) for n in layers)})" if layers else ""
    return ExportError(f"int16x8: LiteRT has no 16-bit kernel for {op}{where}: {why}",
                       hint="keep those layers in float instead (--quantize int8 --keep-float LAYER), or replace them")


def integer_share(blob: bytes) -> dict:
    """How much of a quantized model computes in integers: ops by the type of what they produce."""
    from . import tflite

    typed = [(op, dtype) for op, _, dtype in tflite.ops_with_types(blob) if op not in ("QUANTIZE", "DEQUANTIZE")]
    integer = sum(1 for _, dtype in typed if dtype in ("INT8", "INT16", "INT32", "UINT8"))
    return {"integer": integer, "float": len(typed) - integer,
            "float_ops": sorted({op for op, dtype in typed if dtype == "FLOAT32"})}


def _refuse_ops_without_tflm_kernel(blob: bytes, model, target: str) -> None:
    """For a microcontroller target, every op must have a TFLite Micro kernel: refuse, naming the Keras
    layer behind each op that has none, before anything is written."""
    from ..runners.modelio import layer_classes, layer_for
    from ..runners.tflm_kernels import KERNELS, alternatives
    from . import tflite

    layers = layer_classes(model)
    missing = [(op, layer_for(tensor, layers) or tensor) for op, tensor in tflite.ops_with_tensors(blob)
               if op not in KERNELS]
    if missing:
        named = "; ".join(f"layer {layer!r} → {op}" for op, layer in dict.fromkeys(missing))
        raise ExportError(f"TFLite Micro ({target}) has no kernel for: {named}",
                          hint=alternatives(op for op, _ in missing))


def keras_output_names(outputs: list[dict], names: list[str]) -> list[dict]:
    """TFLite signatures call outputs ``output_0``, ``output_1``… in Keras order: give them the Keras names
    (the runtime's tensor name stays in ``tensor``)."""
    renamed = []
    for spec in outputs:
        head, _, number = spec["name"].rpartition("_")
        if head == "output" and number.isdigit() and int(number) < len(names):
            spec = {**spec, "name": names[int(number)], "signature": spec["name"]}
        renamed.append(spec)
    return renamed


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
        info["outputs"] = keras_output_names(info["outputs"], facts.pop("keras_outputs"))
        record = {**info, "file": path.name, **facts, "time_s": round(time.perf_counter() - started, 2)}
        if record.get("stateful"):
            record["notes"] = [*record.get("notes", []), "stateful: reset variable tensors "
                               "(interpreter.reset_all_variables()) before every inference; the fused LSTM keeps "
                               "h/c between invokes"]
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
        subject = Subject.from_dict(src["subject"]) if src["calibration_raw"] else None
        _CACHE[key] = load_calibration(path, options["calibration_samples"], model, subject)
    arrays, info = _CACHE[key]
    if src["calibration_sha256"]:
        info = {**info, "recorded_sha256": src["calibration_sha256"]}
    return arrays, info


def _onnx_bytes(src: dict, model, precision: str, calibration, options: dict,
                keep_float: tuple[str, ...]) -> tuple[bytes, dict]:
    from . import onnx as onnx_export

    key = ("onnx-fp32", src["model_path"], options["opset"])
    if key not in _CACHE:
        _CACHE[key] = onnx_export.convert(model, opset=options["opset"])
    float_bytes = _CACHE[key]
    extra = {"opset": options["opset"]}
    if precision == "fp32":
        return float_bytes, extra
    recipe = "static" if precision == "mixed" else options["onnx_quant"]  # node exclusion is a static QDQ idea
    excluded = onnx_export.nodes_of(float_bytes, model, keep_float) if keep_float else []
    blob, quant = onnx_export.quantize(float_bytes, calibration[0], input_names(model), recipe,
                                       options["calibration_method"], excluded)
    return blob, {**extra, "onnx_quantization": quant}


# ---------------------------------------------------------------- preflight

RECURRENT = ("LSTM", "GRU", "SimpleRNN", "Bidirectional", "ConvLSTM1D", "ConvLSTM2D")


def _layers(model):
    """Every layer, nested ones included (a Bidirectional's forward and backward LSTMs too)."""
    return model._flatten_layers(include_self=False, recursive=True)


def _is_recurrent(model) -> bool:
    return any(layer.__class__.__name__ in RECURRENT for layer in _layers(model))


def unsupported_reason(model, fmt: str, precision: str, unrolled: bool = False) -> str | None:
    """Why (fmt, precision) cannot be done for this model, with the closest working alternative."""
    if fmt != "tflite":
        return None
    from . import fused_lstm
    from . import unrolled as unrolled_graph

    if unrolled:
        reason = unrolled_graph.unsupported_reason(model)
        return f"cannot unroll: {reason}; closest alternative: the same target without :unrolled" if reason else None

    for layer in _layers(model):
        kind = layer.__class__.__name__
        if kind == "LSTM":
            reason = fused_lstm.unsupported_reason(layer)
            if reason:
                return f"layer {layer.name!r}: {reason}; closest alternative: --format onnx"
        elif kind in RECURRENT and kind != "Bidirectional" and precision in CALIBRATED:
            # Checked on TF 2.21: the batch-1 WHILE loop of a GRU/SimpleRNN segfaults the int8 converter.
            return (f"layer {layer.name!r} ({kind}): full-integer int8 TFLite of this recurrent layer crashes the "
                    "converter; closest alternatives: --quantize dynamic (int8 weights), or --format onnx --quantize int8")
    return None


def layers_with_ops(src: dict, options: dict) -> list[str]:
    """Keras layers owning ops of the float TFLite graph, in graph order (candidates to keep in float)."""
    from . import tflite

    with quiet_output():
        model = _model(src, options)
        ordered: dict[str, None] = {}
        top = {layer.name for layer in model.layers}  # a MultiHeadAttention, not its "query" sublayer
        for _, owners in tflite.op_owners(tflite.convert(model, "fp32", None), model):
            for layer in sorted(owners & top):
                ordered.setdefault(layer)
        return list(ordered)


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
        reason = unsupported_reason(model, target["format"], target["precision"], target.get("tag") == UNROLLED_TAG)
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
