"""What an export is asked to make: (format, precision) targets and the options that shape them."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import UsageError
from ..core.layout import UNROLLED_TAG
from ..core.settings import closest
from .ranges import METHODS

FORMATS = ("tflite", "onnx")
QUANTIZE_CHOICES = ("none", "fp16", "dynamic", "int8", "int16x8")
PRECISION_OF = {"none": "fp32", "fp32": "fp32", "float32": "fp32", "fp16": "fp16", "float16": "fp16",
                "dynamic": "dynamic", "int8": "int8", "int16x8": "int16x8", "mixed": "mixed"}
SUPPORTED = {"tflite": ("fp32", "fp16", "dynamic", "int8", "int16x8", "mixed"), "onnx": ("fp32", "int8", "mixed")}
# Precisions that need representative (calibration) data
CALIBRATED = ("int8", "int16x8", "mixed")
# How int8 sets activation ranges (TFLite int8 and mixed, ONNX static); auto builds each and keeps the most faithful
CALIBRATION_METHODS = (*METHODS, "auto")
IO_TYPES = ("float", "int8", "uint8")
ONNX_QUANT_RECIPES = ("auto", "static", "dynamic")
DEFAULT_OPSET = 17
OPSET_RANGE = (13, 18)
MIN_CALIBRATION = 8
UNROLLABLE = ("fp32", "fp16", "dynamic", "int8")


@dataclass
class ExportOptions:
    io: str = "int8"
    calibration: str | None = None
    calibration_samples: int | None = None
    input_shapes: dict = field(default_factory=dict)
    seq_len: int | None = None
    opset: int = DEFAULT_OPSET
    onnx_quant: str = "auto"
    allow_flex: bool = False
    unsafe: bool = False
    name: str | None = None  # artifact name stem (sanitized); default: the run's or the file's name
    # How a user's raw --calibration data becomes model input (else: the model card, or decided)
    card: str | None = None
    input_scale: float | None = None
    input_offset: float | None = None
    target: str | None = None  # "mcu" or a board: int8 TFLite must then use TFLite Micro kernels only
    # Keras layers to keep in float in a "mixed" target (int8 elsewhere); "auto" is resolved by a search
    # above export (validate/rescue.py) into such a list before any conversion
    keep_float: list[str] = field(default_factory=list)
    calibration_method: str = "minmax"  # int8 activation ranges: minmax, entropy, percentile, or auto (measured)


@dataclass
class Target:
    format: str
    precision: str
    # A mixed target's own float layers and file-name tag, for a search that converts many candidates
    # in one worker (the export's keep_float applies when these are empty)
    keep_float: tuple[str, ...] | None = None
    tag: str = ""
    facts: dict | None = None  # recorded in the artifact's sidecar (e.g. how keep_float was searched)

    @property
    def label(self) -> str:
        return f"{self.format} {self.precision}{'-' + self.tag if self.tag else ''}"

    def file_name(self, stem: str) -> str:
        from ..core.layout import SUFFIX

        return f"{stem}_{self.precision}{'-' + self.tag if self.tag else ''}{SUFFIX[self.format]}"


def plan_targets(formats: list[str], quantizations: list[str]) -> tuple[list[Target], list[str]]:
    """All requested (format, precision) pairs that exist, and a note for each that does not."""
    targets, skipped = _expand(formats, quantizations)
    if not targets:
        raise UsageError("nothing to export: " + "; ".join(skipped))
    return targets, skipped


def _expand(formats: list[str], quantizations: list[str]) -> tuple[list[Target], list[str]]:
    for fmt in formats:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}{closest(fmt, FORMATS)}; choose from {', '.join(FORMATS)}")
    for quant in quantizations:
        if quant not in PRECISION_OF:
            raise UsageError(f"unknown quantization {quant!r}{closest(quant, QUANTIZE_CHOICES)}; choose from "
                             f"{', '.join(QUANTIZE_CHOICES)}")
    targets, skipped = [], []
    for fmt in formats:
        for precision in dict.fromkeys(PRECISION_OF[q] for q in quantizations):
            if precision in SUPPORTED[fmt]:
                targets.append(Target(fmt, precision))
            else:
                skipped.append(f"{fmt} has no {precision} mode (closest: {fmt} int8, or tflite {precision})")
    return targets, skipped


def with_keep_float(targets: list[Target], keep_float: list[str]) -> list[Target]:
    """With layers to keep in float, the int8 targets become mixed ones (int8 elsewhere)."""
    if not keep_float:
        return targets
    if not any(t.precision in ("int8", "mixed") for t in targets):
        raise UsageError("--keep-float applies to int8 targets", hint="add --quantize int8")
    return list({(t.format, "mixed" if t.precision == "int8" else t.precision): Target(
        t.format, "mixed" if t.precision == "int8" else t.precision) for t in targets}.values())


def parse_targets(specs: list[str]) -> list[Target]:
    """Recipe targets such as ``tflite:int8`` or ``tflite:dynamic:unrolled``."""
    targets = []
    for spec in specs:
        fmt, _, rest = spec.partition(":")
        quant, _, tag = rest.partition(":")
        found, skipped = _expand([fmt], [quant or "none"])
        if skipped:
            raise UsageError(f"target {spec!r}: {skipped[0]}")
        targets.extend(unrolled_targets(found) if tag == UNROLLED_TAG else found)
        if tag and tag != UNROLLED_TAG:
            raise UsageError(f"target {spec!r}: unknown variant {tag!r}{closest(tag, [UNROLLED_TAG])} (the one "
                             f"variant is {UNROLLED_TAG!r})")
    return targets


def unrolled_targets(targets: list[Target]) -> list[Target]:
    """The TFLite targets with their recurrent layers unrolled (``--unroll``)."""
    wrong = [t.label for t in targets if t.format != "tflite" or t.precision not in UNROLLABLE]
    if wrong:
        raise UsageError(f"unrolled recurrent layers are a TFLite {', '.join(UNROLLABLE)} mode, not {', '.join(wrong)}")
    return [Target(t.format, t.precision, tag=UNROLLED_TAG) for t in targets]
