"""Model cards: what a training run knows, declared for a model edgedl did not train.

A card is a small TOML file (``MODEL.card.toml`` beside ``MODEL.keras`` is found on its own, or pass
``--card``). Every key is optional; paths are relative to the card::

    task = "classification"            # or "regression"; per output: [outputs.NAME] task = "..."
    labels = ["cat", "dog"]            # class names in output order (or labels_file = "labels.txt")

    [input]                            # how raw data becomes model input: input = raw × scale + offset
    scale = 0.00392156862745098
    offset = 0.0

    [data]
    heldout = "heldout.npz"            # inputs: x, or one array per input name; labels: y, or y_<output>
    calibration = "calibration.npz"    # representative inputs for int8, same keys as heldout
    train = "train.npz"                # x_train, y_train (as for `edgedl train --data`): lets
                                       # `edgedl finetune` (e.g. quantization-aware) continue training

Flags (``--task``, ``--labels``, ``--input-scale``, ``--input-offset``, ``--data``) override the card.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .files import read_toml, regular_file

CARD_SUFFIX = ".card.toml"
TASKS = ("classification", "regression")


@dataclass
class Card:
    task: str | None = None
    output_tasks: dict = field(default_factory=dict)
    labels: list[str] | None = None
    preprocessing: dict | None = None  # {"scale": s, "offset": o}
    heldout: Path | None = None
    calibration: Path | None = None
    train: Path | None = None
    path: Path | None = None

    def task_for(self, output: str) -> str | None:
        return self.output_tasks.get(output, self.task)

    def describe(self) -> dict:
        return {"card": str(self.path) if self.path else None, "task": self.task, "output_tasks": self.output_tasks,
                "labels": self.labels, "preprocessing": self.preprocessing,
                "heldout": str(self.heldout) if self.heldout else None,
                "train": str(self.train) if self.train else None}


def find_card(model_path: str | Path) -> Path | None:
    """``MODEL.card.toml`` beside ``MODEL.keras``, if there is one."""
    path = Path(model_path)
    candidate = path.with_name(path.stem + CARD_SUFFIX)
    return candidate if candidate.is_file() else None


def load_card(path: str | Path) -> Card:
    path = Path(path)
    doc = read_toml(path, "model card")
    known = {"task", "labels", "labels_file", "input", "data", "outputs"}
    unknown = set(doc) - known
    if unknown:
        raise UsageError(f"model card {path}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    outputs = doc.get("outputs", {})
    if not isinstance(outputs, dict) or not all(isinstance(v, dict) for v in outputs.values()):
        raise UsageError(f"model card {path}: [outputs.NAME] tables hold per-output settings")
    card = Card(task=_task(doc.get("task"), path),
                output_tasks={name: _task(table.get("task"), path) for name, table in outputs.items()
                              if table.get("task") is not None},
                path=path)
    if "labels" in doc and "labels_file" in doc:
        raise UsageError(f"model card {path}: give labels or labels_file, not both")
    if "labels" in doc:
        labels = doc["labels"]
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise UsageError(f"model card {path}: labels must be a list of strings")
        card.labels = check_labels(labels, f"model card {path}")
    elif "labels_file" in doc:
        card.labels = read_labels(_beside(path, doc["labels_file"]))
    card.preprocessing = _preprocessing(doc.get("input"), path)
    data = doc.get("data", {})
    if not isinstance(data, dict):
        raise UsageError(f"model card {path}: [data] must be a table")
    card.heldout = _beside(path, data["heldout"]) if "heldout" in data else None
    card.calibration = _beside(path, data["calibration"]) if "calibration" in data else None
    card.train = _beside(path, data["train"]) if "train" in data else None
    return card


def with_flags(card: Card | None, task: str | None = None, labels: str | Path | None = None,
               input_scale: float | None = None, input_offset: float | None = None) -> Card:
    """The card, with whatever the user also passed as flags taking precedence."""
    card = card or Card()
    if task is not None:
        card.task = _task(task, "--task")
    if labels is not None:
        card.labels = read_labels(Path(labels))
    if input_scale is not None or input_offset is not None:
        base = card.preprocessing or {"scale": 1.0, "offset": 0.0}
        card.preprocessing = {"scale": base["scale"] if input_scale is None else float(input_scale),
                              "offset": base["offset"] if input_offset is None else float(input_offset)}
    return card


def read_labels(path: Path) -> list[str]:
    """One class name per line, UTF-8; blank lines ignored; no control characters (a label is one line
    in labels.txt, the bundle's manifest and the Kotlin snippet)."""
    regular_file(Path(path), "labels file", UsageError)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise UsageError(f"labels file not found: {path}") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text (byte {exc.start}); labels are one UTF-8 name per line") from exc
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise UsageError(f"{path} holds no labels (one class name per line)")
    return check_labels(labels, str(path))


def check_labels(labels: list[str], where: str) -> list[str]:
    """Class names are printable text: a newline or control character would forge lines downstream."""
    for label in labels:
        if any(ord(c) < 32 or ord(c) == 127 for c in label):
            raise UsageError(f"{where}: label {label!r} holds a control character (newline, tab, escape…)")
    return labels


def _task(value, where) -> str | None:
    if value is None:
        return None
    if value not in TASKS:
        raise UsageError(f"{where}: task must be {' or '.join(TASKS)}, got {value!r}")
    return value


def _preprocessing(table, path: Path) -> dict | None:
    if table is None:
        return None
    if not isinstance(table, dict) or set(table) - {"scale", "offset"}:
        raise UsageError(f"model card {path}: [input] holds scale and offset only")
    for key, value in table.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UsageError(f"model card {path}: [input] {key} must be a finite number, got {value!r}")
    return {"scale": float(table.get("scale", 1.0)), "offset": float(table.get("offset", 0.0))}


def _beside(card: Path, relative: str) -> Path:
    if not isinstance(relative, str):
        raise UsageError(f"model card {card}: paths must be strings, got {relative!r}")
    path = Path(relative)
    return path if path.is_absolute() else card.parent / path
