"""The Python API; mirrors the CLI one function per command."""

from __future__ import annotations

from pathlib import Path

from .recipe import is_recipe, load_recipe
from .train import TrainConfig


def train_config(recipe=None, model=None, data=None, out=None, seed=None, calibration_samples=None,
                 unsafe=False, **settings) -> TrainConfig:
    """Merge a recipe (if any) with explicit options; explicit options win."""
    base: dict = {}
    if recipe is not None:
        if not is_recipe(recipe):
            model = model or recipe  # `edgedl train cnn` reads as --model cnn
        else:
            loaded = load_recipe(recipe)
            base = {"model": loaded.architecture, "data": loaded.data, "seed": loaded.seed,
                    "calibration_samples": loaded.calibration_samples, **loaded.train}
            base.setdefault("out", Path("runs") / loaded.name)
    model = model or base.get("model", "cnn")
    config = TrainConfig(
        model=model,
        data=data or base.get("data", "digits"),
        out=Path(out or base.get("out") or Path("runs") / Path(str(model)).stem.split(":")[0]),
        seed=seed if seed is not None else base.get("seed", 0),
        calibration_samples=calibration_samples or base.get("calibration_samples", 200),
        extra={"unsafe": unsafe},
    )
    for key in ("epochs", "batch_size", "learning_rate", "augment", "patience", "clipnorm"):
        value = settings.get(key, None)
        value = base.get(key) if value is None else value
        if value is not None:
            setattr(config, key, value)
    for key in ("device", "strategy", "mixed_precision", "verbose"):
        if key in settings:
            setattr(config, key, settings[key])
    return config


def train(model: str = "cnn", **options) -> dict:
    """Train a model; returns the run manifest. Options as for ``edgedl train``."""
    from .train import train as _train

    return _train(train_config(model=model, **options))


def export(model, formats=("tflite",), quantize=("none",), out=None, **options) -> list[dict]:
    """Export a .keras file or training run folder; options as for ``edgedl export``."""
    from .export import ExportOptions, plan_targets
    from .export import export as _export

    targets, _ = plan_targets(list(_listify(formats)), list(_listify(quantize)))
    return _export(model, targets, out=out, options=ExportOptions(**options), progress=None)


def validate(model, artifacts=(), **options) -> dict:
    """Validate artifacts against the original; raises ParityFailure when one is not faithful."""
    from .validate import ValidateOptions
    from .validate import validate as _validate

    return _validate(model, list(artifacts), ValidateOptions(**options), say=lambda message: None)


def bench(*artifacts, **options) -> dict:
    """Benchmark artifacts in isolated processes; options as BenchOptions."""
    from .bench import BenchOptions
    from .bench import bench as _bench

    return _bench(list(artifacts), BenchOptions(**options), say=lambda message: None)


def bundle(artifact, out, labels=None, targets=None, **tolerances) -> dict:
    """Build a device bundle from a .tflite artifact, validated first (tolerances as validate's flags)."""
    from .bundle import bundle as _bundle

    return _bundle(artifact, out, labels=labels, targets=targets, say=lambda message: None, tolerances=tolerances)


def pipeline(*recipes, **options) -> dict:
    """Run the whole pipeline; returns the summary (``summary['passed']``, ``summary['report']``)."""
    from .pipeline import PipelineOptions
    from .pipeline import pipeline as _pipeline

    if "out" in options:
        options["out"] = Path(options["out"])
    return _pipeline(list(recipes), PipelineOptions(**options), say=lambda message: None)


def inspect(path) -> dict:
    """I/O, quantization, ops and size of any .tflite or .onnx file."""
    from .inspect import describe

    return describe(path)


def _listify(value):
    return [value] if isinstance(value, str) else value
