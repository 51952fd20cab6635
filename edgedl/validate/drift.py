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
from .drift_names import by_layer, onnx_producers, owner

DEBUG_SAMPLES = 64


def layer_drift(subject, files, reference, reports, options, say) -> dict:
    drift = {}
    manifest, model_dir = subject.manifest, subject.run_dir
    model = _load(subject.model_path)  # once, for layer names and the TFLite debugger's converter
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
    from .drift_names import tflite_producers

    return _numeric_verify_rows(debugger.quant_model, inputs), tflite_producers(debugger.quant_model)


def _numeric_verify_rows(debug_model: bytes, inputs) -> list[dict]:
    """The debugger's layer statistics, computed in LiteRT, the interpreter edgedl validates with.

    The debug model carries a NumericVerify op after each quantized tensor: its output is the
    difference between the int8 op's dequantized result and the float op's result on the same
    inputs. Each one (and the float result, for SQNR) is read through the Runner (``with_outputs``)
    on every sample, and reduced as tf.lite.experimental.QuantizationDebugger does (a statistic per
    sample, NaN-mean over samples). Each sample starts from a reset state, as in every Runner: the
    debugger's own loop carried a fused LSTM's h/c from one sample into the next. TF's own
    interpreter with XNNPACK, which the debugger would pick, computes int8 BATCH_MATMUL up to 21
    quantization steps off (measured on an attention model; LiteRT is within 0.5 steps), which would
    blame attention layers for an error that is not there."""
    from ..runners.litert import LiteRTRunner

    with LiteRTRunner(debug_model) as runner:
        graph = runner.flatbuffer.main
        ops = [op for op in graph.ops if op.label == "NumericVerify"]
        if not ops:
            raise ValueError("the debug model has no NumericVerify op")
        verify = [graph.output_of(op) for op in ops]
        floats = [op.inputs[1] if len(op.inputs) > 1 else None for op in ops]
        tapped_indices = [t.index for t in verify] + [i for i in floats if i is not None]
        with runner.with_outputs(tapped_indices) as tapped:
            values = tapped.infer(inputs)
        by_index = dict(zip(tapped_indices, values, strict=True))
    rows = []
    for op, tensor in zip(ops, verify, strict=True):
        per_sample = by_index[tensor.index].reshape(len(by_index[tensor.index]), -1)
        mse = float(np.nanmean(np.mean(per_sample**2, axis=1)))
        rmse = float(np.sqrt(mse))
        reference = by_index.get(op.inputs[1]) if len(op.inputs) > 1 else None
        signal = float(np.mean(np.square(reference))) if reference is not None else 0.0
        sqnr = 10 * np.log10(signal / mse) if mse > 0 and signal > 0 else None
        scale = tensor.scale
        rows.append({"tensor": tensor.name, "graph_tensor": graph.tensors[op.inputs[0]].name, "metric": "rmse/scale",
                     "score": rmse / scale if scale else rmse, "rmse": rmse, "sqnr_db": sqnr,
                     "max_abs_error": float(np.nanmean(np.max(np.abs(per_sample), axis=1))), "scale": scale})
    return rows


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
    from ..runners.base import EVERY_TENSOR
    from ..runners.isolation import IsolatedRunner

    with IsolatedRunner(path, "onnxruntime", outputs=EVERY_TENSOR) as runner:
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
