"""``edgedl bench``: latency, start-up, memory and size, measured the way a device runs a model.

Every measurement runs in a fresh child process (``bench_child``) that imports only the runtime
it measures, at batch 1 and one thread unless told otherwise. The parent only plans, collects
and summarises; it never imports a runtime itself.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ._env import library_versions
from .errors import ArtifactError, UsageError
from .runners import backend_for

CHILD_TIMEOUT_S = 600
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


def expand(paths: list[str | Path]) -> list[Path]:
    files = []
    for path in map(Path, paths):
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix in (".tflite", ".onnx")))
        elif path.is_file():
            files.append(path)
        else:
            raise ArtifactError(f"artifact not found: {path}")
    if not files:
        raise UsageError("nothing to benchmark: no .tflite, .onnx or .keras files given")
    return files


def bench(paths: list[str | Path], options: BenchOptions | None = None, say=print) -> dict:
    options = options or BenchOptions()
    files = expand(paths)
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
           "precision": _precision(path)}
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


def _run_child(spec: dict) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TF_ENABLE_ONEDNN_OPTS="0")
    # A benchmark must not inherit a parent's thread pools or BLAS threads.
    env.update(OMP_NUM_THREADS=str(spec["threads"]))
    try:
        done = subprocess.run([sys.executable, "-m", "edgedl.bench_child", json.dumps(spec)], capture_output=True,
                              text=True, timeout=CHILD_TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"measurement took longer than {CHILD_TIMEOUT_S} s"}
    if done.returncode != 0:
        return {"error": f"runtime crashed (exit {done.returncode}): {done.stderr.strip()[-300:]}"}
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


def _precision(path: Path) -> str:
    sidecar = path.with_name(path.name + ".json")
    if sidecar.exists():
        try:
            return json.loads(sidecar.read_text()).get("precision", "?")
        except (OSError, json.JSONDecodeError):
            pass
    if path.suffix == ".keras":
        return "keras"
    for token in ("int8", "dynamic", "fp16", "fp32"):
        if token in path.stem:
            return token
    return "?"


def compare_precisions(rows: list[dict]) -> list[dict]:
    """Per backend, thread count and batch: each precision's p50 against float32, with a verdict."""
    comparisons = []
    groups: dict = {}
    for row in rows:
        if "p50_us" in row:
            groups.setdefault((row["backend"], row["threads"], row["batch"], _model_key(row["artifact"])), []).append(row)
    for (backend, threads, batch, model), members in groups.items():
        base = next((r for r in members if r["precision"] == "fp32"), None)
        if base is None:
            continue
        for row in members:
            speedup = base["p50_us"] / row["p50_us"]
            entry = {"model": model, "backend": backend, "threads": threads, "batch": batch,
                     "artifact": row["artifact"], "precision": row["precision"], "speedup_vs_fp32": speedup,
                     "size_vs_fp32": row["size"] / base["size"]}
            if row["precision"] in ("int8", "dynamic") and speedup <= 1.0:
                entry["verdict"] = (f"{row['precision']} is NOT faster than float32 on this CPU with {backend} "
                                    f"({speedup:.2f}×): ship it only for its size")
            comparisons.append(entry)
    return comparisons


def _model_key(name: str) -> str:
    stem = Path(name).stem
    for token in ("_fp32", "_fp16", "_dynamic", "_int8"):
        stem = stem.replace(token, "")
    return stem + Path(name).suffix


def _attach_accuracy(result: dict, files: list[Path]) -> None:
    """Use validation.json beside the artifacts, when present, for latency-vs-accuracy plots."""
    accuracy = {}
    for folder in {f.parent for f in files}:
        report = folder / "validation.json"
        if report.exists():
            try:
                for row in json.loads(report.read_text()).get("matrix", []):
                    accuracy[row["artifact"]] = row.get("candidate_accuracy")
            except (OSError, json.JSONDecodeError):
                continue
    for row in result["results"]:
        row["accuracy"] = accuracy.get(row["artifact"])


