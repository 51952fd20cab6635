"""Describe any ``.tflite`` or ``.onnx`` file: I/O tensors, quantization, ops, size. No TensorFlow needed."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ..core.errors import ArtifactError, UsageError
from ..core.files import sha256_file
from ..core.layout import format_of


def describe(path: str | Path, isolate: bool = True, kind: str | None = None) -> dict:
    """The facts a manifest records about an artifact, read from the file itself.

    ``isolate`` loads and runs the file in a bounded child process first (runners.isolation); pass
    False only for bytes edgedl has just written itself. ``kind`` names the format when the file's
    name does not (edgedl's temporary files).
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"artifact not found: {path}")
    if path.stat().st_size == 0:
        raise ArtifactError(f"{path} is empty")
    kind = kind or format_of(path)
    if kind == "tflite":
        body = _describe_tflite(path, isolate)
    elif kind == "onnx":
        body = _describe_onnx(path)
        if isolate:
            from .isolation import probe

            probe(path, "onnxruntime")
    else:
        raise UsageError(f"{path}: inspect reads .tflite and .onnx files")
    return {"file": path.name, "format": kind, "size": path.stat().st_size, "sha256": sha256_file(path), **body}


def _describe_tflite(path: Path, isolate: bool) -> dict:
    from .litert import STATEFUL_OPS, LiteRTRunner

    # Without the default XNNPACK delegate, so the op list shows the model's own ops, not DELEGATE.
    if isolate:
        from .isolation import probe

        info = probe(path, "litert", xnnpack=False)
    else:
        with LiteRTRunner(path, xnnpack=False) as runner:
            info = {"inputs": runner.inputs, "outputs": runner.outputs, "ops": runner.ops()}
    ops = Counter(info["ops"])
    return {
        "inputs": [t.as_dict() for t in info["inputs"]],
        "outputs": [t.as_dict() for t in info["outputs"]],
        "ops": dict(sorted(ops.items())),
        "stateful": bool(STATEFUL_OPS & set(ops)),
        "flex_ops": sorted(op for op in ops if op.startswith("Flex") or op == "CUSTOM"),
    }


def _describe_onnx(path: Path) -> dict:
    try:
        import onnx
    except ImportError as exc:  # pragma: no cover
        from ..core.errors import RuntimeMissing

        raise RuntimeMissing("reading .onnx files needs the onnx package", hint="pip install onnx") from exc
    try:
        # External data is never followed: a hostile file could name any file on this machine.
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise ArtifactError(f"{path} is not a valid ONNX file: {exc.__class__.__name__}: {str(exc)[:200]}") from exc
    initializers = {i.name for i in model.graph.initializer}
    ops = Counter(_all_op_types(model.graph))
    return {
        "inputs": [_onnx_tensor(v) for v in model.graph.input if v.name not in initializers],
        "outputs": [_onnx_tensor(v) for v in model.graph.output],
        "ops": dict(sorted(ops.items())),
        "opset": max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=None),
        "stateful": False,
        "flex_ops": [],
    }


def _all_op_types(graph):
    for node in graph.node:
        yield node.op_type
        for attribute in node.attribute:
            if attribute.g is not None and len(attribute.g.node):
                yield from _all_op_types(attribute.g)


def _onnx_tensor(value) -> dict:
    import onnx

    tensor_type = value.type.tensor_type
    shape = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    return {"name": value.name, "shape": shape, "dtype": dtype, "quantization": None}


def render(info: dict) -> str:
    """A human-readable block for ``edgedl inspect``."""
    lines = [f"{info['file']}  {info['format']}  {info['size']:,} bytes  sha256 {info['sha256'][:16]}…"]
    for role in ("inputs", "outputs"):
        for t in info[role]:
            quant = t.get("quantization")
            q = f"  scale={quant['scale']:.6g} zero_point={quant['zero_point']}" if quant else ""
            lines.append(f"  {role[:-1]:6} {t['name']:<28} {str(t['shape']):<18} {t['dtype']}{q}")
    ops = ", ".join(f"{name}×{count}" for name, count in info["ops"].items())
    lines.append(f"  ops    {ops}")
    if info.get("stateful"):
        lines.append("  note   stateful ops: reset variable tensors before every inference")
    if info.get("flex_ops"):
        lines.append(f"  note   needs ops outside the builtin set: {', '.join(info['flex_ops'])}")
    return "\n".join(lines)
