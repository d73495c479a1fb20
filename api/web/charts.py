"""The data of the pages' charts, drawn in the browser by uPlot (``static/web.js``).

Each chart is a JSON block in the page (``<script type="application/json">``, written by
Jinja's ``tojson``, which escapes ``<``, ``>``, ``&`` and ``'``, so no name can close the
block) beside the element uPlot draws into. The data is bounded as the queries are: a history
has at most :data:`harness.farm.web_queries.MAX_SERIES` series of at most
:data:`~harness.farm.web_queries.MAX_POINTS` points, a histogram at most :data:`MAX_BINS`
bins of a run's raw samples (binned here, so a run of 10^5 samples is 40 numbers).

Why uPlot: about 50 KB, MIT, made for long time series, with bands between series; installed
from the npm registry by ``python -m api.web.assets`` (:mod:`api.web.assets`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypedDict
from urllib.parse import urlencode

import numpy as np

from harness.farm.web_queries import HistorySeries

PALETTE = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f0e",
    "#17becf",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#393b79",
    "#637939",
)
MAX_BINS = 40
TAIL_QUANTILE = 99.0


def color(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _epoch(moment: datetime) -> int | float:
    seconds = moment.timestamp()
    return int(seconds) if seconds.is_integer() else round(seconds, 3)


class SeriesData(TypedDict):
    """One series: parallel arrays, one entry per point (oldest first). ``median`` is None
    for a failed run; ``span_s`` > 0 when each point aggregates the runs of that many
    seconds (a click then zooms into the span rather than opening a job)."""

    label: str
    color: str
    t: list[int | float]
    median: list[float | None]
    low: list[float | None]
    high: list[float | None]
    run: list[int | None]
    job: list[int | None]
    runs: list[int]
    alerts: list[list[int]]
    span_s: int


class ChangeData(TypedDict):
    t: int | float
    text: str


class HistoryData(TypedDict):
    kind: str
    series: list[SeriesData]
    changes: list[ChangeData]
    unit: str


def history_data(series: Sequence[HistorySeries]) -> HistoryData:
    """The history chart's data: per series its medians over time with the p10–p90 band,
    its alerts; the toolchain changes of every series, one entry per moment."""
    out: list[SeriesData] = []
    for index, s in enumerate(series):
        out.append(
            SeriesData(
                label=s.label,
                color=color(index),
                t=[_epoch(p.at) for p in s.points],
                median=[_finite(p.median_ms) for p in s.points],
                low=[_finite(p.low_ms) for p in s.points],
                high=[_finite(p.high_ms) for p in s.points],
                run=[p.run_id for p in s.points],
                job=[p.job_id for p in s.points],
                runs=[p.runs for p in s.points],
                alerts=[p.alerts[:3] for p in s.points],
                span_s=s.span_days * 86400,
            )
        )
    by_moment: dict[datetime, list[str]] = {}
    for s in series:
        for change in s.changes:
            short = change.key.replace("_version", "").replace("model_sha256", "model")
            label = f"{short} {change.before[:12]}→{change.after[:12]}"
            labels = by_moment.setdefault(change.at, [])
            if label not in labels:
                labels.append(label)
    changes = [
        ChangeData(t=_epoch(moment), text="; ".join(labels))
        for moment, labels in sorted(by_moment.items())
    ]
    return HistoryData(kind="history", series=out, changes=changes, unit="ms")


class HistogramData(TypedDict):
    """Bins of a run's samples; the last bin also counts the ``tail`` samples above the
    ``TAIL_QUANTILE`` (a few slow outliers would otherwise squeeze every other bar into one)."""

    kind: str
    edges: list[float]
    counts: list[int]
    median: float | None
    n: int
    tail: int


def histogram_data(samples: Sequence[Any], *, median: float | None = None) -> HistogramData | None:
    """A run's raw samples in at most :data:`MAX_BINS` bins (None without a finite sample)."""
    values = np.asarray([v for v in samples if isinstance(v, int | float)], dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    bins = int(min(MAX_BINS, max(5, math.ceil(math.sqrt(values.size)))))
    low, high = float(values.min()), float(np.percentile(values, TAIL_QUANTILE))
    if high <= low:  # (nearly) every sample equal: one visible bar around them
        high = float(values.max())
    if high <= low:
        pad = abs(low or 1.0) * 0.005
        low, high = low - pad, high + pad
    tail = int(np.count_nonzero(values > high))
    counts, edges = np.histogram(np.minimum(values, high), bins=bins, range=(low, high))
    return HistogramData(
        kind="histogram",
        edges=[float(e) for e in edges],
        counts=[int(c) for c in counts],
        median=_finite(median),
        n=int(values.size),
        tail=tail,
    )


def _moment(moment: datetime) -> str:
    # A day's edge as a date (2026-01-31): the links stay short.
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return moment.date().isoformat()
    return moment.isoformat()


def zoom_href(base: Sequence[tuple[str, str]], start: datetime, end: datetime) -> str:
    """The history URL of the same view limited to [start, end)."""
    query = [(k, v) for k, v in base if v] + [("since", _moment(start)), ("until", _moment(end))]
    return "/history?" + urlencode(query)
