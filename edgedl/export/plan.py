"""What an export is asked to make: (format, precision) targets and the options that shape them."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..core.errors import UsageError

FORMATS = ("tflite", "onnx")
QUANTIZE_CHOICES = ("none", "fp16", "dynamic", "int8")
PRECISION_OF = {"none": "fp32", "fp32": "fp32", "float32": "fp32", "fp16": "fp16", "float16": "fp16",
                "dynamic": "dynamic", "int8": "int8"}
SUPPORTED = {"tflite": ("fp32", "fp16", "dynamic", "int8"), "onnx": ("fp32", "int8")}
IO_TYPES = ("float", "int8", "uint8")
ONNX_QUANT_RECIPES = ("auto", "static", "dynamic")
DEFAULT_OPSET = 17
OPSET_RANGE = (13, 18)
MIN_CALIBRATION = 8


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


@dataclass
class Target:
    format: str
    precision: str

    @property
    def label(self) -> str:
        return f"{self.format} {self.precision}"


def plan_targets(formats: list[str], quantizations: list[str]) -> tuple[list[Target], list[str]]:
    """All requested (format, precision) pairs that exist, and a note for each that does not."""
    targets, skipped = _expand(formats, quantizations)
    if not targets:
        raise UsageError("nothing to export: " + "; ".join(skipped))
    return targets, skipped


def _expand(formats: list[str], quantizations: list[str]) -> tuple[list[Target], list[str]]:
    for fmt in formats:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    for quant in quantizations:
        if quant not in PRECISION_OF:
            raise UsageError(f"unknown quantization {quant!r}; choose from {', '.join(QUANTIZE_CHOICES)}")
    targets, skipped = [], []
    for fmt in formats:
        for precision in dict.fromkeys(PRECISION_OF[q] for q in quantizations):
            if precision in SUPPORTED[fmt]:
                targets.append(Target(fmt, precision))
            else:
                skipped.append(f"{fmt} has no {precision} mode (closest: {fmt} int8, or tflite {precision})")
    return targets, skipped


def parse_targets(specs: list[str]) -> list[Target]:
    """Recipe targets such as ``tflite:int8``."""
    targets = []
    for spec in specs:
        fmt, _, quant = spec.partition(":")
        found, skipped = _expand([fmt], [quant or "none"])
        if skipped:
            raise UsageError(f"target {spec!r}: {skipped[0]}")
        targets.extend(found)
    return targets
