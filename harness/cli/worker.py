"""``edgefarm worker``: hands over to the worker program (``python -m workers worker``).

harness imports no celery: the worker is its own program (workers/cli.py), exec'd with the
arguments as given, so its options are defined in one place.
"""

from __future__ import annotations

import os
import sys

import typer


def register(app: typer.Typer) -> None:
    app.command(
        context_settings={
            "allow_extra_args": True,
            "ignore_unknown_options": True,
            "help_option_names": [],
        },
        add_help_option=False,
    )(worker)


def worker(ctx: typer.Context) -> None:
    """Run a farm worker: register this host's phones, consume their queues (and compile).
    Options: see `edgefarm worker --help`."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "workers", "worker", *ctx.args])
