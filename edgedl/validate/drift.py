"""Per-layer drift of quantized artifacts (``edgedl validate --layers``).

TFLite: TensorFlow's quantization debugger re-runs the int8 model with float references at every
quantized tensor and reports RMSE in units of each tensor's scale. ONNX: every intermediate tensor
that the float and the int8 graph share is exposed as an output of both, and compared by SQNR.
TFLite tensors also get SQNR (the float tensor's power over the debugger's mean squared error).
Every tensor is named by the Keras layer that produced it (``drift_names.py``: converter-inserted
nodes are followed upstream to their layer), and reports list one row per layer, worst first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.env import quiet_output
from ..core.metrics import sqnr_db
from ..runners.modelio import layer_classes
from .drift_names import by_layer, debugger_tensor, onnx_producers, owner

DEBUG_SAMPLES = 64


def layer_drift(model_path, files, reference, reports, manifest, model_dir, options, say) -> dict:
    drift = {}
    model = _load(model_path)  # once, for layer names and the TFLite debugger's converter
    layer_names = layer_classes(model)
    inputs = [a[:DEBUG_SAMPLES] for a in reference.inputs.as_list]
    for artifact, report in zip(files, reports, strict=True):
        # The TFLite debugger re-quantizes in full-integer mode, so it speaks for int8 artifacts only.
        if report.get("precision") != "int8" and not (artifact.suffix == ".onnx" and report.get("precision") == "dynamic"):
            continue
        try:
            with quiet_output():
                rows, producers = _drift_rows(model, artifact, inputs, manifest, model_dir)
        except Exception as exc:  # drift is diagnostic: report why it is missing, never fail validation
            why = unavailable_reason(artifact, exc)
            drift[artifact.name] = {"error": why, "detail": f"{exc.__class__.__name__}: {str(exc)[:200]}"}
            say(f"  drift for {artifact.name} unavailable: {why}")
            continue
        for row in rows:
            row["layer"], row["inserted"] = owner(row.get("graph_tensor", row["tensor"]), layer_names, producers)
        layers = by_layer(rows)
        worst = layers[: options.top_k]
        drift[artifact.name] = {"metric": rows[0]["metric"] if rows else None, "tensors": rows, "worst": worst,
                                "layers": layers}
        say(f"  worst layers of {artifact.name}:")
        for row in worst:
            value = row["sqnr_db"] if row["metric"] == "sqnr_db" else row["score"]
            say(f"    {row['layer']:<24} {row['metric']} {value:8.3g}   ({row['tensors']} tensors)")
    return drift


def unavailable_reason(artifact: Path, exc: Exception) -> str:
    """One plain sentence for a report, never a Python exception's text (that stays in ``detail``)."""
    from ..core.errors import EdgedlError

    if isinstance(exc, FileNotFoundError) and artifact.suffix == ".onnx":
        return "the float ONNX model exported beside it is needed to compare layer by layer, and it is missing"
    if isinstance(exc, EdgedlError):
        return exc.one_line()
    if artifact.suffix == ".tflite":
        return ("TensorFlow's quantization debugger could not re-quantize this model layer by layer; "
                "the whole-model parity above still holds")
    return "its intermediate tensors could not be compared with the float model's; the whole-model parity above still holds"


def _drift_rows(model, artifact, inputs, manifest, model_dir) -> tuple[list[dict], dict]:
    """(rows, producers): the drift rows and each tensor's upstream tensors, for naming by layer."""
    if artifact.suffix == ".tflite":
        return _tflite_drift(model, inputs, manifest, model_dir)
    return _onnx_drift(artifact, inputs), onnx_producers(artifact)


def _load(model_path):
    if model_path is None:
        return None
    from ..runners.modelio import load_keras_model

    return load_keras_model(model_path)


# ---------------------------------------------------------------- TFLite

