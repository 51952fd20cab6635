"""One benchmark measurement in a fresh process: ``python -m edgedl.bench_child '<json spec>'``.

It imports only the runtime it measures (no TensorFlow for .tflite/.onnx), so its start-up
time and memory are what an app on a device would see. It prints one JSON object.
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


def _feeds(runner, batch: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = []
    for spec in runner.inputs:
        shape = [batch, *[d or 1 for d in spec.shape[1:]]]
        feeds.append(runner._to_model(rng.uniform(0, 1, size=shape).astype(np.float32), spec))
    return feeds


def _open(spec: dict):
    path, backend = spec["path"], spec["backend"]
    if backend == "litert":
        from edgedl.runners.litert import LiteRTRunner

        runner = LiteRTRunner(path, threads=spec["threads"] or None, xnnpack=spec["xnnpack"])
        if spec["batch"] != 1:
            _resize(runner, spec["batch"])
        return runner, _litert_step(runner)
    if backend == "onnxruntime":
        from edgedl.runners.onnxrt import OnnxRuntimeRunner

        runner = OnnxRuntimeRunner(path, threads=spec["threads"])  # 0: onnxruntime's own default
        names = [t.name for t in runner.inputs]
        return runner, lambda feeds: runner.session.run(None, dict(zip(names, feeds, strict=True)))
    import tensorflow as tf

    from edgedl.runners.keras import KerasRunner

    tf.config.threading.set_intra_op_parallelism_threads(spec["threads"])
    runner = KerasRunner(path)
    model = runner.model
    return runner, lambda feeds: model.predict_on_batch(feeds if len(feeds) > 1 else feeds[0])


def _litert_step(runner):
    """What benchmark_model times: invoke(), plus the state reset a stateful model needs every call.

    The input never changes, so it is set on the first call only; reading outputs is left out,
    as in benchmark_model.
    """
    interpreter = runner.interpreter
    state = {"fed": None}

    def step(feeds):
        if state["fed"] is not feeds:
            for detail, x in zip(runner._in, feeds, strict=True):
                interpreter.set_tensor(detail["index"], x)
            state["fed"] = feeds
        if runner.stateful:
            interpreter.reset_all_variables()
        interpreter.invoke()

    return step


def _resize(runner, batch: int) -> None:
    try:
        for detail in runner._in:
            runner.interpreter.resize_tensor_input(detail["index"], [batch, *detail["shape"][1:]])
        runner.interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"this model has a fixed batch of 1 and cannot run batch {batch} "
                         "(edgedl's TFLite exports are batch 1, as devices run them; ONNX exports take any batch)") from exc
    runner._in = runner.interpreter.get_input_details()
    runner._out = runner.interpreter.get_output_details()


def measure(spec: dict) -> dict:
    if spec.get("pin_cpu"):
        os.sched_setaffinity(0, spec["pin_cpu"])
    bare_kb = _rss_kb()
    started = time.perf_counter()
    runner, step = _open(spec)
    init_s = time.perf_counter() - started
    feeds = _feeds(runner, spec["batch"], spec.get("seed", 0))
    first_start = time.perf_counter()
    step(feeds)
    first_s = time.perf_counter() - first_start
    for _ in range(spec["warmup"]):
        step(feeds)
    latencies = _timed_loop(step, feeds, spec["runs"], spec["min_time"])
    return {
        "init_s": init_s,
        "first_s": first_s,
        "latencies_s": latencies,
        "peak_rss_kb": _peak_kb(),
        "bare_rss_kb": bare_kb,
        "tensorflow_loaded": "tensorflow" in sys.modules,
        "library": getattr(runner, "library", runner.backend),
        "stateful": getattr(runner, "stateful", False),
    }


def _timed_loop(step, feeds, runs: int | None, min_time: float) -> list[float]:
    """Time each call alone; stop after ``runs`` calls, or once ``min_time`` seconds are spent."""
    clock = time.perf_counter
    latencies = []
    deadline = clock() + min_time
    limit = runs or 1_000_000
    while len(latencies) < limit:
        start = clock()
        step(feeds)
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
