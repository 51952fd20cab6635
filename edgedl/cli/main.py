"""``edgedl`` as a program: the one place where errors become exit codes.

Library errors (EdgedlError) become one line on stderr and their exit code; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import signal
import sys

import click

from ..core.errors import EdgedlError
from . import commands, explore  # noqa: F401  (registers the commands on the group)
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
    except (click.exceptions.Abort, KeyboardInterrupt):
        _interrupted()
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except EdgedlError as exc:
        if debug:
            raise
        _fail(exc.one_line(), exc.exit_code)
    except OSError as exc:  # the machine said no: full disk, permissions, a name too long, a link loop
        if debug:
            raise
        where = f": {exc.filename}" if exc.filename else ""
        _fail(f"{exc.strerror or exc}{where}", 1)
    except MemoryError:
        if debug:
            raise
        _fail("ran out of memory; use fewer samples or a smaller model", 1)
    except Exception as exc:  # a bug in edgedl: one line here, the whole traceback in a file
        if debug:
            raise
        _fail(f"internal error {exc.__class__.__name__}: {' '.join(str(exc).split())[:200]} "
              f"(traceback saved to {_save_traceback()}; please report it, or rerun with --debug)", 1)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    click.echo(f"edgedl: error: {message}", err=True)
    sys.exit(code)


def _interrupted() -> None:
    from ..core.files import remove_in_flight

    left = remove_in_flight()
    if left:
        click.echo(f"edgedl: interrupted; could not remove partial files: {', '.join(map(str, left))}", err=True)
    else:
        click.echo("edgedl: interrupted; no partial files were kept", err=True)
    sys.exit(130)


def _save_traceback() -> str:
    import tempfile
    import traceback

    with tempfile.NamedTemporaryFile("w", prefix="edgedl-crash-", suffix=".txt", delete=False) as handle:
        traceback.print_exc(file=handle)
        return handle.name
