"""``edgedl`` as a program: the one place where errors become exit codes.

Library errors (EdgedlError) become one line on stderr and their exit code; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import signal
import sys

import click

from ..core.errors import EdgedlError
from . import commands  # noqa: F401  (registers the commands on the group)
from .group import cli


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
