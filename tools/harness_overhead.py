#!/usr/bin/env python3
"""How much does edgedl bench's harness add over a bare invoke()/run() loop?

For each artifact, in one run on one machine: a bare loop in this process (the runtime's own call,
plus ``reset_all_variables()`` for a stateful model, as a device app does between independent
inferences) against ``edgedl bench``'s p50 from its isolated child process. Both feed the same bytes
(``edgedl.bench.child.bench_feeds``): LiteRT's LSTM kernels skip all-zero vectors, so the input's
content alone moves an LSTM's latency by 30-60 %. Rounds alternate between the two. On a shared machine
other processes only ever add time, and they come in blocks that slow a whole round (p50 45 µs in one
round, 72 µs in the next, same loop): each side's figure is its fastest round's p50, the least disturbed
estimate. The median over rounds is printed beside it; on a quiet machine the two agree.

    python tools/harness_overhead.py runs/pipeline/lstm/run/exports/*.tflite runs/pipeline/lstm/run/exports/*.onnx
    python tools/harness_overhead.py --parts lstm_dynamic.tflite     # where the µs go, part by part

Exit status 1 when any ratio is above --bound (1.05).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

WARMUP = 200


def p50_us(call: Callable[[], object], runs: int, warmup: int = WARMUP) -> float:
    """p50 µs of ``call`` timed alone, as bench's child times one step."""
    clock = time.perf_counter
    for _ in range(warmup):
        call()
    times = np.empty(runs)
    for i in range(runs):
        start = clock()
        call()
        times[i] = clock() - start
    return float(np.median(times) * 1e6)


class Case:
    """One artifact: edgedl's runner (for facts and for the bench feeds) and a bare runtime beside it."""

    def __init__(self, path: str, seed: int = 0):
        from edgedl.bench.child import bench_feeds
        from edgedl.runners.open import open_runner

        self.path = path
        self.runner = open_runner(path, threads=1, isolated=False)
        self.runner.set_batch(1)
        self.feeds = bench_feeds(self.runner, 1, seed)
        self.stateful = self.runner.stateful
        self.tflite = path.endswith(".tflite")
        if self.tflite:
            from ai_edge_litert.interpreter import Interpreter

            self.bare = Interpreter(model_path=path, num_threads=1)
            self.bare.allocate_tensors()
            self.inputs = [d["index"] for d in self.bare.get_input_details()]
            self.outputs = [d["index"] for d in self.bare.get_output_details()]
        else:
            import onnxruntime as ort

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            self.bare = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
            self.names = [i.name for i in self.bare.get_inputs()]

    def bare_call(self, feeds: list[np.ndarray] | None = None) -> Callable[[], object]:
        """The runtime's call and nothing else: inputs set once (a benchmark feeds the same sample every
        call), the state reset a stateful model needs, then invoke() / run()."""
        feeds = self.feeds if feeds is None else feeds
        if not self.tflite:
            feed = dict(zip(self.names, feeds, strict=True))
            return lambda: self.bare.run(None, feed)
        interpreter = self.bare
        for index, x in zip(self.inputs, feeds, strict=True):
            interpreter.set_tensor(index, x)
        if not self.stateful:
            return interpreter.invoke

        def call():
            interpreter.reset_all_variables()
            interpreter.invoke()

        return call

    def parts(self, runs: int) -> dict[str, float]:
        """µs of each thing a harness could add, measured alone in this process."""
        clock = time.perf_counter
        floats = [np.random.default_rng(0).uniform(0, 1, x.shape).astype(np.float32) for x in self.feeds]
        zeros = [np.zeros_like(x) for x in self.feeds]
        measured = {
            "bare": p50_us(self.bare_call(), runs),
            "bench's timed call, in this process": p50_us(self.runner.stepper(self.feeds), runs),
            "runner.step(feeds), in this process": p50_us(lambda: self.runner.step(self.feeds), runs),
            "bare, all-zero inputs": p50_us(self.bare_call(self.runner.prepare(zeros)), runs),
            "timer pair (perf_counter)": p50_us(clock, runs),
            "input preparation (quantize)": p50_us(lambda: self.runner.prepare(floats), runs),
        }
        if self.tflite:
            interpreter = self.bare
            measured["reset_all_variables()"] = p50_us(interpreter.reset_all_variables, runs)
            measured["set_tensor (every input)"] = p50_us(
                lambda: [interpreter.set_tensor(i, x) for i, x in zip(self.inputs, self.feeds, strict=True)], runs)
            measured["get_tensor (every output)"] = p50_us(lambda: [interpreter.get_tensor(i) for i in self.outputs],
                                                           runs)
        return measured


def harness_p50(path: str, runs: int) -> float:
    from edgedl.bench.run import BenchOptions, bench

    result = bench([path], BenchOptions(runs=runs, warmup=WARMUP), say=lambda m: None)["results"][0]
    if "error" in result:
        sys.exit(f"{path}: {result['error']}")
    return result["p50_us"]


def compare(paths: list[str], runs: int, rounds: int, bound: float) -> float:
    print("| artifact | stateful | bare loop p50 (µs) | edgedl bench p50 (µs) | bench / bare | "
          "same, medians of rounds |")
    print("|---|---|---|---|---|---|")
    worst = 0.0
    for path in paths:
        bare, harness = [], []
        case = Case(path)
        for _ in range(rounds):
            bare.append(p50_us(case.bare_call(), runs))
            harness.append(harness_p50(path, runs))
        ratio = min(harness) / min(bare)
        worst = max(worst, ratio)
        print(f"| {os.path.basename(path)} | {'yes' if case.stateful else 'no'} | {min(bare):.2f} | "
              f"{min(harness):.2f} | {ratio:.3f}{'' if ratio <= bound else ' ✗'} | "
              f"{np.median(harness) / np.median(bare):.3f} |", flush=True)
    print(f"\nworst bench / bare ratio: {worst:.3f} (bound ≤ {bound})")
    return worst


def show_parts(paths: list[str], runs: int, rounds: int) -> None:
    """Each part's fastest round, and the bench child's p50 for the same artifact."""
    for path in paths:
        case = Case(path)
        samples: dict[str, list[float]] = {}
        for _ in range(rounds):
            for name, value in case.parts(runs).items():
                samples.setdefault(name, []).append(value)
            samples.setdefault("edgedl bench child", []).append(harness_p50(path, runs))
        print(f"\n{os.path.basename(path)} (stateful: {case.stateful})\n\n| part | p50 (µs) |\n|---|---|")
        for name, values in samples.items():
            print(f"| {name} | {min(values):.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("artifacts", nargs="+", help=".tflite / .onnx files")
    parser.add_argument("--runs", type=int, default=1000, help="timed calls per round and side")
    parser.add_argument("--rounds", type=int, default=9, help="rounds, alternating bare loop and bench")
    parser.add_argument("--bound", type=float, default=1.05, help="largest acceptable bench / bare ratio")
    parser.add_argument("--parts", action="store_true", help="measure each part a harness could add, alone")
    args = parser.parse_args()
    missing = [p for p in args.artifacts if not os.path.isfile(p)]
    if missing:
        parser.error(f"no such file: {', '.join(missing)}")
    if args.parts:
        show_parts(args.artifacts, args.runs, args.rounds)
        return 0
    return 0 if compare(args.artifacts, args.runs, args.rounds, args.bound) <= args.bound else 1


if __name__ == "__main__":
    sys.exit(main())
