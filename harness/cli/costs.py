"""``edgefarm costs``: the per-device-class times that ``--partition cost`` measured."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from harness.cli.render import console, costs_table, out

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from sqlalchemy.orm import Session


def register(app: typer.Typer) -> None:
    costs_app = typer.Typer(
        help="Per-device-class costs that --partition cost measured (calibration).",
        no_args_is_help=True,
    )
    costs_app.command("list")(costs_list)
    costs_app.command("forget")(costs_forget)
    app.add_typer(costs_app, name="costs")


def _cost_store(farm: bool) -> AbstractContextManager[Session]:
    """A session on the cost store, committed on success: the farm's database
    (EDGEFARM_DATABASE_URL), or edgefarm bench's (harness.db.costs.local_store)."""
    from harness.db import make_engine, make_session_factory, scoped, session_scope
    from harness.db.costs import local_store

    if farm:
        return session_scope(make_session_factory(make_engine()))
    return scoped(local_store())()


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
    from harness.db.costs import list_costs

    with _cost_store(farm) as session:
        rows = list_costs(device_class, session=session)
    out.print(costs_table(rows))


def costs_forget(device_class: DeviceClassOption = None, farm: FarmFlag = False) -> None:
    """Delete stored times; the next cost-guided run measures again."""
    from harness.db.costs import forget_costs

    with _cost_store(farm) as session:
        count = forget_costs(device_class, session=session)
    console.print(f"forgot {count} stored time(s)", highlight=False)
