"""Recipes and training settings: one TOML file per shipped model, and the options that train a model.

The training settings are named here once (``TRAIN_SETTINGS``); the CLI, the API, recipes and
the trainer all read them from this list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .core.card import TASKS
from .core.errors import UsageError
from .core.files import read_toml
from .core.settings import DEVICES, GATES, TOLERANCES, TRAIN, check_known, check_table
from .data import DEFAULT_DATA

DEFAULT_TARGETS = ["tflite:fp32", "tflite:fp16", "tflite:dynamic", "tflite:int8", "onnx:fp32", "onnx:int8"]
# Settings a recipe's [train] table, the CLI and the API may give; the architecture supplies defaults.
TRAIN_SETTINGS = ("epochs", "batch_size", "learning_rate", "augment", "label_smoothing", "patience", "clipnorm")
RUNTIME_SETTINGS = ("device", "strategy", "mixed_precision", "verbose", "task", "qat_epochs", "backend")
TRAIN_KEYS = {*TRAIN_SETTINGS, "seed", "qat_epochs", "backend"}
GATE_KEYS = set(GATES)
DEFAULT_CALIBRATION_SAMPLES = 200
DEFAULT_QAT_EPOCHS = 3  # quantization-aware fine-tuning: train --qat, finetune, the rescue ladder's qat rung
RESCUE_RUNGS = ("calibration", "keep_float", "int16x8", "qat")
DEVICES_KEYS = {"file", "ssh_config", "threads", "xnnpack", *DEVICES}
# The tables of a recipe and the keys each may hold: anything else is a typo, refused before any work.
RECIPE_KEYS = {
    "model": {"name", "architecture", "keras", "card"},
    "data": {"source", "seed", "task"},
    "train": TRAIN_KEYS,
    "export": {"targets", "calibration_samples", "calibration_method"},
    "gates": GATE_KEYS,
    "tolerances": set(TOLERANCES),
    "rescue": {"rungs", "qat_epochs"},
    "devices": DEVICES_KEYS,
}


def check_settings(settings: dict, seed) -> None:
    """Refuse settings that cannot make sense before any work starts (each named with its value)."""
    check_table({k: v for k, v in settings.items() if k in TRAIN}, TRAIN, "training settings")
    check_seed(seed)


def check_seed(seed) -> int:
    return TRAIN["seed"].check(seed)


def check_gate_settings(gates: dict, where: str = "gates") -> dict:
    """Gate limits are numbers in their range (fractions for accuracy and agreement); refused before any work."""
    return check_table(gates, GATES, where)


@dataclass
class TrainConfig:
    model: str = "cnn"
    data: str = DEFAULT_DATA
    out: Path = Path("runs/cnn")
    epochs: int | None = None
    batch_size: int | None = None
    learning_rate: float | None = None
    augment: str | None = None
    label_smoothing: float | None = None
    patience: int | None = None
    clipnorm: float | None = None
    seed: int = 0
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    device: str = "auto"
    strategy: str = "auto"
    mixed_precision: bool = False
    verbose: int | str = "auto"
    task: str | None = None  # classification or regression; None: inferred from the labels
    qat_epochs: int = 0  # after float training, this many epochs of quantization-aware fine-tuning (0: none)
    name: str | None = None  # the run's name (artifacts are NAME_precision); default: from the architecture
    backend: str = "tensorflow"  # the Keras backend that trains: tensorflow, jax, torch, or auto (train/backends.py)
    extra: dict = field(default_factory=dict)


@dataclass
class Recipe:
    name: str
    architecture: str | None  # a seed name or file.py:function to train; None with ``keras``
    data: str = DEFAULT_DATA
    seed: int = 0
    train: dict = field(default_factory=dict)
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    calibration_method: str = "minmax"  # int8 activation ranges, as export's --calibration-method (checked there)
    gates: dict = field(default_factory=dict)
    path: Path | None = None
    task: str | None = None
    keras: Path | None = None  # a model trained elsewhere: the pipeline adopts it instead of training
    card: Path | None = None  # what edgedl must know about that model (docs: "Your own model")
    tolerances: dict = field(default_factory=dict)  # parity limits, as validate's --tolerance
    # When an int8 artifact fails its gates, the pipeline tries these in order (pipeline/rescue.py)
    rescue: list[str] = field(default_factory=lambda: list(RESCUE_RUNGS))
    qat_epochs: int = DEFAULT_QAT_EPOCHS
    # [devices]: the shipped bundle is checked, and every TFLite artifact timed, on these SSH devices
    devices: dict | None = None


def is_recipe(spec: str) -> bool:
    return str(spec).endswith(".toml")


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    doc = read_toml(path, "recipe")
    check_known(doc, RECIPE_KEYS, f"recipe {path}: table")
    for name, keys in RECIPE_KEYS.items():
        check_known(_table(doc, name, path), keys, f"recipe {path} [{name}]")
    model = _table(doc, "model", path)
    if ("architecture" in model) == ("keras" in model):
        raise UsageError(f"recipe {path} needs exactly one of [model] architecture = \"...\" (train it) "
                         "or keras = \"model.keras\" (a model trained elsewhere)")
    train = _table(doc, "train", path)
    check_table({k: v for k, v in train.items() if k in TRAIN}, TRAIN, f"recipe {path} [train]")
    gates = check_gate_settings(_table(doc, "gates", path), f"recipe {path} [gates]")
    export, data = _table(doc, "export", path), _table(doc, "data", path)
    targets = export.get("targets", DEFAULT_TARGETS)
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise UsageError(f"recipe {path}: [export] targets must be a list of strings like \"tflite:int8\"")
    rescue = _table(doc, "rescue", path)
    rungs = rescue.get("rungs", list(RESCUE_RUNGS))
    if not isinstance(rungs, list) or set(rungs) - set(RESCUE_RUNGS):
        raise UsageError(f"recipe {path}: [rescue] rungs must be a list drawn from {list(RESCUE_RUNGS)}, got {rungs!r}")
    task = data.get("task")
    if task is not None and task not in TASKS:
        raise UsageError(f"recipe {path}: [data] task must be classification or regression, got {task!r}")
    return Recipe(
        name=_text(model.get("name", path.stem), "[model] name", path),
        architecture=_architecture(model["architecture"], path) if "architecture" in model else None,
        keras=_beside(path, _text(model["keras"], "[model] keras", path)) if "keras" in model else None,
        card=_beside(path, _text(model["card"], "[model] card", path)) if "card" in model else None,
        task=task,
        tolerances=check_table(_table(doc, "tolerances", path), TOLERANCES, f"recipe {path} [tolerances]"),
        data=_data_source(_text(data.get("source", DEFAULT_DATA), "[data] source", path), path),
        seed=TRAIN["seed"].check(data.get("seed", 0), f"recipe {path} [data]"),
        train=train,
        targets=list(targets),
        calibration_samples=TRAIN["calibration_samples"].check(
            export.get("calibration_samples", DEFAULT_CALIBRATION_SAMPLES), f"recipe {path} [export]"),
        calibration_method=_text(export.get("calibration_method", "minmax"), "[export] calibration_method", path),
        gates=gates,
        path=path,
        rescue=list(rungs),
        qat_epochs=_at_least_one(TRAIN["qat_epochs"].check(rescue.get("qat_epochs", DEFAULT_QAT_EPOCHS),
                                                          f"recipe {path} [rescue]"), f"recipe {path} [rescue]"),
        devices=_devices(_table(doc, "devices", path), path),
    )




def _devices(table: dict, path: Path) -> dict | None:
    """[devices] file = "devices.toml" (beside the recipe), optional ssh_config, runs, warmup, samples, threads, xnnpack."""
    if not table:
        return None
    if "file" not in table:
        raise UsageError(f"recipe {path}: [devices] needs file = \"devices.toml\" (docs/DEPLOY.md, Your devices)")
    found = {"file": _beside(path, _text(table["file"], "[devices] file", path))}
    if "ssh_config" in table:
        found["ssh_config"] = _beside(path, _text(table["ssh_config"], "[devices] ssh_config", path))
    found |= check_table({k: v for k, v in table.items() if k in DEVICES}, DEVICES, f"recipe {path} [devices]")
    threads, xnnpack = table.get("threads", [1]), table.get("xnnpack", [True])
    if not isinstance(threads, list) or not threads or \
            not all(isinstance(t, int) and not isinstance(t, bool) and t >= 1 for t in threads):
        raise UsageError(f"recipe {path}: [devices] threads must be a list of thread counts, e.g. [1, 4]")
    if not isinstance(xnnpack, list) or not xnnpack or not all(isinstance(x, bool) for x in xnnpack):
        raise UsageError(f"recipe {path}: [devices] xnnpack must be [true], [false] or [true, false]")
    return found | {"threads": threads, "xnnpack": xnnpack}


def _data_source(source: str, path: Path) -> str:
    """A built-in name stays a name; a relative file or folder is found beside the recipe, like its architecture."""
    beside = path.parent / source
    if Path(source).is_absolute() or not beside.exists():
        return source
    return str(beside)


def _architecture(value, path: Path) -> str:
    """A seed name, module:function, or file.py:function — a relative file found beside the recipe first."""
    text = _text(value, "[model] architecture", path)
    target, _, function = text.rpartition(":")
    if target.endswith(".py") and not Path(target).is_absolute() and (path.parent / target).is_file():
        return f"{path.parent / target}:{function}"
    return text


def _beside(recipe: Path, relative: str) -> Path:
    """Paths in a recipe are relative to the recipe file."""
    path = Path(relative)
    return path if path.is_absolute() else recipe.parent / path


def _table(doc: dict, name: str, path: Path) -> dict:
    table = doc.get(name, {})
    if not isinstance(table, dict):
        raise UsageError(f"recipe {path}: [{name}] must be a table")
    return table


def _text(value, key: str, path: Path) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"recipe {path}: {key} must be a non-empty string, got {value!r}")
    return value


def _at_least_one(epochs: int, where: str) -> int:
    if epochs < 1:
        raise UsageError(f"{where}: qat_epochs must be ≥ 1 for the qat rung, got {epochs}")
    return epochs


def train_config(recipe=None, model=None, data=None, out=None, seed=None, calibration_samples=None,
                 unsafe=False, **settings) -> TrainConfig:
    """Merge a recipe (if any) with explicit options; explicit options win."""
    base: dict = {}
    if recipe is not None:
        if not is_recipe(recipe):
            model = model or recipe  # `edgedl train cnn` reads as --model cnn
        else:
            loaded = load_recipe(recipe)
            base = {"model": loaded.architecture or str(loaded.keras), "data": loaded.data, "seed": loaded.seed,
                    "calibration_samples": loaded.calibration_samples, "task": loaded.task, "name": loaded.name,
                    **loaded.train}
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
    config.task = base.get("task")
    config.qat_epochs = TRAIN["qat_epochs"].check(base.get("qat_epochs", 0))
    config.backend = base.get("backend", "tensorflow")
    if base.get("name"):
        from .core.outputs import safe_name

        config.name = safe_name(base["name"])  # the recipe's name names the run and its artifacts
    for key in RUNTIME_SETTINGS:
        if key in settings and settings[key] is not None:
            setattr(config, key, settings[key])
    return config
