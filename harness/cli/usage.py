"""A command's own arguments found wrong: one line naming what is wrong, and exit status 2."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import typer

from harness.cli.render import console
from harness.errors import JobError
from harness.measure.protocol import ProtocolLimitError


@contextmanager
def usage_errors() -> Iterator[None]:
    """Inside: reading the command line. A JobError (a bad spec, option or model file) or a
    ProtocolLimitError (a measurement setting out of bounds, named as its ``--option``) is
    printed as one line and ends the command with status 2."""
    try:
        yield
    except JobError as exc:
        console.print(f"[red]error:[/] {exc.message}", highlight=False)
        raise typer.Exit(2) from None
    except ProtocolLimitError as exc:
        console.print(f"[red]error:[/] --{exc.message.replace('_', '-')}", highlight=False)
        raise typer.Exit(2) from None
