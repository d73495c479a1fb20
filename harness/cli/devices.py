"""``edgefarm devices``: open each device here and report its facts, health and state."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer
from pydantic import TypeAdapter

from harness.cli.render import DeviceListing, console, devices_table, out
from harness.devices.records import unhealthy
from harness.errors import EdgefarmError

log = logging.getLogger(__name__)


_LISTING = TypeAdapter(list[DeviceListing])


def register(app: typer.Typer) -> None:
    app.command()(devices)


def devices(
    device: Annotated[
        list[str] | None,
        typer.Option(
            "--device", "-d", help="Address; repeatable. Default: EDGEFARM_DEVICES + local."
        ),
    ] = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the listing here.")
    ] = None,
) -> None:
    """List devices with their facts, health and thermal state."""
    from harness.config import get_settings
    from harness.devices import open_device
    from harness.devices.deploy import runtime_bundle

    addresses = device or [*get_settings().devices, "local"]
    rows: list[DeviceListing] = []
    with console.status("reading devices", spinner="dots"):
        for address in addresses:
            row: DeviceListing = {"id": address, "health": unhealthy()}
            try:
                dev = open_device(address)
            except EdgefarmError as exc:
                row["health"] = unhealthy(exc.message)
                rows.append(row)
                continue
            try:
                facts = dev.facts()
                row["facts"] = facts
                bundle_hash = None
                try:
                    bundle_hash = runtime_bundle(facts.target).hash
                except EdgefarmError as exc:
                    log.info("no runtime bundle for %s: %s", facts.target, exc)
                row["health"] = dev.health(bundle_hash=bundle_hash)
                row["state"] = dev.state()
            except EdgefarmError as exc:
                row["health"] = unhealthy(exc.message)
            finally:
                dev.close()
            rows.append(row)
    out.print(devices_table(rows))
    if json_path is not None:
        json_path.write_bytes(_LISTING.dump_json(rows, indent=2) + b"\n")
    raise typer.Exit(0 if all(r["health"]["ok"] for r in rows) else 1)
