"""Stored per-device-class costs (the ``op_costs`` table) for cost-guided partitioning.

A time is stored under a :class:`CostKey` (the device class, where it ran, the software
version) and a signature (an offload candidate, a boundary probe or a whole model; see
:class:`harness.db.models.OpCost`). The functions take ``*, session: Session`` and never
commit: the farm's worker and ``edgefarm bench`` own their transactions.

``edgefarm bench`` keeps its costs in the embedded farm's database (:func:`local_store`), so
the same Alembic migrations make both stores, and costs measured on this machine's devices by
``edgefarm bench`` and by an embedded farm (``edgefarm up``) are measured once for both.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import Insert, RowMapping, create_engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker
from typing_extensions import TypedDict  # pydantic validates these only on 3.11

from harness.config import get_settings
from harness.db.models import OpCost, utcnow
from harness.db.session import (
    embedded_database_url,
    make_engine,
    make_session_factory,
    session_scope,
)
from harness.errors import HarnessBug

log = logging.getLogger(__name__)

# Rows per INSERT: nine columns each stays far below SQLite's bound on bound parameters.
_CHUNK = 500
_KEY_COLUMNS = ("device_class", "variant", "software", "signature")


@dataclass(frozen=True)
class Measured:
    """One stored time: the median of ``samples`` calls."""

    median_ms: float
    samples: int
    description: str = ""


@dataclass(frozen=True)
class CostKey:
    """Times that are interchangeable: one device class, one place they ran (``cpu/o3``, an
    accelerator with its settings), one TVM and BYOC software version."""

    device_class: str
    variant: str
    software: str


def stored_costs(
    key: CostKey, signatures: Iterable[str], *, session: Session
) -> dict[str, Measured]:
    """The stored times of ``signatures`` under ``key``; missing ones are absent."""
    wanted = sorted(set(signatures))
    found: dict[str, Measured] = {}
    for start in range(0, len(wanted), _CHUNK):
        rows = session.scalars(
            select(OpCost).where(
                OpCost.device_class == key.device_class,
                OpCost.variant == key.variant,
                OpCost.software == key.software,
                OpCost.signature.in_(wanted[start : start + _CHUNK]),
            )
        )
        for row in rows:
            found[row.signature] = Measured(row.median_ms, row.samples, row.description)
    return found


def store_costs(
    key: CostKey, measured: Mapping[str, Measured], *, device: str, session: Session
) -> None:
    """Insert or replace the times of ``measured`` under ``key``, measured on ``device``.
    One upsert per row, so two writers of the same keys never fail on the unique constraint:
    the later one's times stand, and both measured the same thing."""
    now = utcnow()
    rows: list[CostRow] = [
        {
            "device_class": key.device_class,
            "variant": key.variant,
            "software": key.software,
            "signature": signature,
            "median_ms": m.median_ms,
            "samples": m.samples,
            "description": m.description[:256],
            "device": device[:128],
            "measured_at": now,
        }
        for signature, m in measured.items()
    ]
    _insert(session, rows, replace=True)


def list_costs(device_class: str | None = None, *, session: Session) -> list[OpCost]:
    """Stored times (of one device class), by class, variant and signature."""
    query = select(OpCost).order_by(OpCost.device_class, OpCost.variant, OpCost.signature)
    if device_class is not None:
        query = query.where(OpCost.device_class == device_class)
    return list(session.scalars(query))


def forget_costs(device_class: str | None = None, *, session: Session) -> int:
    """Delete stored times (of one device class); the next cost run measures again. Returns
    how many were deleted."""
    query = delete(OpCost)
    if device_class is not None:
        query = query.where(OpCost.device_class == device_class)
    return int(session.execute(query).rowcount)  # type: ignore[attr-defined]


class CostRow(TypedDict):
    """The values of one OpCost row, as inserted."""

    device_class: str
    variant: str
    software: str
    signature: str
    median_ms: float
    samples: int
    description: str
    device: str
    measured_at: datetime


