#!/usr/bin/env python3
"""Artifacts timed side by side in one process, interleaved round by round: ratios a noisy machine
cannot bend.

`edgedl bench` times each artifact in its own child, one after another; on a shared machine a burst of
other work can land on one artifact and not the next (the same LSTM file measured 33 and 53 µs in two
bench runs minutes apart). Here every round times every artifact (``--runs`` steps each, after a
warm-up), through the same Runner.stepper the bench child times, so what disturbs a round disturbs all
of them. Each artifact's ratio to ``--reference`` is taken within a round; the median over rounds is
reported, with the p50s (median of the rounds' p50s) beside it.

    python tools/side_by_side.py --reference lstm_fp32.onnx runs/pipeline/lstm/run/exports/*.{tflite,onnx}
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness_overhead import p50_us  # noqa: E402  (the one timed loop: bench's child times a step the same way)


def measure(paths: list[str], rounds: int, runs: int, warmup: int) -> dict[str, list[float]]:
    from edgedl.bench.child import bench_feeds
    from edgedl.runners.open import open_runner

    steps = {}
    for path in paths:
        runner = open_runner(path, threads=1, isolated=False)
        runner.set_batch(1)
        steps[Path(path).name] = runner.stepper(bench_feeds(runner, 1, 0))
    for step in steps.values():
        p50_us(step, warmup, warmup=0)
    p50s: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            p50s[name].append(p50_us(step, runs, warmup=0))
    return p50s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("artifacts", nargs="+")
    parser.add_argument("--reference", required=True, help="file name of the artifact the ratios are to")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--runs", type=int, default=500, help="timed steps per artifact per round")
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    p50s = measure(args.artifacts, args.rounds, args.runs, args.warmup)
    if args.reference not in p50s:
        parser.error(f"--reference {args.reference} is not one of {', '.join(p50s)}")
    reference = np.array(p50s[args.reference])
    print(f"{args.rounds} rounds × {args.runs} steps, batch 1, 1 thread; ratio = median over rounds of "
          f"(p50 ÷ {args.reference}'s p50 in the same round)\n")
    print("| artifact | size (B) | p50 µs (median of rounds) | best round µs | ratio to reference (range) |")
    print("|---|---|---|---|---|")
    for path in args.artifacts:
        name = Path(path).name
        values = np.array(p50s[name])
        ratios = values / reference
        print(f"| {name} | {Path(path).stat().st_size:,} | {np.median(values):.1f} | {values.min():.1f} | "
              f"{np.median(ratios):.2f} ({ratios.min():.2f}–{ratios.max():.2f}) |")


if __name__ == "__main__":
    main()
