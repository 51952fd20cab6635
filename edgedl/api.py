"""The Python API: a façade that mirrors the CLI, one function per command. Nothing inside edgedl imports it."""

from __future__ import annotations

from pathlib import Path

from .recipe import train_config

__all__ = ["train", "train_config", "export", "validate", "bench", "bundle", "pipeline", "inspect"]


def train(model: str = "cnn", **options) -> dict:
    """Train a model; returns the run manifest. Options as for ``edgedl train``."""
    from .train.fit import train as _train

    return _train(train_config(model=model, **options))


def export(model, formats=("tflite",), quantize=("none",), out=None, **options) -> list[dict]:
    """Export a .keras file or training run folder; options as for ``edgedl export``."""
    from .export import ExportOptions, plan_targets
    from .export import export as _export

    targets, _ = plan_targets(list(_listify(formats)), list(_listify(quantize)))
    return _export(model, targets, out=out, options=ExportOptions(**options), progress=None)


def validate(model, artifacts=(), **options) -> dict:
    """Validate artifacts against the original; returns the report, whose ``passed`` says if all are faithful."""
    from .validate.run import ValidateOptions
    from .validate.run import validate as _validate

    return _validate(model, list(artifacts), ValidateOptions(**options), say=lambda message: None)


def bench(*artifacts, **options) -> dict:
    """Benchmark artifacts in isolated processes; options as BenchOptions."""
    from .bench.run import BenchOptions
    from .bench.run import bench as _bench

    return _bench(list(artifacts), BenchOptions(**options), say=lambda message: None)


def bundle(artifact, out, labels=None, targets=None, **tolerances) -> dict:
    """Build a device bundle from a .tflite artifact, validated first (tolerances as validate's flags)."""
    from .deploy.bundle import bundle as _bundle

    return _bundle(artifact, out, labels=labels, targets=targets, say=lambda message: None, tolerances=tolerances)


def pipeline(*recipes, **options) -> dict:
    """Run the whole pipeline; returns the summary (``summary['passed']``, ``summary['report']``)."""
    from .pipeline.run import PipelineOptions
    from .pipeline.run import pipeline as _pipeline

    if "out" in options:
        options["out"] = Path(options["out"])
    return _pipeline(list(recipes), PipelineOptions(**options), say=lambda message: None)


def inspect(path) -> dict:
    """I/O, quantization, ops and size of any .tflite or .onnx file."""
    from .runners.describe import describe

    return describe(path)


def _listify(value):
    return [value] if isinstance(value, str) else value
