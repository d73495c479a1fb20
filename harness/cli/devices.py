"""``edgefarm devices``: open each device here and report its facts, health and state."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.cli.render import console, devices_table, out
from harness.errors import EdgefarmError

log = logging.getLogger(__name__)


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
    rows: list[dict[str, Any]] = []
    with console.status("reading devices", spinner="dots"):
        for address in addresses:
            row: dict[str, Any] = {"id": address}
            try:
                dev = open_device(address)
            except EdgefarmError as exc:
                row["health"] = {"ok": False, "problem": exc.message}
                rows.append(row)
                continue
            try:
                facts = dev.facts()
                row["facts"] = facts.to_dict()
                bundle_hash = None
                try:
                    bundle_hash = runtime_bundle(facts.target).hash
                except EdgefarmError as exc:
                    log.info("no runtime bundle for %s: %s", facts.target, exc)
                row["health"] = device_health(dev, bundle_hash)
                row["state"] = dev.state()
            except EdgefarmError as exc:
                row["health"] = {"ok": False, "problem": exc.message}
            finally:
                dev.close()
            rows.append(row)
    out.print(devices_table(rows))
    if json_path is not None:
        json_path.write_text(json.dumps(rows, indent=2) + "\n")
    raise typer.Exit(0 if all(r.get("health", {}).get("ok") for r in rows) else 1)


def device_health(dev: Any, bundle_hash: str | None) -> dict[str, Any]:
    """Health of any device (see ``Device.health``)."""
    result: dict[str, Any] = dev.health(bundle_hash=bundle_hash)
    return result