def _tflite_drift(model, inputs, manifest, model_dir) -> tuple[list[dict], dict]:
    """RMSE / scale per quantized tensor, from tf.lite.experimental.QuantizationDebugger."""
    import tensorflow as tf

    from ..export import tflite
    from ..export.calibration import load_calibration

    if model is None:
        raise ValueError("per-layer drift of TFLite needs the original Keras model")
    calibration = inputs
    if manifest and manifest.get("calibration"):
        calibration, _ = load_calibration(str(model_dir / manifest["calibration"]["file"]), None, model)
    converter = tflite.converter_for(model)
    tflite.configure(converter, "int8", calibration, "float", allow_flex=False)

    # Each input in the model's own dtype: token ids stay integers (an Embedding's input is int32).
    dtypes = [np.dtype(str(getattr(t, "dtype", "float32"))) for t in model.inputs]

    def debug_data():
        for i in range(len(inputs[0])):
            yield [x[i : i + 1].astype(dtype if dtype.kind in "iu" else np.float32)
                   for x, dtype in zip(inputs, dtypes, strict=True)]

    # The float tensor's mean square, beside the debugger's own mean squared error, gives SQNR.
    options = tf.lite.experimental.QuantizationDebugOptions(
        layer_direct_compare_metrics={"signal_power": lambda f, q, scale, zero: float(np.mean(np.square(f)))})
    with tflite.integer_layer_norm():  # the graph export makes, LayerNormalization included
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=debug_data,
                                                             debug_options=options)
    _run_in_litert(debugger)
    debugger.run()
    rows = []
    for tensor, stats in debugger.layer_statistics.items():
        scale = _tensor_scale(debugger, tensor)
        mse = float(stats.get("mean_squared_error", 0.0))
        rmse = float(np.sqrt(mse))
        signal = float(stats.get("signal_power", 0.0))
        sqnr = 10 * np.log10(signal / mse) if mse > 0 and signal > 0 else None
        rows.append({"tensor": tensor, "graph_tensor": debugger_tensor(debugger, tensor), "metric": "rmse/scale",
                     "score": rmse / scale if scale else rmse, "rmse": rmse, "sqnr_db": sqnr,
                     "max_abs_error": float(stats.get("max_abs_error", 0.0)), "scale": scale})
    from .drift_names import tflite_producers

    return rows, tflite_producers(debugger.quant_model)


def _run_in_litert(debugger) -> None:
    """Have the debugger run its quantized model in LiteRT, the interpreter edgedl validates with.

    Its own choice, tf.lite.Interpreter (TF 2.21) with XNNPACK, computes int8 BATCH_MATMUL up to 21
    quantization steps off (measured on an attention model; LiteRT, and TF's interpreter without
    XNNPACK, are within 0.5 steps), which would blame attention layers for an error that is not there.
    The debugger exposes no option for this: its interpreter attribute is replaced, then its
    statistics are re-initialised for the new interpreter (TF 2.21 internals)."""
    from ai_edge_litert.interpreter import Interpreter

    debugger._quant_interpreter = Interpreter(model_content=debugger.quant_model)
    debugger._initialize_stats()


def _tensor_scale(debugger, tensor_name: str) -> float:
    for detail in debugger._quant_interpreter.get_tensor_details():
        if detail["name"] == tensor_name:
            scales = detail.get("quantization_parameters", {}).get("scales", [])
            return float(scales[0]) if len(scales) else float(detail["quantization"][0])
    return 0.0


# ---------------------------------------------------------------- ONNX

def _onnx_drift(artifact: Path, inputs) -> list[dict]:
    """SQNR (dB, lower is worse; scored as its negative) of every tensor both graphs share."""
    float_path = artifact.with_name(artifact.name.replace("_int8", "_fp32").replace("_dynamic", "_fp32"))
    if float_path == artifact or not float_path.exists():
        raise FileNotFoundError(f"the float ONNX model {float_path.name} is needed beside {artifact.name}")
    float_out = _all_tensors(float_path, inputs)
    quant_out = _all_tensors(artifact, inputs)
    rows = []
    for name, ref in float_out.items():
        # In QDQ graphs a fused activation can disappear into the QuantizeLinear after it, so the
        # tensor that means "T as the next op sees it" is T's DequantizeLinear output.
        cand = quant_out.get(f"{name}_DequantizeLinear_Output", quant_out.get(name))
        if cand is None or cand.shape != ref.shape or ref.dtype.kind != "f":
            continue
        sqnr = sqnr_db(ref, cand)
        rows.append({"tensor": name, "metric": "sqnr_db", "sqnr_db": sqnr,
                     "score": -sqnr if np.isfinite(sqnr) else -999.0})
    return rows


def _all_tensors(path: Path, inputs) -> dict:
    """Every float tensor of the graph on ``inputs``, by name (run bounded: the file is the user's)."""
    from ..runners.isolation import isolated_bytes
    from ..runners.onnxrt import with_every_tensor

    with isolated_bytes(with_every_tensor(path.read_bytes()), ".onnx", "onnxruntime") as runner:
        floats = [i for i, spec in enumerate(runner.outputs) if spec.dtype.startswith("float")]
        # One sample per call, joined here: a recurrent graph's inner tensors (an LSTM's per-step
        # state, a Shape) do not all carry the batch on their first axis, so joining whole batches
        # on axis 0 fails; a tensor whose shape differs between samples is left out.
        samples = [runner.run(runner.prepare([x[i : i + 1] for x in inputs])) for i in range(len(inputs[0]))]
        joined = {}
        for i in floats:
            parts = [np.asarray(values[i]) for values in samples]
            if all(p.shape == parts[0].shape for p in parts):
                joined[runner.outputs[i].name] = np.stack(parts)
        return joined