def machine_fingerprint() -> dict:
    model, flags = "unknown", []
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    flags = sorted(present & {"avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                                              "avx_vnni", "amx_int8", "amx_bf16", "sse4_2", "f16c"})
                    break
    except OSError:
        pass
    return {"cpu": model, "cpu_flags": flags, "cores": os.cpu_count(), "machine": platform.machine(),
            "system": f"{platform.system()} {platform.release()}", "python": platform.python_version()}


def _row_line(row: dict) -> str:
    if "error" in row:
        return f"✗ {row['error']}"
    return (f"p50 {row['p50_us']:.1f} µs  p99 {row['p99_us']:.1f} µs  init {row['init_ms']:.0f} ms  "
            f"first {row['first_ms']:.2f} ms  peak RSS {row['peak_rss_mb']:.0f} MB  ({row['runs']} runs)")


# ---------------------------------------------------------------- outputs

CSV_COLUMNS = ["artifact", "backend", "precision", "threads", "batch", "xnnpack", "size", "init_ms", "first_ms",
               "min_us", "p50_us", "p90_us", "p99_us", "mean_us", "std_us", "runs", "throughput_per_s",
               "peak_rss_mb", "rss_delta_mb", "accuracy", "error"]


def to_csv(result: dict) -> str:
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in result["results"]:
        writer.writerow({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
    return buffer.getvalue()


def render_table(result: dict):
    from rich.table import Table

    table = Table(title=f"edgedl bench — {result['machine']['cpu']}", show_lines=False)
    for column in ("artifact", "backend", "thr", "batch", "size", "init ms", "first ms", "p50 µs", "p90 µs",
                   "p99 µs", "std µs", "runs", "inf/s", "peak MB", "Δ MB", "acc"):
        table.add_column(column, justify="left" if column in ("artifact", "backend") else "right")
    for r in result["results"]:
        if "error" in r:
            table.add_row(r["artifact"], r["backend"], str(r["threads"]), str(r["batch"]), f"{r['size']:,}",
                          f"[red]{r['error'][:60]}[/red]")
            continue
        table.add_row(r["artifact"], r["backend"], str(r["threads"]), str(r["batch"]), f"{r['size']:,}",
                      f"{r['init_ms']:.0f}", f"{r['first_ms']:.2f}", f"{r['p50_us']:.1f}", f"{r['p90_us']:.1f}",
                      f"{r['p99_us']:.1f}", f"{r['std_us']:.1f}", str(r["runs"]), f"{r['throughput_per_s']:.0f}",
                      f"{r['peak_rss_mb']:.0f}", f"{r['rss_delta_mb']:.0f}",
                      "–" if r.get("accuracy") is None else f"{r['accuracy']:.2%}")
    return table


def comparison_lines(result: dict) -> list[str]:
    lines = []
    for c in result["comparisons"]:
        if c["precision"] == "fp32":
            continue
        line = (f"{c['model']} {c['backend']} t={c['threads']} b={c['batch']}: {c['precision']} is "
                f"{c['speedup_vs_fp32']:.2f}× the speed of fp32 at {c['size_vs_fp32']:.2f}× the size")
        lines.append(line + (f"  ⚠ {c['verdict']}" if "verdict" in c else ""))
    return lines


def plot(result: dict, out: str | Path) -> list[Path]:
    """PNG plots: latency distribution per artifact; latency vs size vs accuracy when known."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .files import atomic_path

    out = Path(out)
    written = []
    rows = [r for r in result["results"] if "latencies_us" in r]
    if not rows:
        return written
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.5))
    labels = [f"{r['artifact']} t{r['threads']} b{r['batch']}" for r in rows]
    ax.boxplot([r["latencies_us"] for r in rows], orientation="horizontal", showfliers=False)
    ax.set_yticks(range(1, len(rows) + 1), labels, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("latency per inference (µs, log scale; whiskers 1.5 IQR)")
    ax.set_title("Latency distribution")
    fig.tight_layout()
    written.append(_save_fig(fig, out.with_name(out.stem + "_latency.png"), atomic_path, plt))
    scored = [r for r in rows if r.get("accuracy") is not None]
    if scored:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        sizes = np.array([r["size"] for r in scored], dtype=float)
        ax.scatter([r["p50_us"] for r in scored], [r["accuracy"] * 100 for r in scored],
                   s=30 + 300 * sizes / sizes.max(), alpha=0.6)
        for r in scored:
            ax.annotate(r["artifact"], (r["p50_us"], r["accuracy"] * 100), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("p50 latency (µs, log)")
        ax.set_ylabel("held-out accuracy (%)")
        ax.set_title("Latency vs accuracy (marker area ∝ file size)")
        fig.tight_layout()
        written.append(_save_fig(fig, out.with_name(out.stem + "_tradeoff.png"), atomic_path, plt))
    return written


def _save_fig(fig, path: Path, atomic_path, plt) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
