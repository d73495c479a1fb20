"""``edgefarm costs``: the per-device-class times that ``--partition cost`` measured."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from harness.cli.render import console, costs_table, out

if TYPE_CHECKING:
    from harness.byoc.calibration import CostStore


def register(app: typer.Typer) -> None:
    costs_app = typer.Typer(
        help="Per-device-class costs that --partition cost measured (calibration).",
        no_args_is_help=True,
    )
    costs_app.command("list")(costs_list)
    costs_app.command("forget")(costs_forget)
    app.add_typer(costs_app, name="costs")


def _cost_store(farm: bool) -> CostStore:
    from harness.byoc.calibration import CostStore

    if farm:
        from harness.db import make_engine

        return CostStore(make_engine())
    return CostStore.local()


FarmFlag = Annotated[
    bool,
    typer.Option(
        "--farm", help="The farm's database (EDGEFARM_DATABASE_URL), not edgefarm bench's store."
    ),
]
DeviceClassOption = Annotated[
    str | None, typer.Option("--device-class", help="Only this device class.")
]


def costs_list(device_class: DeviceClassOption = None, farm: FarmFlag = False) -> None:
    """Stored times: per device class, where they ran (cpu or the accelerator's settings)."""
    out.print(costs_table(_cost_store(farm).rows(device_class)))


def costs_forget(device_class: DeviceClassOption = None, farm: FarmFlag = False) -> None:
    """Delete stored times; the next cost-guided run measures again."""
    count = _cost_store(farm).forget(device_class)
    console.print(f"forgot {count} stored time(s)", highlight=False)
