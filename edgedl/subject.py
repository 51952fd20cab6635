"""One ``Subject`` per model: what every stage must know about it, resolved once.

A model reaches edgedl as a training run folder (its manifest records the task, class names,
preprocessing and data files) or as a ``.keras`` file trained elsewhere (a model card or flags
declare the same facts). ``Subject.resolve`` reads the run manifest, the card and the flags once,
in that one order of precedence (flags > card > run), and every stage reads the answer:

- the model's facts: task per output, class names, architecture, data files;
- one preprocessing decision with its reason (``decide``), applied the same way everywhere
  (``to_model``: raw samples → model inputs, range-checked against what the model was fitted to);
- one sample reader (``read``) whose labels pass the one label normaliser that training uses;
- the metrics a model is scored by (``score``).

optimum's ``OnnxConfig`` is the idea: one object per model that export and validation both read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from . import data as data_lib
from .core.card import Card, find_card, load_card, with_flags
from .core.errors import ModelError, UsageError
from .core.files import sha256_file
from .core.layout import EXPORTS, MANIFEST, load_run
from .core.metrics import task_metrics
from .core.outputs import name_from_reference, safe_name


@dataclass
class Declared:
    """What the user said about a model, as flags or a recipe: each field None when not said."""

    card: str | Path | None = None
    data: str | Path | None = None  # held-out samples for validation (raw data, or a run's own)
    task: str | None = None
    labels: str | Path | None = None  # a labels file, one class name per line
    input_scale: float | None = None
    input_offset: float | None = None
    calibration: str | Path | None = None  # representative samples for int8 (raw data)

    @classmethod
    def of(cls, options=None, **given) -> Declared:
        """The declared facts among an options object's attributes (ExportOptions, ValidateOptions…)
        and keywords; keywords win."""
        found = {f.name: getattr(options, f.name, None) for f in fields(cls)}
        found.update({k: v for k, v in given.items() if v is not None})
        return cls(**found)

    def present(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


@dataclass
class Subject:
    model_path: Path | None  # None only for a bare subject (flags and card, no model file)
    name: str  # a safe file-name part: artifacts are NAME_PRECISION.SUFFIX
    card: Card  # the card merged with the flags (an empty Card when neither says anything)
    run_dir: Path | None = None
    manifest: dict = field(default_factory=dict)  # the training run's manifest, or {}
    declared: Declared = field(default_factory=Declared)

    # ------------------------------------------------------------ resolving

    @classmethod
    def resolve(cls, model_or_run: str | Path, declared: Declared | None = None, name: str | None = None) -> Subject:
        """The subject for a run folder or a ``.keras`` file; every file it names is checked here."""
        declared = declared or Declared()
        path = Path(os.path.normpath(model_or_run))  # run/exports/../model.keras names run/model.keras
        if path.is_dir():
            if not (path / MANIFEST).exists():
                raise ModelError(f"{path} is a folder without a training manifest",
                                 hint="pass a .keras file or the --out folder of `edgedl train`")
            manifest = load_run(path)  # checks the sha256 of the model, calibration and held-out files
            card = _card(declared, None)
            # an adopted run keeps its card's per-output tasks (a regression head beside a classifier)
            card.output_tasks = {**((manifest.get("adopted") or {}).get("output_tasks") or {}), **card.output_tasks}
            architecture = manifest.get("architecture")
            stem = manifest.get("name") or (name_from_reference(architecture) if architecture else path.name)
            return cls(path / manifest["model"]["file"], safe_name(name or stem), card, path, manifest, declared)
        if not path.exists():
            raise ModelError(f"model not found: {path}", hint="pass a .keras file or a training run folder")
        if path.suffix != ".keras":
            raise ModelError(f"{path} is not a .keras file or a training run folder (suffix {path.suffix or 'none'})")
        if (path.parent / MANIFEST).is_file() and _names_model(path):
            return cls.resolve(path.parent, declared, name)  # a run's own model.keras is that run
        return cls(path, safe_name(name or path.stem), _card(declared, path), None, {}, declared)

    @classmethod
    def bare(cls, declared: Declared | None = None) -> Subject:
        """No model file at hand (validate against a saved reference): only what the flags and a card say."""
        declared = declared or Declared()
        return cls(None, "model", _card(declared, None), None, {}, declared)

    @classmethod
    def from_dict(cls, facts: dict) -> Subject:
        """The inverse of ``as_dict``: a subject handed to a worker process."""
        card = Card(**{k: (Path(v) if k in _CARD_PATHS and v else v) for k, v in facts["card"].items()})
        return cls(Path(facts["model_path"]) if facts["model_path"] else None, facts["name"], card, Path(facts["run_dir"]) if facts["run_dir"] else None,
                   facts["manifest"], Declared(**facts["declared"]))

    def as_dict(self) -> dict:
        card = {f.name: (str(v) if isinstance(v, Path) else v) for f in fields(Card) if (v := getattr(self.card, f.name))
                is not None}
        declared = {k: (str(v) if isinstance(v, Path) else v) for k, v in self.declared.present().items()}
        return {"model_path": str(self.model_path) if self.model_path else None, "name": self.name, "card": card,
                "run_dir": str(self.run_dir) if self.run_dir else None, "manifest": self.manifest,
                "declared": declared}

    # ------------------------------------------------------------ facts

    @property
    def architecture(self) -> str | None:
        return self.manifest.get("architecture")

    @property
    def task(self) -> str | None:
        return self.card.task or self.manifest.get("task")

    @property
    def labels(self) -> list[str] | None:
        """Class names of the first classification output, when known."""
        return self.card.labels or self.manifest.get("class_names") or None

    def task_for(self, output: str, activation: str | None = None) -> str | None:
        """Declared for this output, else for the model, else what its last layer says (softmax and
        sigmoid score classes); None when nothing says, and the labels or values decide."""
        declared = self.card.task_for(output) or self.task
        if declared:
            return declared
        return "classification" if activation in ("softmax", "sigmoid", "log_softmax") else None

    def check_outputs(self, outputs: list[tuple[str, str, int | None]]) -> None:
        """Against the model's (name, kind, classes) outputs: the card names only outputs the model has, and
        the class names (card, flags or run) number the classes of the first classification output."""
        names = [name for name, _, _ in outputs]
        unknown = sorted(set(self.card.output_tasks) - set(names))
        if unknown:
            raise UsageError(f"model card {self.card.path or ''}: [outputs.{unknown[0]}] is not an output of this "
                             f"model; its outputs: {', '.join(names)}")
        first = next(((name, classes) for name, kind, classes in outputs if kind == "classification"), None)
        labels = self.labels
        if first and labels and first[1] and len(labels) != first[1]:
            raise UsageError(f"{len(labels)} labels were given but output {first[0]!r} has {first[1]} classes",
                             hint="pass one label per class, in output order")

    @property
    def model_sha256(self) -> str:
        return self.manifest["model"]["sha256"] if self.manifest else sha256_file(self.model_path)

    @property
    def default_exports(self) -> Path:
        return (self.run_dir or self.model_path.parent) / EXPORTS  # the exports/ beside a .keras file

    @property
    def recorded(self) -> dict | None:
        """The preprocessing training recorded (with the range of the inputs it fitted to)."""
        return (self.manifest.get("dataset") or {}).get("preprocessing")

    @property
    def heldout(self) -> tuple[Path | None, bool]:
        """Held-out samples and whether they are already model inputs (the run's own split is)."""
        if self.declared.data:
            return Path(self.declared.data), False
        if self.card.heldout:
            return self.card.heldout, False
        if self.manifest.get("heldout"):
            return self.run_dir / self.manifest["heldout"]["file"], True
        return None, False

    @property
    def calibration(self) -> tuple[Path | None, bool]:
        """Representative samples for int8 and whether they are already model inputs."""
        if self.declared.calibration:
            return Path(self.declared.calibration), False
        if self.manifest.get("calibration"):
            return self.run_dir / self.manifest["calibration"]["file"], True
        if self.card.calibration:
            return self.card.calibration, False
        return None, False

    @property
    def calibration_sha256(self) -> str | None:
        """The recorded hash of the run's own calibration set (None for a user's file)."""
        path, ready = self.calibration
        return (self.manifest.get("calibration") or {}).get("sha256") if ready else None

    def input_range(self) -> list[float] | None:
        """The range of the inputs the model was fitted to: recorded at training, else its calibration set."""
        recorded = (self.recorded or {}).get("input_range")
        if recorded:
            return recorded
        path, ready = self.calibration
        if ready and path is not None:
            with data_lib.Npz(path, "calibration file") as archive:
                x = archive.read("x") if "x" in archive else None
            if x is not None and x.dtype.kind == "f":
                return data_lib.value_range(x)
        return None

    def input_files(self) -> list[Path]:
        """Every file this subject reads: no command may write over one of them."""
        files = [self.model_path, self.card.path, self.heldout[0], self.calibration[0], self.card.train]
        if self.run_dir is not None:
            files.append(self.run_dir / MANIFEST)
        labels = self.declared.labels
        return [Path(f) for f in (*files, labels) if f is not None]

    # ------------------------------------------------------------ samples

    def decide(self, x_dtype, facts: dict) -> dict:
        """The one preprocessing decision for raw data of ``x_dtype`` fed to this model, with its reason."""
        return decide(x_dtype, facts, self.card.preprocessing, self.recorded)

    def read(self, path: str | Path, specs: list, outputs: list[str], count: int | None, what: str,
             facts: dict | None = None, classes: dict | None = None) -> tuple[dict, dict]:
        """Raw inputs by input name and normalised labels by output name, from an ``.npz``.

        Labels are refused as training refuses them: NaN, fractions or negatives for a classification
        output, and (when ``classes`` gives an output's class count) a class the output does not have."""
        raw, labels = data_lib.read_named(Path(path), [s.name for s in specs], outputs, count, what)
        activations = dict(zip(outputs, (facts or {}).get("output_activations") or [], strict=False))
        normalised = {}
        for name, y in labels.items():
            task = self.task_for(name, activations.get(name))
            normalised[name] = data_lib.normalise_labels(y, f"{path}: labels for {name!r}", task,
                                                         (classes or {}).get(name))
        return raw, normalised

    def to_model(self, raw: dict, specs: list, facts: dict, what: str, say=print,
                 check_range: bool = True) -> tuple[dict, dict | None]:
        """Raw samples (by input name) → model inputs: decided, printed, applied, range-checked, fitted."""
        for spec in specs:  # the shape first: a wrong shape is the clearer message than the range it then has
            data_lib.fit_to_input(raw[spec.name][:1], tuple(spec.shape[1:]), f"{what} {spec.name}", dtype=spec.dtype)
        floats = [raw[s.name] for s in specs if not _integer(s.dtype)]
        decision = self.decide(floats[0].dtype, facts) if floats else None
        if decision is not None:
            say(f"input preprocessing ({what}): {decision['reason']}")
        reference = self.input_range() if check_range else None
        arrays = {}
        for spec in specs:
            x = raw[spec.name]
            if not _integer(spec.dtype) and decision is not None:
                x = data_lib.apply_preprocessing(x, decision)
                data_lib.check_range(x, reference, f"{what} input {spec.name!r} after preprocessing",
                                     "the training inputs")
            arrays[spec.name] = data_lib.fit_to_input(x, tuple(spec.shape[1:]), f"{what} {spec.name}",
                                                      dtype=spec.dtype)
        return arrays, decision

    def score(self, predictions: np.ndarray, labels: np.ndarray | None, task: str | None = None) -> dict:
        """The model's test metrics on labelled samples (accuracy, or MAE and RMSE)."""
        return task_metrics(task or self.task or "classification", predictions, labels)


# ---------------------------------------------------------------- shared by training (no model file yet)

def decide(x_dtype, facts: dict, declared: dict | None = None, recorded: dict | None = None,
           natural_scale: float | None = None) -> dict:
    """How raw values become model input (data.decide_preprocessing), with the natural scale of the raw
    dtype when the source does not name one: uint8 pixels × 1/255, anything else as given."""
    if natural_scale is None:
        natural_scale = 1 / 255 if np.dtype(x_dtype) == np.uint8 else 1.0
    return data_lib.decide_preprocessing(x_dtype, natural_scale, facts, declared, recorded)


def model_input(x: np.ndarray, decision: dict | None, shape: tuple, dtype: str, what: str) -> np.ndarray:
    """One raw array → one model input: scaled (floats only, never token ids) and fitted to its shape."""
    if decision is not None and not _integer(dtype):
        x = data_lib.apply_preprocessing(x, decision)
    return data_lib.fit_to_input(x, tuple(shape), what, dtype=dtype)


def _integer(dtype: str) -> bool:
    return str(dtype).startswith(("int", "uint"))


_CARD_PATHS = {"heldout", "calibration", "train", "path"}


def _card(declared: Declared, model_path: Path | None) -> Card:
    """The card (``--card``, or ``MODEL.card.toml`` beside a foreign model) with the flags on top."""
    card_path = declared.card or (find_card(model_path) if model_path is not None else None)
    return with_flags(load_card(card_path) if card_path else None, declared.task, declared.labels,
                      declared.input_scale, declared.input_offset)


def _names_model(path: Path) -> bool:
    """True when the folder's manifest names this file as its model."""
    from .core.files import read_json

    try:
        manifest = read_json(path.parent / MANIFEST, "training manifest")
    except Exception:  # not a readable manifest: the file is a model on its own
        return False
    return isinstance(manifest, dict) and (manifest.get("model") or {}).get("file") == path.name


__all__ = ["Declared", "Subject", "decide", "model_input"]
