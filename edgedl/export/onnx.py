"""Keras → ONNX float32 (tf2onnx from a frozen traced function) and int8 (onnxruntime.quantization).

``tf2onnx.convert.from_keras`` fails on Keras 3 models, so the model is traced as a
``tf.function`` with an explicit input signature whose batch axis is dynamic, frozen (variables and
captured tensors become constants: see onnx_fixes.py), and converted from the GraphDef. Keras
input and output names are kept, and the graph's inputs and outputs are checked against the Keras
model's: a mismatch is an export error, never a silent ✓.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np

from ..core.errors import ExportError
from ..core.files import temp_dir
from ..runners.modelio import input_names as names_in
from ..runners.modelio import output_names as names_out
from .onnx_fixes import frozen_graph, native_gru, register_erfc
from .plan import DEFAULT_OPSET
from .ranges import BINS, PERCENTILE, QUANTIZED_BINS, choose_method, faithfulness

RECIPES = ("static", "dynamic")


def convert(model, opset: int = DEFAULT_OPSET) -> bytes:
    """float32 ONNX bytes whose I/O equals the Keras model's, checked with ``onnx.checker`` (full)."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    register_erfc()
    input_names, output_names = names_in(model), names_out(model)
    signature = [tf.TensorSpec([None, *t.shape[1:]], t.dtype, name=name)
                 for t, name in zip(model.inputs, input_names, strict=True)]

    @tf.function(input_signature=signature)
    def forward(*inputs):
        result = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        return result if isinstance(result, (list, tuple)) else [result]

    try:
        with native_gru(model):
            graph_def, graph_inputs, graph_outputs = frozen_graph(forward)
        proto, _ = tf2onnx.convert.from_graph_def(graph_def, input_names=graph_inputs, output_names=graph_outputs,
                                                  opset=opset)
    except Exception as exc:
        raise ExportError(f"ONNX conversion failed (opset {opset}): {' '.join(str(exc).split())[:300]}") from exc
    _rename_inputs(proto, input_names)
    _rename_outputs(proto, output_names)
    _name_batch_axis(proto)
    check_io(proto, input_names, len(output_names))
    try:
        onnx.checker.check_model(proto, full_check=True)
    except Exception as exc:
        raise ExportError(f"the ONNX graph failed onnx.checker: {exc}") from exc
    return proto.SerializeToString()


def check_io(proto, input_names: list[str], outputs: int) -> None:
    """The graph must take exactly the Keras inputs and give as many outputs; anything else is broken."""
    initializers = {i.name for i in proto.graph.initializer}
    graph_inputs = [i.name for i in proto.graph.input if i.name not in initializers]
    if graph_inputs != input_names or len(proto.graph.output) != outputs:
        raise ExportError(f"the ONNX graph takes inputs {graph_inputs} and gives {len(proto.graph.output)} "
                          f"output(s), but the Keras model takes {input_names} and gives {outputs}: "
                          "the conversion lost or invented tensors")


def _rename_inputs(proto, names: list[str]) -> None:
    """The frozen graph's inputs are TensorFlow tensor names (``pixels:0``); give them the Keras names."""
    initializers = {i.name for i in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in initializers]
    for graph_input, wanted in zip(graph_inputs, names, strict=False):
        old = graph_input.name
        if old == wanted:
            continue
        for node in _all_nodes(proto.graph):
            node.input[:] = [wanted if n == old else n for n in node.input]
        graph_input.name = wanted


def _all_nodes(graph):
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g is not None and len(attribute.g.node):
                yield from _all_nodes(attribute.g)


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

