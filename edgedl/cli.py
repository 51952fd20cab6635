"""The ``edgedl`` command line: parse, call the library, print.

Heavy imports (TensorFlow, runtimes) happen inside the commands, so ``edgedl --help`` stays fast.
Library errors (EdgedlError) become one line on stderr and an exit code here, and only here.
"""

from __future__ import annotations

import os
import signal
import sys

import click

from . import __version__
from ._env import quiet_tensorflow
from .errors import EdgedlError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _csv(value: str | None) -> list[str]:
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _ints(value: str | None, option: str) -> list[int]:
    try:
        return [int(item) for item in _csv(value)]
    except ValueError as exc:
        raise click.BadParameter(f"expected comma-separated whole numbers, got {value!r}",
                                 param_hint=option) from exc


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="edgedl")
@click.option("--verbose", is_flag=True, help="Show TensorFlow's own logs and warnings.")
@click.option("--debug", is_flag=True, help="Show full tracebacks for errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, debug: bool) -> None:
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
    ctx.obj = {"debug": debug}
    if verbose:
        os.environ["EDGEDL_VERBOSE"] = "1"
    quiet_tensorflow(verbose)


from . import cli_commands  # noqa: E402,F401  (registers the commands on `cli`)


def _terminate(signum, frame):  # noqa: ARG001
    # Turn SIGTERM into an exception so `finally` blocks remove temporary files.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> None:
    # Progress lines (Keras' epochs, export steps) must show up as they happen in CI logs and pipes.
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    signal.signal(signal.SIGTERM, _terminate)
    # Explicitly, because a process started from a background shell job inherits SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        code = cli.main(args=argv, prog_name="edgedl", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("edgedl: interrupted; no partial files were kept", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgedlError as exc:
        if debug:
            raise
        click.echo(f"edgedl: error: {exc.one_line()}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("edgedl: interrupted; no partial files were kept", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
