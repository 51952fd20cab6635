#!/usr/bin/env python3
"""edgedl's exports against what a user gets otherwise, measured in one run on one machine.

Peers, made from the same trained Keras model:
  keras-litert   model.export(path, format="litert")           run in ai-edge-litert
  keras-onnx     model.export(path, format="onnx")             run in onnxruntime
  tf2onnx-cli    python -m tf2onnx.convert --saved-model DIR   run in onnxruntime
Each is checked on the held-out split (does it run at all? accuracy) and benchmarked with
edgedl bench's isolated children: at one thread (like for like) and with the runtime's own
defaults (what a user who sets nothing gets). Prints Markdown for docs/BENCHMARKS.md.

    python tools/compare_peers.py runs/pipeline/cnn/run runs/pipeline/lstm/run
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def make_peers(model_path: Path, folder: Path) -> dict[str, Path | str]:
    """Each peer's file, or the one-line reason it could not be made."""
    import keras

    model = keras.saving.load_model(model_path, compile=False)
    peers: dict[str, Path | str] = {}
    for name, fmt, file in (("keras-litert", "litert", "keras.tflite"), ("keras-onnx", "onnx", "keras.onnx")):
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                model.export(str(folder / file), format=fmt)
            peers[name] = folder / file
        except Exception as exc:  # a peer that fails to export is a result, not a crash
            peers[name] = f"export failed: {exc.__class__.__name__}: {' '.join(str(exc).split())[:120]}"
    saved = folder / "saved_model"
    with contextlib.redirect_stdout(io.StringIO()):
        model.export(str(saved), format="tf_saved_model")
    done = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved), "--output",
                           str(folder / "tf2onnx.onnx")], capture_output=True, text=True)
    peers["tf2onnx-cli"] = folder / "tf2onnx.onnx" if done.returncode == 0 else \
        f"tf2onnx failed: {done.stderr.strip().splitlines()[-1][:120]}"
    return peers


def accuracy(path: Path, run_dir: Path) -> tuple[float | None, str]:
    from edgedl.data import fit_to_input
    from edgedl.runners.open import open_runner

    heldout = np.load(run_dir / "heldout.npz")
    try:
        with open_runner(path) as runner:
            x = fit_to_input(heldout["x"], tuple(d or s for d, s in zip(runner.inputs[0].shape[1:],
                                                                        heldout["x"].shape[1:], strict=False)))
            probs = runner.infer([x])[0]
    except Exception as exc:
        reason = " ".join(str(exc).replace(str(path), path.name).split())
        return None, f"does not run: {reason[:110]}"
    top = probs.argmax(-1)
    top = top[:, -1] if top.ndim == 2 else top
    return float(np.mean(top == heldout["y"])), "runs"


def latency(path: Path, threads: int) -> float | None:
    from edgedl.bench.run import BenchOptions, bench

    row = bench([path], BenchOptions(threads=[threads], min_time=1.0, warmup=50), say=lambda m: None)["results"][0]
    return row.get("p50_us")


def compare(run_dir: Path) -> list[dict]:
    exports = run_dir / "exports"
    name = run_dir.parent.name if run_dir.name == "run" else run_dir.name
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgedl-peers-") as tmp:
        peers = make_peers(run_dir / "model.keras", Path(tmp))
        candidates = [(f"edgedl {p.stem.split('_')[-1]} {p.suffix[1:]}", p) for p in sorted(exports.iterdir())
                      if p.suffix in (".tflite", ".onnx")] + list(peers.items())
        for label, path in candidates:
            if isinstance(path, str):
                rows.append({"model": name, "variant": label, "status": path})
                continue
            acc, status = accuracy(path, run_dir)
            row = {"model": name, "variant": label, "size": path.stat().st_size, "accuracy": acc, "status": status}
            if acc is not None:
                row["p50_1t"] = latency(path, 1)
                row["p50_default"] = latency(path, 0) if not label.startswith("edgedl") else None
            rows.append(row)
    return rows


def _cell(row: dict, key: str, fmt: str) -> str:
    return "–" if row.get(key) is None else format(row[key], fmt)


def markdown(rows: list[dict]) -> str:
    lines = ["| model | variant | runs? | size (B) | accuracy | p50 1 thread (µs) | p50 runtime defaults (µs) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['variant']} | {r['status']} | {_cell(r, 'size', ',')} | "
                     f"{_cell(r, 'accuracy', '.2%')} | {_cell(r, 'p50_1t', '.1f')} | "
                     f"{_cell(r, 'p50_default', '.1f')} |")
    return "\n".join(lines)


def ratios(rows: list[dict]) -> list[str]:
    out = []
    by = {(r["model"], r["variant"]): r for r in rows}
    for model in sorted({r["model"] for r in rows}):
        peer = by.get((model, "keras-litert"))
        for ours in ("edgedl int8 tflite", "edgedl dynamic tflite", "edgedl fp32 tflite"):
            mine = by.get((model, ours))
            if mine and mine.get("p50_1t") and peer and peer.get("p50_1t"):
                out.append(f"{model}: {ours} is {peer['p50_1t'] / mine['p50_1t']:.2f}× faster than keras-litert "
                           f"(1 thread) at {mine['size'] / peer['size']:.2f}× its size")
            elif mine and peer and peer.get("status") != "runs":
                out.append(f"{model}: keras-litert {peer['status']}; {ours} runs at {mine.get('p50_1t', 0):.1f} µs")
        onnx_peer = by.get((model, "keras-onnx"))
        mine = by.get((model, "edgedl fp32 onnx"))
        if onnx_peer and mine and onnx_peer.get("p50_1t") and mine.get("p50_1t"):
            out.append(f"{model}: edgedl fp32 onnx vs keras-onnx p50 ratio {onnx_peer['p50_1t'] / mine['p50_1t']:.2f}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="training run folders with exports/")
    args = parser.parse_args()
    rows = [row for run in args.runs for row in compare(run)]
    print(markdown(rows))
    print()
    for line in ratios(rows):
        print(f"- {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
