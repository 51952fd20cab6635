"""Every number or choice a user can type, defined once: its name, type, range by meaning, and help.

Recipes check their tables with it, the CLI builds its click options from it (cli/group.py
``setting_option``), and validate range-checks every tolerance with it, whether it came from
``--tolerance KEY=VALUE`` or a recipe's ``[tolerances]``. A fraction is in [0, 1], a step count or a
limit is never negative, and nothing is allowed up to 1e308: a gate that cannot fail is not a gate.
Polygraphy's ``tools/args`` groups are the idea: an option family registered once.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass

from .errors import UsageError

MAX_SEED = 2**32 - 1  # numpy and Keras seeds are unsigned 32-bit
HUGE = 1e9  # above this, a limit is no limit: refused rather than silently never failing


@dataclass(frozen=True)
class Setting:
    name: str
    kind: str  # "int", "float" or "choice"
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the low end itself is refused (a learning rate of 0)
    choices: tuple = ()

    def check(self, value, where: str = ""):
        """``value`` when it is a valid ``name``; else a one-line UsageError naming both."""
        prefix = f"{where}: " if where else ""
        if self.kind == "choice":
            if value not in self.choices:
                raise UsageError(f"{prefix}{self.name} must be one of {', '.join(map(str, self.choices))}, "
                                 f"got {value!r}")
            return value
        whole = self.kind == "int"
        if isinstance(value, bool) or not isinstance(value, int if whole else (int, float)) or (
                not whole and not math.isfinite(value)):
            raise UsageError(f"{prefix}{self.name} must be a {'whole' if whole else 'finite'} number "
                             f"{self.bounds()}, got {value!r}")
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        if below or (self.high is not None and value > self.high):
            raise UsageError(f"{prefix}{self.name} must be {self.bounds()}, got {value!r}")
        return value if whole else float(value)

    def bounds(self) -> str:
        low = "" if self.low is None else f"{'>' if self.low_open else '≥'} {_number(self.low)}"
        if self.high is None:
            return low
        if self.low is not None and not self.low_open:
            return f"in [{_number(self.low)}, {_number(self.high)}]"
        return f"{low} and ≤ {_number(self.high)}".strip()


def _number(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() and abs(value) < 1e15 else f"{value:g}"


def _int(name, help, low=None, high=None) -> Setting:
    return Setting(name, "int", help, low, high)


def _float(name, help, low=0.0, high=HUGE, low_open=False) -> Setting:
    return Setting(name, "float", help, low, high, low_open)


def _fraction(name, help) -> Setting:
    return Setting(name, "float", help, 0.0, 1.0)


AUGMENTATIONS = ("none", "shift", "affine")

TRAIN = {s.name: s for s in (
    _int("epochs", "Maximum epochs (early stopping may end sooner).", 1, 100_000),
    _int("batch_size", "Per-replica batch size.", 1, 2**20),
    _float("learning_rate", "Peak learning rate.", 0.0, 10.0, low_open=True),
    Setting("augment", "choice", "Input-pipeline augmentation (never inside the exported model).",
            choices=AUGMENTATIONS),
    Setting("label_smoothing", "float", "Share of each class label spread evenly over all classes (0: plain "
            "cross-entropy; classification only).", 0.0, 0.5),
    _int("patience", "Epochs without a better val_loss before training stops.", 0, 100_000),
    _float("clipnorm", "Clip each gradient to this norm.", 0.0, HUGE, low_open=True),
    _int("seed", "Seed for split, init, shuffling, augmentation.", 0, MAX_SEED),
    _int("qat_epochs", "Epochs of quantization-aware fine-tuning.", 0, 10_000),
    _int("calibration_samples", "Training samples saved for int8 calibration.", 1, 10_000_000),
)}

GATES = {s.name: s for s in (
    _fraction("max_accuracy_drop", "Largest accuracy drop allowed (0..1; 0.005 = 0.5 pp)."),
    _fraction("min_agreement", "Least top-1 agreement with the original (0..1)."),
    _float("max_latency_ms", "Largest p50 latency allowed, in milliseconds."),
    _float("max_size_kb", "Largest artifact size allowed, in KB."),
)}

TOLERANCES = {s.name: s for s in (
    _float("atol", "max |Δ| allowed on top of rtol × the output's magnitude"),
    _float("rtol", "max |Δ| allowed per unit of the output's magnitude"),
    _fraction("min_cosine", "least cosine similarity between the outputs (0..1)"),
    _fraction("min_agreement", "least top-1 agreement of a classification output (0..1)"),
    _fraction("max_accuracy_drop", "largest accuracy drop of a classification output (0..1; 0.005 = 0.5 pp)"),
    _float("max_mean_error_steps", "largest mean error of a quantized output, in quantization steps", 0.0, 65535.0),
    _fraction("max_rel_error", "largest |Δ| of a regression output, as a share of the output's range (0..1)"),
    _float("max_mae_increase", "largest relative increase of a regression output's mean absolute error", 0.0, 1000.0),
)}


# A recipe's [devices] table (deploy/fleet.py): how each device measures.
DEVICES = {s.name: s for s in (
    _int("runs", "Timed runs per measurement on each device.", 1, 1_000_000),
    _int("warmup", "Untimed runs first, on each device.", 0, 1_000_000),
    _int("samples", "Held-out samples compared with x86 on each device.", 0, 1_000_000),
)}


def closest(name: str, known) -> str:
    """' (did you mean X?)' for a mistyped name, or ''."""
    match = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def check_known(names, known, what: str) -> None:
    """Refuse the first unknown name, suggesting the closest known one and listing them all."""
    for name in names:
        if name not in known:
            raise UsageError(f"{what}: unknown {name!r}{closest(name, known)}; known: {', '.join(sorted(known))}")


def check_table(values: dict, table: dict, what: str) -> dict:
    """Each value of ``values`` checked by its setting in ``table``; unknown names refused. None stays None."""
    check_known(values, table, what)
    return {k: (None if v is None else table[k].check(v, what)) for k, v in values.items()}
