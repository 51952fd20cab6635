"""Bench results for people and other tools: a table, CSV, comparison lines and PNG plots.

``latency_figure`` draws the latency distributions; the pipeline report uses it too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..core.files import atomic_path
from ..core.outputs import OWN_PNG_SOFTWARE

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
        if c["artifact"] == c.get("base", c["artifact"] if c["precision"] == "fp32" else None):
            continue
        line = (f"{c['backend']} t={c['threads']} b={c['batch']}: {c['artifact']} is {c['speedup_vs_fp32']:.2f}× "
                f"the speed of {c.get('base', 'fp32')} at {c['size_vs_fp32']:.2f}× the size")
        lines.append(line + (f"  ⚠ {c['verdict']}" if "verdict" in c else ""))
    return lines


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display on a server or in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_figure(plt, samples: list[list[float]], labels: list[str], title: str = "Latency distribution"):
    """Horizontal box plots of per-inference latencies, log scale; None when there is nothing to draw."""
    if not samples:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(samples) + 1.5))
    ax.boxplot(samples, orientation="horizontal", showfliers=False)
    ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax.set_xscale("log")
    ax.set_xlabel("latency per inference (µs, log scale; whiskers 1.5 IQR)")
    ax.set_title(title)
    fig.tight_layout()
    return fig


def save_figure(plt, fig, path: Path, dpi: int = 110) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", metadata={"Software": OWN_PNG_SOFTWARE})  # marks it as ours
    plt.close(fig)
    return path


def plot(result: dict, out: str | Path) -> list[Path]:
    """PNG plots: latency distribution per artifact; latency vs size vs accuracy when known."""
    plt = pyplot()
    out = Path(out)
    written = []
    rows = [r for r in result["results"] if "latencies_us" in r]
    if not rows:
        return written
    fig = latency_figure(plt, [r["latencies_us"] for r in rows],
                         [f"{r['artifact']} t{r['threads']} b{r['batch']}" for r in rows])
    written.append(save_figure(plt, fig, out.with_name(out.stem + "_latency.png")))
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
        written.append(save_figure(plt, fig, out.with_name(out.stem + "_tradeoff.png")))
    return written
