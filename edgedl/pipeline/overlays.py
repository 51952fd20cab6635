"""Model Explorer node-data overlays: edgedl's per-layer findings painted on the artifact's graph.

Model Explorer (``ai-edge-model-explorer``) matches a node-data entry to a graph node by one of the
node's output tensor names, so every value here is keyed by the name the artifact itself gives that
tensor. The JSON is Model Explorer's "graph node data" format (``results``: key → ``{value,
bgColor}``, plus ``thresholds`` for the colours): a user can load the files into their own Model
Explorer with "Add per-node data", and ``edgedl explore`` passes them to it.

Overlays written, when the data exists:
- ``drift_steps``: RMSE against the float model in quantization steps of the tensor (TFLite, from
  the quantization debugger of ``validate --layers``);
- ``drift_sqnr``: SQNR in dB against the float model (TFLite and ONNX; lower is worse);
- ``precision``: what each op computes in (int8, int16, float32…) as exported, after any rescue.
Per-op latency is not measured by ``edgedl bench`` (it times whole inferences), so there is none.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..core.files import write_text
from ..validate.drift_names import graph_name

# Rounding alone leaves an RMSE of 1/sqrt(12) ≈ 0.29 steps (uniform error over one step): green up to
# that, then yellow to twice that, orange to a whole step, red beyond.
STEPS_THRESHOLDS = [{"value": 0.3, "bgColor": "#cdebd6"}, {"value": 0.6, "bgColor": "#f6eeb4"},
                    {"value": 1.0, "bgColor": "#f7c99a"}, {"value": 1e12, "bgColor": "#f1998e"}]
SQNR_THRESHOLDS = [{"value": 20.0, "bgColor": "#f1998e"}, {"value": 30.0, "bgColor": "#f7c99a"},
                   {"value": 40.0, "bgColor": "#f6eeb4"}, {"value": 1e12, "bgColor": "#cdebd6"}]
PRECISION_COLOURS = {"int8": "#cdebd6", "uint8": "#cdebd6", "int16": "#cfe0f5", "int32": "#e6e6e6",
                     "float32": "#f7c99a", "float16": "#f6eeb4"}
QUANTIZED_ONNX_OPS = ("QLinear", "Integer", "QuantizeLinear", "DynamicQuantize", "QGemm", "QAttention")


def tensor_names(artifact: Path) -> list[str]:
    """The artifact's op output tensors, in graph order."""
    return [name for _, name, _ in _ops(artifact)]


def _ops(artifact: Path) -> list[tuple[str, str, str]]:
    """(op type, first output tensor, its element type in lower case: int8, float32…) of every op."""
    if artifact.suffix == ".tflite":
        from ..export.tflite import ops_with_types

        return [(op, name, kind.lower()) for op, name, kind in ops_with_types(artifact.read_bytes())]
    import onnx

    graph = onnx.load(str(artifact), load_external_data=False).graph
    found = []
    for node in graph.node:
        if not node.output:
            continue
        quantized = any(mark in node.op_type for mark in QUANTIZED_ONNX_OPS) and node.op_type != "DequantizeLinear"
        found.append((node.op_type, node.output[0], "int8" if quantized else "float32"))
    return found


def build(artifact: Path, drift: dict | None) -> dict[str, dict]:
    """Overlay name → Model Explorer graph node data, for one artifact and its drift entry (if any)."""
    ops = _ops(artifact)
    names = {name for _, name, _ in ops}
    overlays = {"precision": {"name": f"{artifact.name}: op precision", "results": {
        name: {"value": kind, "bgColor": PRECISION_COLOURS.get(kind, "#ffffff")} for _, name, kind in ops if name}}}
    rows = (drift or {}).get("tensors") or []
    steps, sqnr = {}, {}
    for row in rows:
        key = graph_name(row.get("graph_tensor") or row["tensor"], names) or graph_name(row["tensor"], names)
        if key is None:
            continue
        if row.get("metric") == "rmse/scale":
            steps[key] = max(steps.get(key, 0.0), round(float(row["score"]), 4))
        value = row.get("sqnr_db")
        if value is not None and math.isfinite(value):
            sqnr[key] = min(sqnr.get(key, math.inf), round(float(value), 2))
    if steps:
        overlays["drift_steps"] = {"name": f"{artifact.name}: drift vs float (quantization steps)",
                                   "results": {k: {"value": v} for k, v in steps.items()},
                                   "thresholds": STEPS_THRESHOLDS}
    if sqnr:
        overlays["drift_sqnr"] = {"name": f"{artifact.name}: SQNR vs float (dB, lower is worse)",
                                  "results": {k: {"value": v} for k, v in sqnr.items()},
                                  "thresholds": SQNR_THRESHOLDS}
    # Model Explorer paints the nodes with the overlay added last: drift in steps, where there is one.
    order = ("precision", "drift_sqnr", "drift_steps")
    return {name: overlays[name] for name in order if name in overlays}


def write(artifact: Path, drift: dict | None, folder: Path) -> list[Path]:
    """Write ``<artifact>.<overlay>.json`` files into ``folder``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, data in build(artifact, drift).items():
        path = folder / f"{artifact.name}.{name}.json"
        write_text(path, json.dumps(data, indent=1) + "\n")
        written.append(path)
    return written


def drift_of(artifact: Path) -> dict | None:
    """The artifact's per-layer drift from the ``validation.json`` beside it (``validate --layers``)."""
    report = artifact.parent / "validation.json"
    if not report.is_file():
        return None
    try:
        return (json.loads(report.read_text(encoding="utf-8")).get("drift") or {}).get(artifact.name)
    except (OSError, ValueError):
        return None


def write_for_pipeline(out: Path, summary: dict) -> list[Path]:
    """Overlays beside the report (``OUT/overlays/``) for every quantized artifact of every model."""
    written = []
    for recipe in summary["recipes"]:
        drift = (recipe.get("validation") or {}).get("drift") or {}
        for row in (recipe.get("validation") or {}).get("matrix") or []:
            if row["precision"] in ("fp32", "fp16"):
                continue
            artifact = Path(recipe["run_dir"]) / "exports" / row["artifact"]
            if artifact.is_file():
                written += write(artifact, drift.get(row["artifact"]), out / "overlays")
    return written