def quantize(float_bytes: bytes, calibration: list[np.ndarray], input_names: list[str], recipe: str,
             method: str = "minmax", excluded: list[str] | None = None) -> tuple[bytes, dict]:
    """int8 ONNX via onnxruntime.quantization with one recipe, or ``auto``: measure both, keep the best.

    ``auto`` builds static QDQ (per-channel weights, calibrated) and dynamic, measures each one's
    size, single-sample latency and top-1 agreement with float on the calibration samples, and
    keeps the fastest of those that are really smaller (≤ 0.5× float) and agree within one point of
    the most faithful candidate. ``method`` is how static QDQ sets activation ranges (``auto``: each
    measured the same way, the most faithful kept); ``excluded`` nodes stay float.
    """
    excluded = excluded or []
    facts = {"excluded_nodes": len(excluded)} if excluded else {}
    if recipe == "static" or (recipe == "auto" and excluded):
        blob, chosen = _static(float_bytes, calibration, input_names, method, excluded)
        return blob, {"recipe": "static", **chosen, **facts}
    if recipe != "auto":
        return _quantize_one(float_bytes, calibration, input_names, recipe), {"recipe": recipe}
    named = dict(zip(input_names, calibration, strict=True))  # fed by name, never by position
    reference = _float_outputs(float_bytes, named)
    candidates: dict = {}
    static_facts: dict = {}  # how static QDQ's ranges were chosen (with auto: which method, and each one's scores)
    for name in RECIPES:
        try:
            if name == "static":
                candidates[name], static_facts = _static(float_bytes, calibration, input_names, method, [], reference)
            else:
                candidates[name] = _quantize_one(float_bytes, calibration, input_names, name)
        except ExportError as exc:
            candidates[name] = exc
    scores = {name: _score(reference, blob, named) for name, blob in candidates.items() if isinstance(blob, bytes)}
    if not scores:
        raise ExportError(f"ONNX int8 failed with every recipe: {candidates}")
    chosen = _pick(scores, len(float_bytes))
    return candidates[chosen], {"recipe": chosen, "auto": True, "measured": scores,
                                **(static_facts if chosen == "static" else {})}


def _static(float_bytes: bytes, calibration, input_names, method: str, excluded: list[str],
            reference: np.ndarray | None = None) -> tuple[bytes, dict]:
    """Static QDQ with one calibration method, or ``auto`` (ranges.choose_method; ``reference``: float's
    outputs on the calibration samples, when the caller has them already)."""
    if method != "auto":
        return _quantize_one(float_bytes, calibration, input_names, "static", method, excluded), \
            {"calibration_method": method}
    from ..runners.onnxrt import OnnxRuntimeRunner

    named = dict(zip(input_names, calibration, strict=True))
    reference = _float_outputs(float_bytes, named) if reference is None else reference
    return choose_method(
        lambda m: _quantize_one(float_bytes, calibration, input_names, "static", m, excluded),
        lambda blob: faithfulness(reference, OnnxRuntimeRunner(blob).infer(named)[0], blob))


def nodes_of(float_bytes: bytes, model, layers: tuple[str, ...]) -> list[str]:
    """The ONNX nodes (tf2onnx keeps the Keras scope in their names) that belong to ``layers``."""
    import onnx

    from ..runners.modelio import layer_classes, layers_in
    from .tflite import require_layers

    known = layer_classes(model)
    owned = [(node.name, layers_in(node.name, known)) for node in onnx.load_from_string(float_bytes).graph.node]
    require_layers(layers, [owners for _, owners in owned])
    return [name for name, owners in owned if owners & set(layers)]


def _pick(scores: dict, float_size: int) -> str:
    best_agreement = max(s["agreement"] for s in scores.values())
    good = [name for name, s in scores.items()
            if s["size"] <= 0.5 * float_size and s["agreement"] >= best_agreement - 0.01]
    if good:
        return min(good, key=lambda name: scores[name]["p50_us"])
    return max(scores, key=lambda name: (scores[name]["agreement"], -scores[name]["size"]))


def _quantize_one(float_bytes: bytes, calibration, input_names, recipe: str, method: str = "minmax",
                  excluded: list[str] | None = None) -> bytes:
    from onnxruntime import quantization as q

    with temp_dir("onnxq") as tmp:
        source, prepared, target = (Path(tmp) / n for n in ("float.onnx", "prep.onnx", "int8.onnx"))
        source.write_bytes(float_bytes)
        try:
            # its symbolic shape inference, when incomplete, dumps sym_shape_infer_temp.onnx and <uuid>.data
            # into the working directory: run it inside our temporary folder, never the user's
            with contextlib.chdir(tmp):
                q.quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
        except Exception:
            prepared = source  # pre-processing is an optimisation; quantize the raw graph if it fails
        try:
            if recipe == "dynamic":
                q.quantize_dynamic(str(prepared), str(target), weight_type=q.QuantType.QInt8, per_channel=False)
            else:
                options = _calibration_options(prepared, calibration, input_names, method, Path(tmp))
                q.quantize_static(
                    str(prepared), str(target), _Reader(calibration, input_names),
                    quant_format=q.QuantFormat.QDQ, per_channel=True,
                    activation_type=q.QuantType.QInt8, weight_type=q.QuantType.QInt8,
                    nodes_to_exclude=list(excluded or []), **options,
                )
        except Exception as exc:
            raise ExportError(f"ONNX {recipe} int8 quantization failed: {' '.join(str(exc).split())[:300]}") from exc
        return target.read_bytes()


