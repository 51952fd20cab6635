"""The command line: ``group`` (the click group), ``commands`` (one function each), ``main`` (exit codes)."""

from .group import cli
from .main import main

__all__ = ["cli", "main"]
