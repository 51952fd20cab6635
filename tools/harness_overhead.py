#!/usr/bin/env python3
"""How much does edgedl bench's harness add over a bare invoke()/run() loop?

For each artifact, in one run on one machine: a bare loop in this process (the runtime's call and
nothing else, timed per call like the harness) against ``edgedl bench``'s p50 from its isolated
child process. Rounds alternate between the two to spread machine noise evenly.

    python tools/harness_overhead.py runs/pipeline/cnn/run/exports/cnn_int8.tflite ...
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def bare_p50(path: str, runs: int, warmup: int = 200) -> float:
    """p50 µs of the runtime's own call in a tight loop: invoke() for LiteRT, run() for onnxruntime."""
    rng = np.random.default_rng(0)
    if path.endswith(".tflite"):
        from ai_edge_litert.interpreter import Interpreter

        from edgedl.runners.litert import STATEFUL_OPS
        from edgedl.runners.tflite_model import TFLiteModel

        interpreter = Interpreter(model_path=path, num_threads=1)
        interpreter.allocate_tensors()
        stateful = bool(set(TFLiteModel.read(path).op_names(subgraph=0)) & STATEFUL_OPS)
        for detail in interpreter.get_input_details():
            shape = [1, *detail["shape"][1:]]
            interpreter.set_tensor(detail["index"], rng.integers(-100, 100, shape).astype(detail["dtype"])
                                   if detail["dtype"] != np.float32 else rng.random(shape, np.float32))

        def call():
            if stateful:
                interpreter.reset_all_variables()
            interpreter.invoke()
    else:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        feed = {i.name: rng.random([1, *[d if isinstance(d, int) else 1 for d in i.shape[1:]]], np.float32)
                for i in session.get_inputs()}

        def call():
            session.run(None, feed)

    for _ in range(warmup):
        call()
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        call()
        times[i] = time.perf_counter() - start
    return float(np.median(times) * 1e6)


def harness_p50(path: str, runs: int) -> float:
    from edgedl.bench.run import BenchOptions, bench

    result = bench([path], BenchOptions(runs=runs, warmup=200), say=lambda m: None)["results"][0]
    if "error" in result:
        sys.exit(f"{path}: {result['error']}")
    return result["p50_us"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print("| artifact | bare loop p50 (µs) | edgedl bench p50 (µs) | harness / bare |")
    print("|---|---|---|---|")
    worst = 0.0
    for path in args.artifacts:
        bare, harness = [], []
        for _ in range(args.rounds):
            bare.append(bare_p50(path, args.runs))
            harness.append(harness_p50(path, args.runs))
        ratio = np.median(harness) / np.median(bare)
        worst = max(worst, ratio)
        print(f"| {os.path.basename(path)} | {np.median(bare):.2f} | {np.median(harness):.2f} | {ratio:.3f} |")
    print(f"\nworst harness / bare ratio: {worst:.3f} (target ≤ 1.05)")
    return 0 if worst <= 1.05 else 1


if __name__ == "__main__":
    sys.exit(main())
