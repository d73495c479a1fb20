"""The ``edgefarm`` command (typer + rich). Entry point: :func:`main`.

One module per command group, each adding its commands in its ``register(app)``, called below
in the order ``edgefarm --help`` lists them; what they print is in :mod:`harness.cli.render`.
A command imports what is heavy (tvm, onnxruntime, the database, the farm's client) inside its
body, so ``edgefarm --help`` stays fast.

Logging is configured here and only here. No traceback reaches the user unless ``--debug``.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from harness import __version__
from harness.cli import (
    ab,
    alerts,
    bench,
    costs,
    devices,
    emulator,
    examples,
    farm,
    suite,
    tokens,
    tune,
    worker,
)
from harness.cli.options import global_options
from harness.cli.render import console, out
from harness.errors import EdgefarmError

__all__ = ["app", "main"]


def _setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def _print_version(value: bool) -> None:
    # Eager: runs while the options are parsed, before click asks for a command, so that
    # `edgefarm --version` alone prints the version instead of "Missing command".
    if value:
        out.print(f"edgefarm {__version__}")
        raise typer.Exit(0)


def _global_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show logs and tracebacks.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print the version.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    global_options.debug = debug
    _setup_logging(debug)


def make_app() -> typer.Typer:
    """The ``edgefarm`` app with every command group registered."""
    app = typer.Typer(
        name="edgefarm",
        help="Benchmark ML models on phones (and this machine) with TVM and onnxruntime.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    app.callback()(_global_options)
    for group in (bench, tune, ab, examples, farm, devices, worker, emulator, tokens, costs):
        group.register(app)
    for group in (suite, alerts):  # the nightly regression loop
        group.register(app)
    return app


app = make_app()


def main() -> None:
    """Console-script entry point: no raw traceback reaches the user."""
    try:
        app()
    except EdgefarmError as exc:
        console.print(f"[red]error:[/] {exc.message}", highlight=False)
        if global_options.debug:
            console.print_exception()
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # our defect; say so in one line
        if global_options.debug:
            console.print_exception()
        console.print(
            f"[red]internal error[/] ({type(exc).__name__}): {exc} — rerun with --debug for the "
            "traceback and report it",
            highlight=False,
        )
        sys.exit(70)
