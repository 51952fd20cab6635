"""How an int8 model sets its activation ranges: min/max, percentile or entropy, for both formats.

One definition of each method: onnxruntime's HistogramCollector computes percentile and entropy
ranges, for ONNX static int8 (export/onnx.py) and for TFLite int8 alike.

TFLite's converter calibrates in two halves: a pass that records each activation's min/max into a
float model, then MLIR quantization from those records. Between the two, edgedl runs the calibrated
model over the same samples, histograms every recorded activation, and writes the method's range in
place of min/max. MinMax lets one outlier set the step size of a whole tensor; percentile and
entropy clip it, trading rare saturation for finer steps on the common values.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable

import numpy as np

from ..core.metrics import agreement, sqnr_db

METHODS = ("minmax", "entropy", "percentile")
PERCENTILE = 99.99
# Entropy needs its histogram finer than the int8 grid: onnxruntime's own default (128 bins for 128
# quantized bins) reproduces MinMax exactly (checked on onnxruntime 1.32).
BINS = 2048
QUANTIZED_BINS = 128


def collector(method: str, known: dict | None = None):
    """A HistogramCollector for ``method`` (percentile or entropy), fed with {tensor: array} per sample.

    ``known``: {tensor: (min, max)} already measured on the same samples. Each histogram then spans
    that range from the start. Otherwise it starts at the first sample's range and grows by whole
    bins as later samples reach further, to tens of thousands of bins, and entropy's search is
    quadratic in them (57 s for a 7-tensor model, against 2.2 s primed)."""
    from onnxruntime.quantization.calibrate import HistogramCollector

    histograms = HistogramCollector(method=method, symmetric=False, num_bins=BINS, num_quantized_bins=QUANTIZED_BINS,
                                    percentile=PERCENTILE, scenario="same")
    for name, (low, high) in (known or {}).items():
        # the collector's own layout (onnxruntime 1.32): counts, edges, min and max seen, half-width
        threshold = np.float32(max(abs(low), abs(high)))
        histograms.histogram_dict[name] = (np.zeros(BINS, dtype=np.int64),
                                           np.linspace(-threshold, threshold, BINS + 1, dtype=np.float32),
                                           np.float32(np.inf), np.float32(-np.inf), threshold)
    return histograms


def computed_ranges(histograms) -> dict:
    """{tensor: (low, high)} from a fed collector (its progress prints are not for our users)."""
    with contextlib.redirect_stdout(io.StringIO()):
        result = histograms.compute_collection_result()
    return {name: (float(value[0]), float(value[1])) for name, value in result.items()}


def most_faithful(scores: dict) -> str:
    """The method whose artifact agrees best with float on the calibration samples, then by output SQNR."""
    return max(scores, key=lambda m: (scores[m]["agreement"], scores[m]["sqnr_db"]))


def faithfulness(reference: np.ndarray, candidate: np.ndarray, blob: bytes) -> dict:
    """How an int8 candidate's first output compares with float's on the calibration samples."""
    return {"size": len(blob), "agreement": agreement(reference, candidate), "sqnr_db": sqnr_db(reference, candidate)}


def choose_method(build: Callable[[str], bytes], score: Callable[[bytes], dict]) -> tuple[bytes, dict]:
    """``auto``, for either format: every method built and scored, the most faithful kept, and the
    choice with every method's score returned for the sidecar."""
    built = {method: build(method) for method in METHODS}
    scores = {method: score(blob) for method, blob in built.items()}
    best = most_faithful(scores)
    return built[best], {"calibration_method": best, "calibration_auto": True, "calibration_measured": scores}


# ---------------------------------------------------------------- TFLite

@contextlib.contextmanager
def tflite_ranges(method: str):
    """While active, the TFLite converter quantizes from ``method``'s ranges instead of min/max.

    The converter exposes no hook between its calibration pass and quantization
    (tensorflow/lite/python/lite.py, TF 2.21): its Calibrator.calibrate is wrapped for the duration,
    and runs the calibration data a second time through the calibrated model."""
    if method == "minmax":
        yield
        return
    from tensorflow.lite.python.optimize import calibrator

    original = calibrator.Calibrator.calibrate

    def calibrate(self, dataset_gen):
        return with_ranges(original(self, dataset_gen), method, dataset_gen)

    calibrator.Calibrator.calibrate = calibrate
    try:
        yield
    finally:
        calibrator.Calibrator.calibrate = original


def with_ranges(calibrated: bytes, method: str, samples: Callable[[], Iterable]) -> bytes:
    """The calibrated float model with ``method``'s range recorded on each activation."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(calibrated))
    graph = model.subgraphs[0]
    activations = _recorded_activations(graph)
    interpreter = _preserving_interpreter(bytes(calibrated))
    samples_iter = iter(samples())
    first = next(samples_iter, None)
    if first is None:
        return calibrated
    _invoke(interpreter, first)
    readable = [i for i in activations if _readable(interpreter, i)]
    recorded = {i: (float(graph.tensors[i].quantization.min[0]), float(graph.tensors[i].quantization.max[0]))
                for i in readable}
    histograms = collector(method, recorded)
    with contextlib.redirect_stdout(io.StringIO()):  # the collector prints a line per call
        histograms.collect({i: interpreter.get_tensor(i).astype(np.float32) for i in readable})
        for sample in samples_iter:
            _invoke(interpreter, sample)
            histograms.collect({i: interpreter.get_tensor(i).astype(np.float32) for i in readable})
    if not readable:
        return calibrated
    for index, (low, high) in computed_ranges(histograms).items():
        if np.isfinite(low) and np.isfinite(high) and high > low:
            graph.tensors[index].quantization.min = [low]
            graph.tensors[index].quantization.max = [high]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _recorded_activations(graph) -> list[int]:
    """Tensors the calibration pass recorded one range for that an op produces (or the graph takes in).

    A fused LSTM's internal intermediates and variable state tensors are left at min/max: the
    interpreter does not hold their values after an invoke."""
    produced = set(graph.inputs) | {i for op in graph.operators for i in (op.outputs if op.outputs is not None else [])}
    chosen = []
    for index in sorted(produced):
        tensor = graph.tensors[index]
        q = tensor.quantization
        if tensor.isVariable or q is None or q.min is None or q.max is None or len(q.min) != 1:
            continue
        chosen.append(index)
    return chosen


def _preserving_interpreter(blob: bytes):
    """The reference interpreter with every tensor kept after invoke (XNNPACK off: it fuses them away)."""
    from ..runners.litert import interpreter_module

    module, _ = interpreter_module()
    interpreter = module.Interpreter(
        model_content=blob, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter


def _invoke(interpreter, sample) -> None:
    """One representative sample, as the converter's generator yields it: a list of arrays in input
    order, or a dict by input name (several inputs)."""
    from ..runners.litert import signature_names

    details = interpreter.get_input_details()
    if isinstance(sample, dict):
        names, _ = signature_names(interpreter)
        feeds = [sample[names[d["index"]]] if d["index"] in names else list(sample.values())[k]
                 for k, d in enumerate(details)]
    else:
        feeds = list(sample)
    interpreter.reset_all_variables()
    for detail, x in zip(details, feeds, strict=True):
        interpreter.set_tensor(detail["index"], np.asarray(x, dtype=detail["dtype"]))
    interpreter.invoke()


def _readable(interpreter, index: int) -> bool:
    try:
        return interpreter.get_tensor(index).size > 0
    except ValueError:
        return False
