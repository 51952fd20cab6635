"""Keras → ONNX float32 (tf2onnx from a traced function) and int8 (onnxruntime.quantization).

``tf2onnx.convert.from_keras`` fails on Keras 3 models, so the model is traced as a
``tf.function`` with an explicit input signature whose batch axis is dynamic. Keras input and
output names are kept in the ONNX graph.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from ..core.errors import ExportError
from ..core.metrics import agreement
from ..runners.modelio import input_names as names_in
from ..runners.modelio import output_names as names_out
from .plan import DEFAULT_OPSET

RECIPES = ("static", "dynamic")


def convert(model, opset: int = DEFAULT_OPSET) -> bytes:
    """float32 ONNX bytes, checked with ``onnx.checker`` (full check)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    input_names, output_names = names_in(model), names_out(model)
    signature = [tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=name)
                 for t, name in zip(model.inputs, input_names, strict=True)]

    @tf.function(input_signature=signature)
    def forward(*inputs):
        result = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        return result if isinstance(result, (list, tuple)) else [result]

    try:
        proto, _ = tf2onnx.convert.from_function(forward, input_signature=signature, opset=opset)
    except Exception as exc:
        raise ExportError(f"ONNX conversion failed (opset {opset}): {' '.join(str(exc).split())[:300]}") from exc
    _rename_outputs(proto, output_names)
    _name_batch_axis(proto)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"the ONNX graph failed onnx.checker: {exc}") from exc
    return proto.SerializeToString()


def _rename_outputs(proto, names: list[str]) -> None:
    """tf2onnx names outputs ``Identity:0``...; give them the Keras output names."""
    taken = {n for node in proto.graph.node for n in node.output} | {i.name for i in proto.graph.input}
    for output, wanted in zip(proto.graph.output, names, strict=True):
        old = output.name
        if old == wanted or wanted in taken:
            continue
        for node in proto.graph.node:
            node.output[:] = [wanted if n == old else n for n in node.output]
            node.input[:] = [wanted if n == old else n for n in node.input]
        output.name = wanted


def _name_batch_axis(proto) -> None:
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = "batch"


# ---------------------------------------------------------------- int8

def quantize(float_bytes: bytes, calibration: list[np.ndarray], input_names: list[str],
             recipe: str) -> tuple[bytes, dict]:
    """int8 ONNX via onnxruntime.quantization with one recipe, or ``auto``: measure both, keep the best.

    ``auto`` builds static QDQ (per-channel weights, calibrated) and dynamic, measures each one's
    size, single-sample latency and top-1 agreement with float on the calibration samples, and
    keeps the fastest of those that are really smaller (≤ 0.5× float) and agree within one point of
    the most faithful candidate.
    """
    if recipe != "auto":
        return _quantize_one(float_bytes, calibration, input_names, recipe), {"recipe": recipe}
    candidates = {}
    for name in RECIPES:
        try:
            candidates[name] = _quantize_one(float_bytes, calibration, input_names, name)
        except ExportError as exc:
            candidates[name] = exc
    scores = {name: _score(float_bytes, blob, calibration, input_names)
              for name, blob in candidates.items() if isinstance(blob, bytes)}
    if not scores:
        raise ExportError(f"ONNX int8 failed with every recipe: {candidates}")
    chosen = _pick(scores, len(float_bytes))
    return candidates[chosen], {"recipe": chosen, "auto": True, "measured": scores}


def _pick(scores: dict, float_size: int) -> str:
    best_agreement = max(s["agreement"] for s in scores.values())
    good = [name for name, s in scores.items()
            if s["size"] <= 0.5 * float_size and s["agreement"] >= best_agreement - 0.01]
    if good:
        return min(good, key=lambda name: scores[name]["p50_us"])
    return max(scores, key=lambda name: (scores[name]["agreement"], -scores[name]["size"]))


def _quantize_one(float_bytes: bytes, calibration, input_names, recipe: str) -> bytes:
    from onnxruntime import quantization as q

    with tempfile.TemporaryDirectory(prefix="edgedl-onnxq-") as tmp:
        source, prepared, target = (Path(tmp) / n for n in ("float.onnx", "prep.onnx", "int8.onnx"))
        source.write_bytes(float_bytes)
        try:
            q.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
        except Exception:
            prepared = source  # pre-processing is an optimisation; quantize the raw graph if it fails
        try:
            if recipe == "dynamic":
                q.quantize_dynamic(str(prepared), str(target), weight_type=q.QuantType.QInt8, per_channel=False)
            else:
                q.quantize_static(
                    str(prepared), str(target), _Reader(calibration, input_names),
                    quant_format=q.QuantFormat.QDQ, per_channel=True,
                    activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                    calibrate_method=q.CalibrationMethod.MinMax,
                )
        except Exception as exc:
            raise ExportError(f"ONNX {recipe} int8 quantization failed: {' '.join(str(exc).split())[:300]}") from exc
        return target.read_bytes()


class _Reader:
    """onnxruntime CalibrationDataReader over our calibration arrays, one sample per call."""

    def __init__(self, calibration: list[np.ndarray], input_names: list[str]):
        self._items = iter(
            {name: x[i : i + 1].astype(np.float32) for name, x in zip(input_names, calibration, strict=True)}
            for i in range(len(calibration[0]))
        )

    def get_next(self):
        return next(self._items, None)


def _score(float_bytes: bytes, quant_bytes: bytes, calibration, input_names) -> dict:
    """Size, agreement with float on the calibration samples, and single-sample p50 latency."""
    from ..runners.onnxrt import OnnxRuntimeRunner

    reference = OnnxRuntimeRunner(float_bytes).infer(calibration)[0]
    runner = OnnxRuntimeRunner(quant_bytes)
    candidate = runner.infer(calibration)[0]
    one = runner.prepare([x[:1] for x in calibration])
    for _ in range(20):
        runner.step(one)
    times = []
    for _ in range(200):
        start = time.perf_counter()
        runner.step(one)
        times.append(time.perf_counter() - start)
    return {"size": len(quant_bytes), "agreement": agreement(reference, candidate),
            "p50_us": float(np.median(times) * 1e6)}