def _insert(session: Session, rows: Sequence[CostRow], *, replace: bool) -> None:
    """INSERT ... ON CONFLICT on the unique key: replace the times, or keep the stored ones."""
    dialect = session.get_bind().dialect.name
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        statement: Insert
        if dialect == "sqlite":
            lite = sqlite.insert(OpCost).values(chunk)
            statement = (
                lite.on_conflict_do_update(
                    index_elements=_KEY_COLUMNS, set_=_replaced(lite.excluded)
                )
                if replace
                else lite.on_conflict_do_nothing(index_elements=_KEY_COLUMNS)
            )
        elif dialect == "postgresql":
            pg = postgresql.insert(OpCost).values(chunk)
            statement = (
                pg.on_conflict_do_update(constraint="uq_op_cost", set_=_replaced(pg.excluded))
                if replace
                else pg.on_conflict_do_nothing(constraint="uq_op_cost")
            )
        else:
            # The farm runs on PostgreSQL or SQLite (DESIGN.md); both have ON CONFLICT.
            raise HarnessBug(f"op_costs: no upsert for the {dialect} database")
        session.execute(statement)


def _replaced(excluded: Any) -> dict[str, object]:
    return {
        name: excluded[name]
        for name in ("median_ms", "samples", "description", "device", "measured_at")
    }


# ------------------------------------------------------------------------------------------
# edgefarm bench's store
# ------------------------------------------------------------------------------------------

LEGACY_FILE = "costs.sqlite"


def local_store() -> sessionmaker[Session]:
    """Sessions on ``edgefarm bench``'s cost store: the embedded farm's database
    (``$EDGEFARM_HOME/edgefarm.db``, not EDGEFARM_DATABASE_URL: a bench on a machine that
    points at a shared farm neither needs that farm nor writes into it), migrated to the
    current schema. The costs of the store that earlier versions kept in
    ``$EDGEFARM_HOME/costs.sqlite`` are taken over once."""
    return _local_store(embedded_database_url())


@lru_cache(maxsize=4)
def _local_store(url: str) -> sessionmaker[Session]:
    # Once per process and database: migrating is a no-op after the first time but still
    # reads the migration scripts.
    from harness.db.migrate import upgrade

    upgrade(url)
    factory = make_session_factory(make_engine(url))
    _take_over_legacy(get_settings().home / LEGACY_FILE, factory)
    return factory


def _legacy_row(row: RowMapping) -> CostRow:
    measured_at = row.get("measured_at")
    return {
        "device_class": str(row["device_class"]),
        "variant": str(row["variant"]),
        "software": str(row["software"]),
        "signature": str(row["signature"]),
        "median_ms": float(row["median_ms"]),
        "samples": int(row["samples"]),
        "description": str(row.get("description") or ""),
        "device": str(row.get("device") or ""),
        "measured_at": measured_at if isinstance(measured_at, datetime) else utcnow(),
    }


def _take_over_legacy(path: Path, factory: sessionmaker[Session]) -> None:
    """Copy the rows of an earlier version's ``costs.sqlite`` (its own ``op_costs`` table,
    created outside Alembic) into the store, keeping times the store already has, then
    rename the file to ``costs.sqlite.imported`` so that this happens once. The times are
    still valid: they are keyed by the software version they were measured with."""
    if not path.is_file():
        return
    legacy = create_engine(f"sqlite:///{path}")
    try:
        with legacy.connect() as conn:
            table = OpCost.__table__
            rows = [_legacy_row(r._mapping) for r in conn.execute(select(table))]
    except SQLAlchemyError as exc:
        log.warning("%s is not a cost store edgefarm can read (%s); left as it is", path, exc)
        return
    finally:
        legacy.dispose()
    with session_scope(factory) as session:
        _insert(session, rows, replace=False)
    # Another process taking it over at the same time inserted the same rows.
    with contextlib.suppress(FileNotFoundError):
        path.rename(path.with_name(path.name + ".imported"))
    log.info("took over %d stored cost(s) from %s", len(rows), path)
