"""The tables of the pages, rendered and exported from the same rows.

A page builds :class:`Table` objects; its template renders them (``_table.html``) and
``?format=csv&table=NAME`` / ``?format=json`` export them, so an export holds exactly the rows
the page shows.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import Response
from fastapi.responses import JSONResponse

Scalar = str | int | float | bool | None


@dataclass(frozen=True)
class Cell:
    """One value: ``value`` is what an export holds, ``text`` what the page shows, ``href``
    where the page links it."""

    value: Scalar
    text: str
    href: str | None = None
    title: str | None = None
    css: str = ""

    @property
    def data_value(self) -> str | None:
        """The exact value for the page's ``data-value`` attribute (what tests compare); None
        when the text shown is that value already (the attribute is left out)."""
        if self.value is None:
            return None
        exact = repr(self.value) if isinstance(self.value, float) else str(self.value)
        return None if exact == self.text else exact


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    numeric: bool = False


@dataclass
class Table:
    name: str
    title: str
    columns: list[Column]
    rows: list[dict[str, Cell]] = field(default_factory=list)
    empty: str = "nothing to show"
    # The page shows at most this many rows (its exports hold them all, and say so).
    page_rows: int | None = None

    @property
    def shown(self) -> list[dict[str, Cell]]:
        return self.rows if self.page_rows is None else self.rows[: self.page_rows]

    def add(self, **cells: Cell) -> None:
        self.rows.append(cells)

    def values(self) -> list[dict[str, Scalar]]:
        return [
            {c.key: row[c.key].value if c.key in row else None for c in self.columns}
            for row in self.rows
        ]


def text(value: object, href: str | None = None, *, title: str | None = None) -> Cell:
    """A text cell (None shows as an em dash)."""
    if value is None:
        return Cell(None, "—", href, title)
    if isinstance(value, datetime):
        return Cell(iso(value), short_time(value), href, title or iso(value))
    if isinstance(value, bool | int | float | str):
        return Cell(value, str(value), href, title)
    return Cell(str(value), str(value), href, title)


def number(
    value: float | int | None, digits: int = 3, href: str | None = None, unit: str = ""
) -> Cell:
    """A numeric cell shown with ``digits`` decimals (exported exact)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return Cell(None, "—", href, css="num")
    if isinstance(value, float) and 0 < abs(value) < 1 and digits:
        # Small values keep three significant digits (0.00831 ms, not 0.008).
        digits = max(digits, 2 - math.floor(math.log10(abs(value))))
    shown = f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"
    return Cell(value, shown + unit, href, css="num")


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def short_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")


def export(tables: Sequence[Table], fmt: str, table: str | None) -> Response:
    """``fmt`` csv: one table (``table``, default the first) as CSV; json: every table (or
    the one named) as ``{name: [row, ...]}``. An unknown table name is a 404 naming them."""
    chosen = list(tables)
    if table is not None:
        chosen = [t for t in tables if t.name == table]
        if not chosen:
            names = ", ".join(t.name for t in tables) or "none"
            return JSONResponse(
                {"detail": f"no table {table!r} on this page; its tables: {names}"}, 404
            )
    if fmt == "json":
        body: Mapping[str, object] = {t.name: t.values() for t in chosen}
        return Response(
            json.dumps(body, allow_nan=False, default=str), media_type="application/json"
        )
    if not chosen:
        return Response("", media_type="text/csv")
    first = chosen[0]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([c.key for c in first.columns])
    for row in first.values():
        writer.writerow([_csv_safe(row[c.key]) for c in first.columns])
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{first.name}.csv"'},
    )


def _csv_safe(value: Scalar) -> Scalar:
    # A spreadsheet runs a cell that starts with = + - @ as a formula; a name is text.
    if value is None:
        return ""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
