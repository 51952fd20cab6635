"""Recipes: one TOML file per shipped model (architecture, data, training, export targets, gates)."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError

DEFAULT_TARGETS = ["tflite:fp32", "tflite:fp16", "tflite:dynamic", "tflite:int8", "onnx:fp32", "onnx:int8"]
TRAIN_KEYS = {"epochs", "batch_size", "learning_rate", "augment", "patience", "clipnorm", "seed"}
GATE_KEYS = {"max_accuracy_drop", "min_agreement", "max_latency_ms", "max_size_kb"}


@dataclass
class Recipe:
    name: str
    architecture: str
    data: str = "digits"
    seed: int = 0
    train: dict = field(default_factory=dict)
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    calibration_samples: int = 200
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
        data=doc.get("data", {}).get("source", "digits"),
        seed=int(doc.get("data", {}).get("seed", 0)),
        train=train,
        targets=list(export.get("targets", DEFAULT_TARGETS)),
        calibration_samples=int(export.get("calibration_samples", 200)),
        gates=gates,
        path=path,
    )
