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
    from ..runners.litert import LiteRTRunner
    from ..runners.tflite_model import TFLiteModel

    model = TFLiteModel(calibrated)
    graph = model.main
    samples_iter = iter(samples())
    first = next(samples_iter, None)
    if first is None:
        return calibrated
    # The reference interpreter (no XNNPACK), every recorded activation exposed as an output
    activations = _recorded_activations(graph)
    runner = LiteRTRunner(bytes(calibrated), xnnpack=False).with_outputs(activations)
    values = _values(runner, activations, first)
    if not values:  # the interpreter holds none of them after an invoke
        return calibrated
    readable = list(values)
    histograms = collector(method, {i: graph.tensors[i].range for i in readable})
    with contextlib.redirect_stdout(io.StringIO()):  # the collector prints a line per call
        histograms.collect(values)
        for sample in samples_iter:
            values = _values(runner, activations, sample)
            histograms.collect({i: values[i] for i in readable})
    for index, (low, high) in computed_ranges(histograms).items():
        if np.isfinite(low) and np.isfinite(high) and high > low:
            graph.tensors[index].set_range(low, high)
    return model.to_bytes()


def _recorded_activations(graph) -> list[int]:
    """Tensors the calibration pass recorded one range for that an op produces (or the graph takes in).

    A fused LSTM's internal intermediates and variable state tensors are left at min/max: the
    interpreter does not hold their values after an invoke."""
    produced = set(graph.inputs) | {i for op in graph.ops for i in op.outputs if i >= 0}
    return [i for i in sorted(produced) if not graph.tensors[i].is_variable and graph.tensors[i].range is not None]


def _feeds(runner, sample) -> list[np.ndarray]:
    """One representative sample, as the converter's generator yields it (a list of arrays in input
    order, or a dict by input name when there are several), as the runner's feeds."""
    if isinstance(sample, dict):
        by_name = [sample.get(spec.name) for spec in runner.inputs]
        arrays = by_name if all(x is not None for x in by_name) else list(sample.values())
    else:
        arrays = list(sample)
    return [np.asarray(x, dtype=spec.dtype) for x, spec in zip(arrays, runner.inputs, strict=True)]


def _values(runner, activations: list[int], sample) -> dict:
    """{tensor index: float values} on one sample, for the activations that hold a value after invoke."""
    values = runner.run(_feeds(runner, sample))
    return {i: v.astype(np.float32) for i, v in zip(activations, values, strict=True) if v.size > 0}
