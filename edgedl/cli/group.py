"""The ``edgedl`` click group and the option parsers its commands share.

Heavy imports (TensorFlow, runtimes) happen inside the commands, so ``edgedl --help`` stays fast.
"""

from __future__ import annotations

import os

import click

from .. import __version__
from ..core.env import quiet_tensorflow

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def csv_list(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def int_list(value: str | None, option: str, minimum: int = 0) -> list[int]:
    try:
        numbers = [int(item) for item in csv_list(value)]
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated whole numbers, got {value!r}",
                                 param_hint=option) from exc
    if any(n < minimum for n in numbers):
        raise click.BadParameter(f"every value must be at least {minimum}, got {value!r}", param_hint=option)
    return numbers


def finite(ctx, param, value):  # noqa: ARG001 - click callback signature
    """A float option must be a real number: inf and nan make no sense as settings."""
    import math

    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"must be a finite number, got {value}")
    return value


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="edgedl")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own logs and warnings.")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
def cli(verbose: bool, debug: bool) -> None:
    """Train Keras models, export them to TFLite and ONNX, prove the exports are faithful,
    benchmark them the way a device runs them, and package them for Android and Raspberry Pi.

    \b
    Typical flow:
      edgedl train --model cnn --out runs/cnn
      edgedl export runs/cnn --format tflite,onnx --quantize none,int8
      edgedl validate runs/cnn runs/cnn/exports
      edgedl bench runs/cnn/exports
      edgedl bundle runs/cnn/exports/cnn_int8.tflite --out bundles/cnn
    or all of it, with a report:
      edgedl pipeline
    """
    # --debug is read by main() before click runs: it decides how errors are shown.
    if verbose:
        os.environ["EDGEDL_VERBOSE"] = "1"
    quiet_tensorflow(verbose)
