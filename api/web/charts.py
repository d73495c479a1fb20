"""Charts as SVG drawn on the server: a history of medians with their p10–p90 bands, and a
histogram of a run's raw samples.

Why SVG from the server rather than a charting library: the farm runs in labs without
internet, every asset must come from a registry through the project's own set-up, and the
JavaScript libraries that fit (uPlot) are not on PyPI, while Bokeh's wheel brings about a
megabyte of JavaScript and pandas. A history has at most a few hundred points per series
(:mod:`harness.farm.web_queries` aggregates beyond), so the SVG stays small, works without
JavaScript, and each point is a link to its job. Every text in it is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from urllib.parse import urlencode

import numpy as np
from markupsafe import Markup, escape

from harness.farm.web_queries import HistorySeries, Point

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
WIDTH, HEIGHT = 960, 340
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 40


def _f(x: float) -> str:
    return f"{x:.1f}"


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    if high <= low:
        high = low + 1.0
    step = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(step))
    for factor in (1, 2, 2.5, 5, 10):
        if step <= factor * magnitude:
            step = factor * magnitude
            break
    start = math.ceil(low / step) * step
    ticks = []
    value = start
    while value <= high + 1e-9:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _time_ticks(start: datetime, end: datetime, count: int = 6) -> list[datetime]:
    total = (end - start).total_seconds()
    if total <= 0:
        return [start]
    return [start + timedelta(seconds=total * i / (count - 1)) for i in range(count)]


def _time_label(moment: datetime, total_s: float) -> str:
    if total_s < 3 * 3600:
        return moment.strftime("%H:%M:%S")
    if total_s < 2 * 86400:
        return moment.strftime("%m-%d %H:%M")
    return moment.strftime("%Y-%m-%d")


def history_chart(
    series: Sequence[HistorySeries],
    *,
    point_href: Callable[[HistorySeries, Point], str],
    alert_href: Callable[[int], str],
) -> Markup:
    """The medians of ``series`` over time, each with its p10–p90 band; alerts ringed in red;
    toolchain changes as dashed vertical lines labelled with what changed."""
    points = [p for s in series for p in s.points]
    if not points:
        return Markup('<p class="empty">no runs in this view</p>')
    start = min(p.at for p in points)
    end = max((p.span_end or p.at) for p in points)
    if end <= start:
        start, end = start - timedelta(hours=1), end + timedelta(hours=1)
    total_s = (end - start).total_seconds()
    values = [v for p in points for v in (p.low_ms, p.high_ms, p.median_ms) if v is not None]
    y_high = max(values) * 1.08 if values else 1.0
    y_low = 0.0
    plot_w = WIDTH - LEFT - RIGHT
    plot_h = HEIGHT - TOP - BOTTOM

    def x_of(moment: datetime) -> float:
        return LEFT + (moment - start).total_seconds() / total_s * plot_w

    def y_of(value: float) -> float:
        return TOP + plot_h - (value - y_low) / (y_high - y_low) * plot_h

    parts: list[str] = [
        f'<svg class="chart history" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-label="median latency over time" '
        f'data-start="{escape(start.isoformat())}" data-end="{escape(end.isoformat())}" '
        f'data-left="{LEFT}" data-right="{WIDTH - RIGHT}">'
    ]
    for tick in _nice_ticks(y_low, y_high):
        y = y_of(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{_f(y)}" y2="{_f(y)}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{_f(y + 4)}" text-anchor="end">{tick:g}</text>'
        )
    for tick_at in _time_ticks(start, end):
        x = x_of(tick_at)
        parts.append(
            f'<text class="tick" x="{_f(x)}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle">'
            f"{escape(_time_label(tick_at, total_s))}</text>"
        )
    parts.append(
        f'<text class="axis" x="14" y="{TOP + plot_h / 2:.0f}" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.0f})" text-anchor="middle">ms</text>'
    )
    # Toolchain changes: one line per moment, its label listing what changed.
    by_moment: dict[datetime, list[str]] = {}
    for s in series:
        for change in s.changes:
            short = change.key.replace("_version", "").replace("model_sha256", "model")
            label = f"{short} {change.before[:12]}→{change.after[:12]}"
            by_moment.setdefault(change.at, [])
            if label not in by_moment[change.at]:
                by_moment[change.at].append(label)
    for moment, labels in sorted(by_moment.items()):
        x = x_of(moment)
        text = "; ".join(labels)
        parts.append(
            f'<g class="change"><title>{escape(text)}</title>'
            f'<line x1="{_f(x)}" x2="{_f(x)}" y1="{TOP}" y2="{TOP + plot_h}"/>'
            f'<text x="{_f(x + 3)}" y="{TOP + 10}">{escape(text[:40])}</text></g>'
        )
    # Bands and lines first, every series' points above them (a band never hides a point).
    for index, s in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        measured = [p for p in s.points if p.median_ms is not None]
        banded = [p for p in measured if p.low_ms is not None and p.high_ms is not None]
        if len(banded) >= 2:
            upper = " ".join(f"{_f(x_of(p.at))},{_f(y_of(p.high_ms or 0))}" for p in banded)
            lower = " ".join(
                f"{_f(x_of(p.at))},{_f(y_of(p.low_ms or 0))}" for p in reversed(banded)
            )
            parts.append(f'<polygon class="band" fill="{color}" points="{upper} {lower}"/>')
        if len(measured) >= 2:
            line = " ".join(f"{_f(x_of(p.at))},{_f(y_of(p.median_ms or 0))}" for p in measured)
            parts.append(f'<polyline class="line" stroke="{color}" points="{line}"/>')
    for index, s in enumerate(series):
        color = PALETTE[index % len(PALETTE)]
        banded = [
            p
            for p in s.points
            if p.median_ms is not None and p.low_ms is not None and p.high_ms is not None
        ]
        parts.append(
            f'<g class="series" data-series="{index}" data-label="{escape(s.label)}" '
            f'data-points="{len(s.points)}" fill="{color}">'
        )
        for p in s.points:
            x = x_of(p.at)
            if p.median_ms is None:
                y = TOP + plot_h - 4
                shape = (
                    f'<rect class="pt failed" x="{_f(x - 4)}" y="{_f(y - 4)}" width="8" height="8"'
                )
            else:
                y = y_of(p.median_ms)
                if p.low_ms is not None and p.high_ms is not None and len(banded) < 2:
                    parts.append(
                        f'<line class="whisker" stroke="{color}" x1="{_f(x)}" x2="{_f(x)}" '
                        f'y1="{_f(y_of(p.low_ms))}" y2="{_f(y_of(p.high_ms))}"/>'
                    )
                shape = f'<circle class="pt" cx="{_f(x)}" cy="{_f(y)}" r="4"'
            data = (
                (f' data-run="{p.run_id}"' if p.run_id is not None else "")
                + (f' data-median="{p.median_ms!r}"' if p.median_ms is not None else "")
                + (f' data-runs="{p.runs}"' if p.runs != 1 else "")
            )
            tip = _point_title(p)
            parts.append(
                f'<a href="{escape(point_href(s, p))}">{shape}{data}>'
                f"<title>{escape(tip)}</title>{'</rect>' if p.median_ms is None else '</circle>'}"
                "</a>"
            )
            for alert_id in p.alerts[:3]:
                parts.append(
                    f'<a href="{escape(alert_href(alert_id))}"><circle class="alert" '
                    f'data-alert="{alert_id}" cx="{_f(x)}" cy="{_f(y)}" r="9">'
                    f"<title>alert {alert_id}</title></circle></a>"
                )
        parts.append("</g>")
    parts.append(
        f'<rect class="frame" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}"/>'
        '<rect class="brush" x="0" y="0" width="0" height="0"/></svg>'
    )
    return Markup("".join(parts))


def _point_title(p: Point) -> str:
    # Short: a long history has hundreds of these (the series' name is on its group).
    when = p.at.strftime("%Y-%m-%d %H:%M")
    if p.runs > 1 or p.span_end is not None:
        median = f"{p.median_ms:.4g} ms" if p.median_ms is not None else "no result"
        return f"{when}: {p.runs} runs, median {median}"
    if p.median_ms is None:
        return f"{when}: failed (job {p.job_id})"
    band = (
        f", p10–p90 {p.low_ms:.4g}–{p.high_ms:.4g}"
        if p.low_ms is not None and p.high_ms is not None
        else ""
    )
    return f"{when}: {p.median_ms:.4g} ms{band}, run {p.run_id}"


def histogram(samples: Sequence[float], *, median: float | None = None) -> Markup:
    """The raw samples' histogram (at most 40 bins), the median marked."""
    values = np.asarray([v for v in samples if isinstance(v, int | float)], dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return Markup('<p class="empty">no samples</p>')
    bins = int(min(40, max(5, math.ceil(math.sqrt(values.size)))))
    low, high = float(values.min()), float(values.max())
    if high <= low:
        low, high = low - 0.5 * abs(low or 1) * 0.01, high + 0.5 * abs(high or 1) * 0.01
    counts, edges = np.histogram(values, bins=bins, range=(low, high))
    width, height, left, bottom, top = 480, 200, 40, 30, 10
    plot_w, plot_h = width - left - 10, height - top - bottom
    tallest = int(counts.max()) or 1
    bar_w = plot_w / bins
    parts = [
        f'<svg class="chart histogram" viewBox="0 0 {width} {height}" width="{width}" '
        f'role="img" aria-label="histogram of {values.size} samples" '
        f'data-samples="{values.size}">'
    ]
    for i, count in enumerate(counts):
        h = count / tallest * plot_h
        x = left + i * bar_w
        parts.append(
            f'<rect class="bar" x="{_f(x)}" y="{_f(top + plot_h - h)}" '
            f'width="{_f(max(bar_w - 1, 1))}" height="{_f(h)}" data-count="{int(count)}">'
            f"<title>{edges[i]:.3f}–{edges[i + 1]:.3f} ms: {int(count)}</title></rect>"
        )
    for value, anchor in ((low, "start"), (high, "end")):
        x = left if anchor == "start" else left + plot_w
        parts.append(
            f'<text class="tick" x="{_f(x)}" y="{height - 10}" text-anchor="{anchor}">'
            f"{value:.3f} ms</text>"
        )
    parts.append(
        f'<text class="tick" x="{left - 4}" y="{top + 8}" text-anchor="end">{tallest}</text>'
    )
    if median is not None and low <= median <= high:
        x = left + (median - low) / (high - low) * plot_w
        parts.append(
            f'<line class="median" x1="{_f(x)}" x2="{_f(x)}" y1="{top}" '
            f'y2="{top + plot_h}"><title>median {median:.3f} ms</title></line>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def _moment(moment: datetime) -> str:
    # A day's edge as a date (2026-01-31): the aggregated points' links stay short.
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return moment.date().isoformat()
    return moment.isoformat()


def zoom_href(base: dict[str, str], start: datetime, end: datetime) -> str:
    """The history URL of the same view limited to [start, end)."""
    query = {**base, "since": _moment(start), "until": _moment(end)}
    return "/history?" + urlencode({k: v for k, v in query.items() if v})
