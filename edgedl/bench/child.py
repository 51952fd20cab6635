"""One benchmark measurement in a fresh process: ``python -m edgedl.bench.child '<json spec>'``.

It imports only the runtime it measures (no TensorFlow for .tflite/.onnx), so its start-up
time and memory are what an app on a device would see. It prints one JSON object. The model is
driven through the Runner's public face: ``set_batch``, ``prepare`` and ``stepper``.
"""

from __future__ import annotations

import json
import os
import sys
import time


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _rss_kb() -> int:
    return _status_kb("VmRSS")


def _peak_kb() -> int:
    # VmHWM belongs to this process image; getrusage's ru_maxrss survives exec and would report
    # the parent's peak (over 1 GB when the parent has TensorFlow loaded).
    return _status_kb("VmHWM")


def bench_feeds(runner, batch: int, seed: int):
    """The inputs every timed call gets: uniform [0, 1) floats from ``seed``, prepared once (quantized to the
    model's input dtype) and fed unchanged. tools/harness_overhead.py feeds its bare loop the same bytes:
    LiteRT's LSTM kernels skip work on all-zero vectors, so the input's content moves their latency."""
    import numpy as np

    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(0, 1, size=[batch, *[d or 1 for d in spec.shape[1:]]]).astype(np.float32)
              for spec in runner.inputs]
    return runner.prepare(arrays)


def _open(spec: dict):
    from edgedl.runners.open import open_runner

    # threads 0 means the runtime's own default. This process is the isolation: the parent bounds its
    # memory and time, and it dies with the parent.
    runner = open_runner(spec["path"], threads=spec["threads"] or None, xnnpack=spec["xnnpack"],
                         isolated=False, backend=spec["backend"])
    runner.set_batch(spec["batch"])
    return runner


def measure(spec: dict) -> dict:
    if spec.get("pin_cpu"):
        os.sched_setaffinity(0, spec["pin_cpu"])
    bare_kb = _rss_kb()
    started = time.perf_counter()
    runner = _open(spec)
    init_s = time.perf_counter() - started
    call = runner.stepper(bench_feeds(runner, spec["batch"], spec.get("seed", 0)))
    first_start = time.perf_counter()
    call()
    first_s = time.perf_counter() - first_start
    for _ in range(spec["warmup"]):
        call()
    latencies = _timed_loop(call, spec["runs"], spec["min_time"])
    return {
        "init_s": init_s,
        "first_s": first_s,
        "latencies_s": latencies,
        "peak_rss_kb": _peak_kb(),
        "bare_rss_kb": bare_kb,
        "tensorflow_loaded": "tensorflow" in sys.modules,
        "library": runner.library,
        "stateful": runner.stateful,
    }


def _timed_loop(call, runs: int | None, min_time: float) -> list[float]:
    """Time each call alone; stop after ``runs`` calls, or once ``min_time`` seconds are spent.

    ``call`` is the runner's stepper: inputs were set before, outputs stay in the runtime, and a stateful
    model's state reset is inside (a device pays for it between independent inferences)."""
    clock = time.perf_counter
    latencies = []
    deadline = clock() + min_time
    limit = runs or 1_000_000
    while len(latencies) < limit:
        start = clock()
        call()
        latencies.append(clock() - start)
        if runs is None and len(latencies) >= 20 and start > deadline:
            break
    return latencies


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        result = measure(spec)
    except Exception as exc:  # reported to the parent as data; the parent decides what is fatal
        result = {"error": f"{exc.__class__.__name__}: {' '.join(str(exc).split())[:300]}"}
    sys.stdout.write(json.dumps(result))


if __name__ == "__main__":
    main()
