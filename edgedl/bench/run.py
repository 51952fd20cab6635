"""``edgedl bench``: latency, start-up, memory and size, measured the way a device runs a model.

Every measurement runs in a fresh child process (``bench_child``) that imports only the runtime
it measures, at batch 1 and one thread unless told otherwise. The parent only plans, collects
and summarises; it never imports a runtime itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ..core.env import child_preexec, library_versions, machine_fingerprint, memory_limit_mb, time_limit_s
from ..core.layout import UNROLLED_TAG, VALIDATION_REPORT, find_artifacts, model_key, precision_of
from ..runners.local import backend_for

SCHEMA = "bench/1"


@dataclass
class BenchOptions:
    threads: list[int] = field(default_factory=lambda: [1])
    batches: list[int] = field(default_factory=lambda: [1])
    warmup: int = 20
    runs: int | None = None
    min_time: float = 1.0
    pin_cpu: list[int] | None = None
    backend: str | None = None
    xnnpack: bool = True
    seed: int = 0


def bench(paths: list[str | Path], options: BenchOptions | None = None, say=print) -> dict:
    options = options or BenchOptions()
    files = find_artifacts(paths)
    rows = []
    for path in files:
        backend = options.backend or backend_for(path)
        for threads in options.threads:
            for batch in options.batches:
                say(f"  {path.name:<28} {backend:<12} threads={threads} batch={batch} …")
                rows.append(_measure(path, backend, threads, batch, options))
                say(f"    {_row_line(rows[-1])}")
    result = {
        "edgedl": SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_fingerprint(),
        "versions": library_versions(),
        "options": {k: v for k, v in options.__dict__.items()},
        "results": rows,
    }
    result["comparisons"] = compare_precisions(rows)
    _attach_accuracy(result, files)
    return result


def _measure(path: Path, backend: str, threads: int, batch: int, options: BenchOptions) -> dict:
    spec = {"path": str(path.resolve()), "backend": backend, "threads": threads, "batch": batch,
            "warmup": options.warmup, "runs": options.runs, "min_time": options.min_time,
            "pin_cpu": options.pin_cpu, "xnnpack": options.xnnpack, "seed": options.seed}
    row = {"artifact": path.name, "path": str(path), "backend": backend, "threads": threads, "batch": batch,
           "xnnpack": options.xnnpack if backend == "litert" else None, "size": path.stat().st_size,
           "precision": precision_of(path) or "?",
           # LiteRT's LSTM kernels skip all-zero vectors: an LSTM's latency depends on what it is fed
           "inputs": f"uniform [0, 1) seed {options.seed}, set once before the timed calls"}
    raw = _run_child(spec)
    if "error" in raw:
        return row | {"error": raw["error"]}
    latencies = np.asarray(raw.pop("latencies_s"))
    return row | _stats(latencies, batch) | {
        "init_ms": raw["init_s"] * 1e3, "first_ms": raw["first_s"] * 1e3,
        "peak_rss_mb": raw["peak_rss_kb"] / 1024, "rss_delta_mb": (raw["peak_rss_kb"] - raw["bare_rss_kb"]) / 1024,
        "tensorflow_loaded": raw["tensorflow_loaded"], "library": raw["library"], "stateful": raw["stateful"],
        "latencies_us": [round(v * 1e6, 2) for v in latencies[:5000]],
    }


def child_timeout(spec: dict) -> float:
    """Loading plus the first inference get the usual limit; the timed loop gets what it asked for, twice."""
    loop = 2 * spec["min_time"] if spec["runs"] is None else time_limit_s() * spec["runs"] / 100
    return time_limit_s() + loop + spec["warmup"] * 0.5


def _run_child(spec: dict) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    # A benchmark must not inherit a parent's thread pools or BLAS threads.
    env.update(OMP_NUM_THREADS=str(spec["threads"]))
    timeout = child_timeout(spec)
    try:
        # The child runs a file the user handed in: bounded memory, and it dies with this process.
        done = subprocess.run([sys.executable, "-m", "edgedl.bench.child", json.dumps(spec)], capture_output=True,
                              text=True, timeout=timeout, env=env,
                              preexec_fn=None if spec["backend"] == "keras" else child_preexec())
    except subprocess.TimeoutExpired:
        return {"error": f"measurement did not finish within {timeout:.0f} s; the model hangs or is far too slow "
                         "(time limit: EDGEDL_TIME_LIMIT_S)"}
    if done.returncode < 0:
        return {"error": f"the runtime crashed ({signal.Signals(-done.returncode).name}); the file is corrupt, "
                         f"hostile, or needs more than the {memory_limit_mb()} MB memory limit"}
    if done.returncode != 0:
        return {"error": f"runtime failed (exit {done.returncode}): {done.stderr.strip()[-300:]}"}
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        return {"error": f"benchmark child printed no result: {done.stderr.strip()[-300:]}"}


def _stats(latencies: np.ndarray, batch: int) -> dict:
    us = latencies * 1e6
    return {
        "runs": int(len(us)), "min_us": float(us.min()), "p50_us": float(np.percentile(us, 50)),
        "p90_us": float(np.percentile(us, 90)), "p99_us": float(np.percentile(us, 99)),
        "mean_us": float(us.mean()), "std_us": float(us.std()),
        "throughput_per_s": float(batch / np.median(latencies)),
    }


def compare_precisions(rows: list[dict]) -> list[dict]:
    """Per backend, thread count and batch: each precision's p50 against float32, with a verdict. A variant
    with its own graph (``-unrolled``) is compared with its own float32 when there is one."""
    comparisons = []
    groups: dict = {}
    for row in rows:
        if "p50_us" in row:
            groups.setdefault((row["backend"], row["threads"], row["batch"], model_key(row["artifact"])), []).append(row)
    for (backend, threads, batch, model), members in groups.items():
        for row in members:
            base = _float_base(row, members)
            if base is None:
                continue
            speedup = base["p50_us"] / row["p50_us"]
            entry = {"model": model, "backend": backend, "threads": threads, "batch": batch,
                     "artifact": row["artifact"], "precision": row["precision"], "base": base["artifact"],
                     "speedup_vs_fp32": speedup, "size_vs_fp32": row["size"] / base["size"]}
            if row["precision"] in ("int8", "dynamic") and speedup <= 1.0:
                smaller = entry["size_vs_fp32"] < 0.95
                entry["verdict"] = (f"{row['precision']} is NOT faster than float32 on this CPU with {backend} "
                                    f"({speedup:.2f}×)" + (f": ship it only for its size ({entry['size_vs_fp32']:.2f}×)"
                                                          if smaller else ", nor smaller: ship float32 instead"))
            comparisons.append(entry)
    return comparisons


def _float_base(row: dict, members: list[dict]) -> dict | None:
    variant = UNROLLED_TAG in row["artifact"]
    floats = [r for r in members if r["precision"] == "fp32"]
    return next((r for r in floats if (UNROLLED_TAG in r["artifact"]) == variant), floats[0] if floats else None)


def _attach_accuracy(result: dict, files: list[Path]) -> None:
    """Use validation.json beside the artifacts, when present, for latency-vs-accuracy plots."""
    accuracy = {}
    for folder in {f.parent for f in files}:
        report = folder / VALIDATION_REPORT
        if report.exists():
            try:
                for row in json.loads(report.read_text()).get("matrix", []):
                    accuracy[row["artifact"]] = row.get("candidate_accuracy")
            except (OSError, json.JSONDecodeError):
                continue
    for row in result["results"]:
        row["accuracy"] = accuracy.get(row["artifact"])


def _row_line(row: dict) -> str:
    if "error" in row:
        return f"✗ {row['error']}"
    return (f"p50 {row['p50_us']:.1f} µs  p99 {row['p99_us']:.1f} µs  init {row['init_ms']:.0f} ms  "
            f"first {row['first_ms']:.2f} ms  peak RSS {row['peak_rss_mb']:.0f} MB  ({row['runs']} runs)")