def _calibration_options(prepared: Path, calibration, input_names, method: str, tmp: Path) -> dict:
    from onnxruntime import quantization as q

    if method == "minmax":
        return {"calibrate_method": q.CalibrationMethod.MinMax}
    if method == "percentile":
        return {"calibrate_method": q.CalibrationMethod.Percentile,
                "extra_options": {"CalibPercentile": PERCENTILE}}
    # entropy: onnxruntime's quantize_static would use 128 bins (= MinMax, see ranges.py), so the ranges
    # are computed here with finer histograms and handed over as tensor overrides
    from onnxruntime.quantization.calibrate import create_calibrator

    calibrator = create_calibrator(str(prepared), augmented_model_path=str(tmp / "augmented.onnx"),
                                   calibrate_method=q.CalibrationMethod.Entropy,
                                   extra_options={"num_bins": BINS, "num_quantized_bins": QUANTIZED_BINS})
    calibrator.collect_data(_Reader(calibration, input_names))
    ranges = calibrator.compute_data()
    found = {name: data.range_value for name, data in ranges.data.items()}
    found.update(_bounded_outputs(prepared))
    overrides = {name: [{"rmin": np.float32(low), "rmax": np.float32(high)}] for name, (low, high) in found.items()}
    return {"calibrate_method": q.CalibrationMethod.MinMax, "extra_options": {"TensorQuantOverrides": overrides}}


# Ops whose output range is known: entropy must not clip it. A softmax is mostly near 0, so entropy
# cuts its range to a few hundredths and every confident class saturates into a tie (measured on the
# outlier CNN: 92 % agreement, 0.6 dB). TFLite pins these outputs to fixed scales by itself.
BOUNDED = {"Softmax": (0.0, 1.0), "Sigmoid": (0.0, 1.0), "Tanh": (-1.0, 1.0)}


def _bounded_outputs(model_path: Path) -> dict:
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    return {node.output[0]: BOUNDED[node.op_type] for node in graph.node if node.op_type in BOUNDED}


class _Reader:
    """onnxruntime CalibrationDataReader over our calibration arrays, one sample per call."""

    def __init__(self, calibration: list[np.ndarray], input_names: list[str]):
        # each input in its own dtype: token ids stay integers, as the graph declares them
        self._items = iter(
            {name: x[i : i + 1] for name, x in zip(input_names, calibration, strict=True)}
            for i in range(len(calibration[0]))
        )

    def get_next(self):
        return next(self._items, None)


def _float_outputs(float_bytes: bytes, named: dict[str, np.ndarray]) -> np.ndarray:
    from ..runners.onnxrt import OnnxRuntimeRunner

    return OnnxRuntimeRunner(float_bytes).infer(named)[0]


def _score(reference: np.ndarray, quant_bytes: bytes, named: dict[str, np.ndarray]) -> dict:
    """Size, agreement with float on the calibration samples (one array per input name), and
    single-sample p50 latency."""
    from ..runners.onnxrt import OnnxRuntimeRunner

    runner = OnnxRuntimeRunner(quant_bytes)
    candidate = runner.infer(named)[0]
    one = runner.prepare({name: x[:1] for name, x in named.items()})
    for _ in range(20):
        runner.step(one)
    times = []
    for _ in range(200):
        start = time.perf_counter()
        runner.step(one)
        times.append(time.perf_counter() - start)
    return faithfulness(reference, candidate, quant_bytes) | {"p50_us": float(np.median(times) * 1e6)}
