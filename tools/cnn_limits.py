#!/usr/bin/env python3
"""How far is the CNN's int8 TFLite p50 from the time to read its weights once from memory?

1. Bandwidth on this machine, with numpy copies (each byte read once and written once): a buffer far
   larger than the last-level cache (DRAM), and a buffer the size of the model's weights, copied over
   and over (it stays in the caches, as the weights do between invokes).
2. The weights: bytes of every constant tensor the int8 model's ops read (the flatbuffer's buffers).
3. Where the time goes, layer by layer: the Keras model truncated after each layer, each converted to
   full int8 with the same calibration samples and timed interleaved in one process (the
   differences between consecutive prefixes are each layer's cost; LiteRT's Python API has no per-op
   profiler).

    python tools/cnn_limits.py runs/cnn            # a training run of the seed CNN
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))


def copy_bandwidth(size: int, repeats: int) -> float:
    """GB/s of np.copyto over ``size`` bytes (best of ``repeats``), counting the bytes read."""
    src = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return size / best / 1e9


def weight_bytes(path: Path) -> int:
    from edgedl.runners.tflite_model import TFLiteModel

    graph = TFLiteModel.read(path).main
    constant = {i for _, op in TFLiteModel.read(path).ops() for i in op.inputs if i >= 0
                and graph.tensors[i].data is not None}
    return sum(graph.tensors[i].data.nbytes for i in constant)


def prefixes(run: Path, folder: Path) -> list[tuple[str, Path]]:
    """The seed model cut after each layer that computes, each exported to full int8 (float I/O)."""
    import keras

    from edgedl.export.tflite import convert

    model = keras.saving.load_model(run / "model.keras", safe_mode=True, compile=False)
    calibration = np.load(run / "calibration.npz")["x"][:200].astype(np.float32)
    cuts = []
    for layer in model.layers:
        if not layer.weights and layer.__class__.__name__ != "MaxPooling2D":
            continue
        partial = keras.Model(model.inputs, layer.output)  # edgedl's converter: batch 1, int8 I/O, as shipped
        path = folder / f"upto_{len(cuts)}_{layer.name}.tflite"
        path.write_bytes(convert(partial, "int8", [calibration], io="int8"))
        cuts.append((layer.name, path))
    return cuts


def main() -> None:
    from side_by_side import measure

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a training run of the seed CNN (model.keras, calibration.npz)")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    int8 = next((args.run / "exports").glob("*_int8.tflite"))
    weights = weight_bytes(int8)
    dram = copy_bandwidth(1 << 30, 5)
    cached = copy_bandwidth(max(weights, 1 << 16), 2000)
    with tempfile.TemporaryDirectory(prefix="edgedl-cnn-limits-") as tmp:
        cuts = prefixes(args.run, Path(tmp))
        p50s = measure([str(int8)] + [str(p) for _, p in cuts], args.rounds, 500, 200)
    whole = float(np.median(p50s[int8.name]))
    print(f"{int8.name}: weights {weights:,} B; p50 {whole:.1f} µs (median of {args.rounds} interleaved rounds)")
    print(f"copy bandwidth: DRAM (1 GiB buffer) {dram:.1f} GB/s -> weights once {weights / dram / 1e3:.1f} µs; "
          f"cache-resident ({max(weights, 1 << 16):,} B buffer) {cached:.1f} GB/s -> {weights / cached / 1e3:.1f} µs")
    print("\n| model cut after | p50 µs | this layer's share µs |\n|---|---|---|")
    before = 0.0
    for name, path in cuts:
        p50 = float(np.median(p50s[path.name]))
        print(f"| {name} | {p50:.1f} | {p50 - before:+.1f} |")
        before = p50


if __name__ == "__main__":
    main()
