"""Recipes and training settings: one TOML file per shipped model, and the options that train a model.

The training settings are named here once (``TRAIN_SETTINGS``); the CLI, the API, recipes and
the trainer all read them from this list.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .core.errors import UsageError
from .data import DEFAULT_DATA

DEFAULT_TARGETS = ["tflite:fp32", "tflite:fp16", "tflite:dynamic", "tflite:int8", "onnx:fp32", "onnx:int8"]
# Settings a recipe's [train] table, the CLI and the API may give; the architecture supplies defaults.
TRAIN_SETTINGS = ("epochs", "batch_size", "learning_rate", "augment", "patience", "clipnorm")
RUNTIME_SETTINGS = ("device", "strategy", "mixed_precision", "verbose")
TRAIN_KEYS = {*TRAIN_SETTINGS, "seed"}
GATE_KEYS = {"max_accuracy_drop", "min_agreement", "max_latency_ms", "max_size_kb"}
DEFAULT_CALIBRATION_SAMPLES = 200


@dataclass
class TrainConfig:
    model: str = "cnn"
    data: str = DEFAULT_DATA
    out: Path = Path("runs/cnn")
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    augment: str | None = None
    patience: int | None = None
    clipnorm: float | None = None
    seed: int = 0
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    device: str = "auto"
    strategy: str = "auto"
    mixed_precision: bool = False
    verbose: int | str = "auto"
    extra: dict = field(default_factory=dict)


@dataclass
class Recipe:
    name: str
    architecture: str
    data: str = DEFAULT_DATA
    seed: int = 0
    train: dict = field(default_factory=dict)
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    gates: dict = field(default_factory=dict)
    path: Path | None = None


def is_recipe(spec: str) -> bool:
    return str(spec).endswith(".toml")


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UsageError(f"recipe not found: {path}") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"recipe {path} is not valid TOML: {exc}") from exc
    model = doc.get("model", {})
    if "architecture" not in model:
        raise UsageError(f"recipe {path} lacks [model] architecture = \"...\"")
    train = doc.get("train", {})
    unknown = set(train) - TRAIN_KEYS
    if unknown:
        raise UsageError(f"recipe {path}: unknown [train] keys {sorted(unknown)}; known: {sorted(TRAIN_KEYS)}")
    gates = doc.get("gates", {})
    unknown = set(gates) - GATE_KEYS
    if unknown:
        raise UsageError(f"recipe {path}: unknown [gates] keys {sorted(unknown)}; known: {sorted(GATE_KEYS)}")
    export = doc.get("export", {})
    return Recipe(
        name=model.get("name", path.stem),
        architecture=model["architecture"],
        data=doc.get("data", {}).get("source", DEFAULT_DATA),
        seed=int(doc.get("data", {}).get("seed", 0)),
        train=train,
        targets=list(export.get("targets", DEFAULT_TARGETS)),
        calibration_samples=int(export.get("calibration_samples", DEFAULT_CALIBRATION_SAMPLES)),
        gates=gates,
        path=path,
    )


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
        data=data or base.get("data", DEFAULT_DATA),
        out=Path(out or base.get("out") or Path("runs") / Path(str(model)).stem.split(":")[0]),
        seed=seed if seed is not None else base.get("seed", 0),
        calibration_samples=calibration_samples or base.get("calibration_samples", DEFAULT_CALIBRATION_SAMPLES),
        extra={"unsafe": unsafe},
    )
    for key in TRAIN_SETTINGS:
        value = settings.get(key)
        value = base.get(key) if value is None else value
        if value is not None:
            setattr(config, key, value)
    for key in RUNTIME_SETTINGS:
        if key in settings:
            setattr(config, key, settings[key])
    return config
