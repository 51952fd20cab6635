"""Drift in the user's words: every converted tensor named by the Keras layer that produced it.

A converter renames and inserts: TFLite's quantization debugger reports ``NumericVerify/<tensor>:<n>``,
the model's output is ``StatefulPartitionedCall_1``, tf2onnx adds ``Transpose__28:0`` nodes. Such a
tensor carries no layer name, so it is followed upstream through the graph (the op that produced it,
that op's inputs, …) to the nearest tensor that does: a Transpose or Quantize node is folded into the
layer whose output it reshapes. A tensor with no named ancestor is labelled as inserted by the converter.
"""

from __future__ import annotations

from pathlib import Path

from ..runners.modelio import layer_for

INSERTED = "inserted by the converter"
# How far upstream a nameless tensor is followed before it is called converter-inserted.
MAX_HOPS = 12


def graph_name(name: str, known) -> str | None:
    """The tensor of another graph that ``name`` stands for: equal, or the longest that ``name`` begins
    with (the debugger's model suffixes its quantized copies: "t" becomes "t1", "out:0" becomes "out:02")."""
    if name in known:
        return name
    prefixes = [k for k in known if k and name.startswith(k)]
    return max(prefixes, key=len) if prefixes else None


def tflite_producers(flatbuffer: bytes) -> dict[str, list[str]]:
    """Tensor name → names of the inputs of the op that produced it (every subgraph of a TFLite model)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(bytearray(flatbuffer), 0))
    producers: dict[str, list[str]] = {}
    for subgraph in model.subgraphs:
        names = [(t.name or b"").decode(errors="replace") for t in subgraph.tensors]
        for op in subgraph.operators or []:
            inputs = [names[i] for i in (op.inputs if op.inputs is not None else []) if i >= 0]
            for out in op.outputs if op.outputs is not None else []:
                producers[names[out]] = inputs
    return producers


def onnx_producers(path: Path) -> dict[str, list[str]]:
    """Tensor name → inputs of the ONNX node that produced it."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return {out: [i for i in node.input if i] for node in graph.node for out in node.output}


def owner(tensor: str, layers: dict[str, str], producers: dict[str, list[str]]) -> tuple[str | None, bool]:
    """(Keras layer, inserted?) for a converted tensor. ``inserted`` is true when the tensor's own name
    names no layer and the layer was found upstream, or not at all (then the layer is None)."""
    direct = layer_for(tensor, layers)
    if direct or not layers:
        return direct, direct is None
    seen, frontier = {tensor}, [tensor]
    for _ in range(MAX_HOPS):
        upstream = []
        for name in frontier:
            for parent in producers.get(name, []):
                if parent in seen:
                    continue
                seen.add(parent)
                found = layer_for(parent, layers)
                if found:
                    return found, True
                upstream.append(parent)
        if not upstream:
            break
        frontier = upstream
    return None, True


def by_layer(rows: list[dict]) -> list[dict]:
    """One row per Keras layer (its worst tensor), worst first; converter-inserted tensors with no
    layer are grouped under INSERTED."""
    worst: dict[str, dict] = {}
    counts: dict[str, int] = {}
    for row in rows:
        key = row.get("layer") or INSERTED
        counts[key] = counts.get(key, 0) + 1
        if key not in worst or row["score"] > worst[key]["score"]:
            worst[key] = row
    layered = [{**row, "layer": key, "tensors": counts[key]} for key, row in worst.items()]
    return sorted(layered, key=lambda r: r["score"], reverse=True)
