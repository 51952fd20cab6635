#!/usr/bin/env python3
"""Standalone runner for an edgedl bundle: needs only numpy and a TFLite interpreter.

    python run.py --self-test        check the model's sha256 and the golden vectors
    python run.py digit.png          top-k classes for an image (needs Pillow)
    python run.py input.npy          top-k classes for each sample in an array
    python run.py -                  read a .npy array from standard input
    python run.py --bench            quick latency figure on this device

Interpreter order: ai-edge-litert, then tflite-runtime (32-bit Pi OS; needs numpy < 2 and cannot
read dynamic-range models from TF >= 2.21), then tf.lite. Quantized inputs and outputs are
converted here with the scale and zero point in manifest.json; variable tensors are reset before
every inference because stateful ops (the fused LSTM) keep state between invokes.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def load_interpreter_class():
    forced = os.environ.get("EDGEDL_INTERPRETER")  # ai-edge-litert | tflite-runtime | tf.lite
    if forced:
        return _forced(forced)
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError:
        pass
    try:
        import tensorflow as tf

        return tf.lite.Interpreter, "tf.lite"
    except ImportError:
        sys.exit("error: no TFLite interpreter found; pip install -r requirements.txt")


def _forced(name: str):
    try:
        if name == "ai-edge-litert":
            from ai_edge_litert.interpreter import Interpreter
        elif name == "tflite-runtime":
            from tflite_runtime.interpreter import Interpreter
        elif name == "tf.lite":
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        else:
            sys.exit(f"error: EDGEDL_INTERPRETER={name!r}; use ai-edge-litert, tflite-runtime or tf.lite")
    except ImportError as exc:
        sys.exit(f"error: EDGEDL_INTERPRETER={name} is not installed: {exc}")
    return Interpreter, name


class Model:
    def __init__(self, bundle: Path, threads: int = 1):
        self.manifest = json.loads((bundle / "manifest.json").read_text())
        self.path = bundle / self.manifest["model"]["file"]
        interpreter_class, self.library = load_interpreter_class()
        try:
            self.interpreter = interpreter_class(model_path=str(self.path), num_threads=threads)
            self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            sys.exit(f"error: {self.library} cannot load {self.path.name}: {' '.join(str(exc).split())[:200]}")
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        self.stateful = self.manifest["runtime"]["reset_variables_before_invoke"]
        self.labels = self.manifest.get("labels", [])

    def _quantize(self, x, detail):
        scale, zero_point = detail["quantization"]
        if detail["dtype"] in (np.int8, np.uint8) and scale:
            info = np.iinfo(detail["dtype"])
            return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(detail["dtype"])
        return x.astype(detail["dtype"])

    def _dequantize(self, y, detail):
        scale, zero_point = detail["quantization"]
        if detail["dtype"] in (np.int8, np.uint8) and scale:
            return (y.astype(np.float32) - zero_point) * scale
        return y.astype(np.float32)

    def raw(self, sample: np.ndarray) -> list[np.ndarray]:
        """One float sample (no batch axis) in, the model's raw output tensors out."""
        if self.stateful:
            self.interpreter.reset_all_variables()
        x = self._quantize(np.asarray(sample, np.float32)[None], self.inputs[0])
        self.interpreter.set_tensor(self.inputs[0]["index"], x)
        self.interpreter.invoke()
        return [self.interpreter.get_tensor(d["index"]).copy() for d in self.outputs]

    def predict(self, sample: np.ndarray) -> np.ndarray:
        return self._dequantize(self.raw(sample)[0], self.outputs[0])[0]


def preprocess(raw: np.ndarray, manifest: dict) -> np.ndarray:
    """Raw values (e.g. 0..255 pixels) → model input, exactly as in training."""
    pre = manifest["preprocessing"]
    shape = manifest["inputs"][0]["shape"][1:]
    x = np.asarray(raw, np.float32) * pre["scale"] + pre["offset"]
    return x.reshape((-1, *shape))


