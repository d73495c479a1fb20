"""``edgefarm emulator``: run an emulated phone (an ADB daemon) in the foreground."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from harness.cli.options import global_options
from harness.cli.render import console
from harness.errors import EdgefarmError


def register(app: typer.Typer) -> None:
    emulator_app = typer.Typer(
        help="The emulated phone: an ADB daemon standing in for a phone.", no_args_is_help=True
    )
    emulator_app.command("start")(emulator_start)
    app.add_typer(emulator_app, name="emulator")


def emulator_start(
    port: Annotated[int, typer.Option(help="TCP port (0: any free port).")] = 5555,
    profile: Annotated[
        str,
        typer.Option(
            help="dimensity-9200, snapdragon-8-gen-2, pixel-3a (NAME-arm64: with --isa arm64)."
        ),
    ] = "dimensity-9200",
    root: Annotated[Path | None, typer.Option(help="Sandbox directory (default: temporary).")] = (
        None
    ),
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    refuse_new_keys: Annotated[
        bool, typer.Option(help="Refuse keys not authorized before (like a locked phone).")
    ] = False,
    isolation: Annotated[
        str,
        typer.Option(
            help="namespace: confine commands (refuse to start where the kernel cannot); "
            "auto: confine where possible, else rewrite; rewrite: NOT confined."
        ),
    ] = "namespace",
    isa: Annotated[
        str | None,
        typer.Option(
            help="What its programs are built for: host (this machine's binaries) or arm64 "
            "(aarch64 binaries, run under qemu-user; needs Debian's qemu-user and "
            "g++-aarch64-linux-gnu). Default: the profile's."
        ),
    ] = None,
) -> None:
    """Run one emulated phone in the foreground until Ctrl-C."""
    from harness.devices.emulator import get_profile, serve
    from harness.devices.emulator.isa import ISAS

    try:
        get_profile(profile)
    except KeyError as exc:
        console.print(f"[red]error:[/] {exc.args[0]}", highlight=False)
        raise typer.Exit(2) from None
    if isa is not None and isa not in ISAS:
        console.print(f"[red]error:[/] --isa is {' or '.join(ISAS)}, not {isa!r}", highlight=False)
        raise typer.Exit(2)
    if not global_options.debug:
        logging.getLogger("harness.devices.emulator").setLevel(logging.INFO)
        logging.getLogger().setLevel(logging.INFO)
    if isolation not in ("namespace", "auto", "rewrite"):
        console.print(
            f"[red]error:[/] --isolation is namespace, auto or rewrite, not {isolation!r}",
            highlight=False,
        )
        raise typer.Exit(2)
    try:
        serve(
            port=port,
            profile=profile,
            root=root,
            accept_new_keys=not refuse_new_keys,
            host=host,
            isolation=isolation,  # type: ignore[arg-type]
            isa=isa,  # type: ignore[arg-type]
        )
    except EdgefarmError as exc:
        console.print(f"[red]error:[/] {exc.message}", highlight=False)
        raise typer.Exit(1) from None
