"""The ``edgedl`` click group and the option parsers its commands share.

Heavy imports (TensorFlow, runtimes) happen inside the commands, so ``edgedl --help`` stays fast.
"""

from __future__ import annotations

import os

import click

from .. import __version__
from ..core.env import check_environment, quiet_tensorflow

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


def setting_option(setting, *decls, default=None, show_default: bool = False, help: str | None = None):
    """A click option made from one setting of core/settings.py: its name, type, range and help, so
    the CLI and recipes check the same range with the same words."""
    from ..core.errors import UsageError

    def check(ctx, param, value):  # noqa: ARG001 - click callback signature
        try:
            return None if value is None else setting.check(value)
        except UsageError as exc:
            raise click.BadParameter(exc.one_line()) from exc

    kind = click.Choice(setting.choices) if setting.kind == "choice" else (int if setting.kind == "int" else float)
    bounds = f" ({setting.bounds()})" if setting.kind != "choice" else ""
    return click.option(f"--{setting.name.replace('_', '-')}", *decls, type=kind, default=default, callback=check,
                        show_default=show_default, help=(help or setting.help) + bounds)


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
    check_environment()  # EDGEDL_* limits: a bad one is a usage error before any work


def _tolerances(ctx, param, values) -> dict:  # noqa: ARG001 - click callback signature
    """``--tolerance KEY=VALUE`` (repeatable) → {KEY: float}; the keys are checked by validate."""
    import math

    limits = {}
    for value in values:
        key, sep, number = value.partition("=")
        try:
            limits[key.strip()] = float(number)
        except ValueError:
            sep = ""
        if not sep or not key.strip() or not math.isfinite(limits.get(key.strip(), 0.0)):
            raise click.BadParameter(f"expected KEY=NUMBER like max_mean_error_steps=3, got {value!r}")
    from ..core.errors import UsageError
    from ..core.settings import TOLERANCES, check_table

    try:  # a typo or a nonsense gate is refused here, before any work (core/settings.py)
        return check_table(limits, TOLERANCES, "--tolerance")
    except UsageError as exc:
        raise click.BadParameter(exc.one_line()) from exc


tolerance_option = click.option(
    "--tolerance", "tolerances", multiple=True, callback=_tolerances, metavar="KEY=VALUE",
    help="Override any parity limit, e.g. rtol=1e-3, min_cosine=0.999, max_mean_error_steps=3, "
         "max_rel_error=0.02 (repeatable; the error for an unknown key lists them all).")


def preprocessing_options(function):
    """How raw data becomes model input: declared, for a model edgedl did not train."""
    function = click.option("--input-offset", type=float, default=None, callback=finite,
                            help="Model input = raw × scale + offset: the offset. [default: from the card or run]")(function)
    return click.option("--input-scale", type=float, default=None, callback=finite,
                        help="Model input = raw × scale + offset: the scale (e.g. 0.00392156862745098 for pixels "
                             "0..255 → [0, 1]). [default: from the card or run, else decided and printed]")(function)


def card_options(function):
    """What a training run would record, declared for a model edgedl did not train (README: Your own model)."""
    function = preprocessing_options(function)
    function = click.option("--labels", "labels_file", type=click.Path(dir_okay=False), default=None,
                            help="Class names, one per line, in output order.")(function)
    function = click.option("--task", type=click.Choice(["classification", "regression"]), default=None,
                            help="How outputs are judged. [default: from the card or run, else read from "
                                 "the labels and the output layer]")(function)
    return click.option("--card", type=click.Path(dir_okay=False), default=None,
                        help="A model card (TOML): task, labels, input scaling, held-out and calibration data. "
                             "[default: MODEL.card.toml beside a .keras file, if present]")(function)