def read_inputs(source: str, manifest: dict) -> np.ndarray:
    if source == "-":
        return preprocess(np.load(io.BytesIO(sys.stdin.buffer.read()), allow_pickle=False), manifest)
    path = Path(source)
    if not path.exists():
        sys.exit(f"error: input not found: {path}")
    if path.suffix == ".npy":
        return preprocess(np.load(path, allow_pickle=False), manifest)
    try:
        from PIL import Image
    except ImportError:
        sys.exit("error: reading images needs Pillow: pip install pillow (or pass a .npy array)")
    height, width = manifest["preprocessing"]["image_size"]
    mode = "L" if manifest["preprocessing"]["channels"] == 1 else "RGB"
    with Image.open(path) as image:
        pixels = np.asarray(image.convert(mode).resize((width, height)), np.float32)
    return preprocess(pixels, manifest)


def top_k(probs: np.ndarray, labels: list[str], k: int) -> list[tuple[str, float]]:
    if probs.ndim == 2:  # a sequence output: the last step decides
        probs = probs[-1]
    order = np.argsort(probs)[::-1][:k]
    return [(labels[i] if i < len(labels) else str(i), float(probs[i])) for i in order]


def check_sha256(bundle: Path) -> bool:
    """Before loading anything: is the model file the one this bundle was validated with?"""
    manifest = json.loads((bundle / "manifest.json").read_text())
    actual = hashlib.sha256((bundle / manifest["model"]["file"]).read_bytes()).hexdigest()
    ok = actual == manifest["model"]["sha256"]
    print(f"{'✓' if ok else '✗'} sha256 {actual[:16]}… {'matches' if ok else 'DIFFERS from'} the manifest")
    return ok


def self_test(model: Model) -> bool:
    manifest = model.manifest
    ok = True
    golden = np.load(HERE / manifest["golden"]["file"], allow_pickle=False)
    steps = manifest["golden"]["tolerance_steps"] or {}
    tolerance, atol = steps.get(model.library, max(steps.values(), default=0)), manifest["golden"]["atol"]
    worst = 0.0
    for i, sample in enumerate(golden["inputs"]):
        raw = model.raw(sample)[0][0]
        expected = golden["expected_raw"][i]
        if raw.dtype.kind in "iu":
            diff = float(np.max(np.abs(raw.astype(np.int32) - expected.astype(np.int32))))
            good = diff <= tolerance
        else:
            diff = float(np.max(np.abs(raw - expected)))
            good = diff <= atol
        worst = max(worst, diff)
        ok = ok and good
    unit = "quantization steps" if golden["expected_raw"].dtype.kind in "iu" else "abs"
    print(f"{'✓' if ok else '✗'} {len(golden['inputs'])} golden vectors, worst difference {worst:g} {unit} "
          f"(interpreter: {model.library})")
    return ok


def bench(model: Model, runs: int) -> None:
    sample = np.load(HERE / model.manifest["golden"]["file"], allow_pickle=False)["inputs"][0]
    for _ in range(10):
        model.raw(sample)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        model.raw(sample)
        times.append(time.perf_counter() - start)
    times_us = np.asarray(times) * 1e6
    print(f"{runs} runs with {model.library}: p50 {np.median(times_us):.1f} µs, "
          f"p90 {np.percentile(times_us, 90):.1f} µs, min {times_us.min():.1f} µs")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="*", help="image file, .npy array, or - for a .npy on stdin")
    parser.add_argument("--self-test", action="store_true", help="verify sha256 and golden vectors")
    parser.add_argument("--bench", action="store_true", help="quick latency measurement")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--top-k", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print predictions as JSON")
    args = parser.parse_args(argv)
    if args.self_test and not check_sha256(HERE):
        return 1  # a tampered or replaced model is never loaded
    model = Model(HERE, threads=args.threads)
    status = 0
    if args.self_test:
        status = 0 if self_test(model) else 1
    if args.bench:
        bench(model, args.runs)
    results = []
    for source in args.inputs:
        for sample in read_inputs(source, model.manifest):
            results.append(top_k(model.predict(sample), model.labels, args.top_k))
    if args.json and results:
        print(json.dumps([[{"label": label, "score": score} for label, score in r] for r in results]))
    else:
        for ranked in results:
            print("  ".join(f"{label}: {score:.3f}" for label, score in ranked))
    if not (args.self_test or args.bench or args.inputs):
        parser.print_help()
    return status


if __name__ == "__main__":
    sys.exit(main())
