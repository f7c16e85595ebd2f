"""One way for every subcommand to stop on bad input: a one-line message, exit status 2."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

USAGE_ERROR = 2
"""Exit status for bad usage or bad input (unknown names, unreadable files, ...)."""


def fail(message: str, status: int = USAGE_ERROR) -> NoReturn:
    """Print ``pnyx: error: message`` on stderr and exit with ``status``."""
    click.echo(f"pnyx: error: {message}", err=True)
    sys.exit(status)
