"""The Insights page's charts: SVG drawn on the server, like the session timeline.

Pure functions from `insights` dataclasses to markup (every value escaped by `format_html`).
Every bar is an `<a href>` to the sessions behind it, named (and tooltipped) by its
`<title>`; the SVG is labelled by its own `<title>` and the page's heading, and the page
prints the same numbers in a table beside it. The SVG is `role="group"`, not `role="img"`:
an image's children are presentational, so links inside one are an axe-core "serious"
violation (nested-interactive) and unreachable for screen readers. Colours come from classes (`static/css/app.css`, both
schemes): the strict CSP allows no `style=` attribute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from sessions_monitor.insights import CUSTOM, Bucket, Insights, Tally, percent
from sessions_monitor.list_filters import RANGES

WIDTH = 640
PLOT_LEFT = 48
PLOT_RIGHT = 8
PLOT_TOP = 10
AXIS = 22
TIME_HEIGHT = 240
RATE_HEIGHT = 140
ROW = 26
LABEL_WIDTH = 230
BAR_WIDTH = 280


def nice_ceiling(value: float) -> int:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above `value` (at least 1): the axis
    maximum (its half is a gridline too)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * power >= value and (step * power) % 1 == 0:
            return int(step * power)
    return int(10 * power)  # pragma: no cover (the loop always returns)


def bucket_label(moment: datetime, hourly: bool) -> str:
    return moment.strftime("%H:00") if hourly else moment.strftime("%d %b")


def bucket_title(bucket: Bucket, hourly: bool) -> str:
    """`2026-12-04 13:00–14:00 UTC` or `2026-12-04 (UTC)`."""
    if hourly:
        return f"{bucket.start:%Y-%m-%d %H:%M}–{bucket.end:%H:%M} UTC"
    return f"{bucket.start:%Y-%m-%d} (UTC)"


def table_label(bucket: Bucket, hourly: bool) -> str:
    """The row header of a bucket in the table (the column header says UTC)."""
    return f"{bucket.start:%Y-%m-%d %H:%M}" if hourly else f"{bucket.start:%Y-%m-%d}"


def _svg(
    chart_id: str, height: int, label: str, body: SafeString, *, width: int = WIDTH
) -> SafeString:
    return format_html(
        '<svg class="chart" id="{id}" viewBox="0 0 {w} {h}" role="group" '
        'aria-labelledby="{id}-title {id}-heading" preserveAspectRatio="xMinYMin meet">'
        '<title id="{id}-title">{label}</title>{body}</svg>',
        id=chart_id,
        w=width,
        h=height,
        label=label,
        body=body,
    )


def _bar(url: str, title: str, css: str, x: float, y: float, w: float, h: float) -> SafeString:
    return format_html(
        '<a href="{}" class="chart-link"><title>{}</title><rect class="chart-bar {}" x="{}" '
        'y="{}" width="{}" height="{}"/></a>',
        url,
        title,
        css,
        round(x, 2),
        round(y, 2),
        round(max(w, 0), 2),
        round(max(h, 0), 2),
    )


def _y_axis(top: int, bottom: int, maximum: int, fmt: str = "{}") -> SafeString:
    """Gridlines and labels at 0, half and the maximum."""
    lines = []
    for share in (0.0, 0.5, 1.0):
        y = round(bottom - (bottom - top) * share, 2)
        value = maximum * share
        text = fmt.format(int(value) if value == int(value) else round(value, 1))
        lines.append(
            format_html(
                '<line class="chart-grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                '<text class="chart-axis" x="{}" y="{}" text-anchor="end">{}</text>',
                PLOT_LEFT,
                WIDTH - PLOT_RIGHT,
                y,
                y,
                PLOT_LEFT - 6,
                round(y + 4, 2),
                text,
            )
        )
    return mark_safe("".join(lines))


def _x_labels(buckets: Sequence[Bucket], hourly: bool, y: float, slot: float) -> SafeString:
    every = max(1, math.ceil(len(buckets) / 8))
    return format_html_join(
        "",
        '<text class="chart-axis" x="{}" y="{}" text-anchor="middle">{}</text>',
        (
            (round(PLOT_LEFT + slot * (index + 0.5), 2), y, bucket_label(b.start, hourly))
            for index, b in enumerate(buckets)
            if index % every == 0
        ),
    )


def time_chart(insights: Insights) -> SafeString:
    """Sessions started per bucket; inside each bar, completed (bottom) and failed stacked.
    The started bar links to every session of the bucket, each segment to its own status."""
    buckets, hourly = insights.buckets, insights.query.hourly
    bottom = TIME_HEIGHT - AXIS
    top = PLOT_TOP
    maximum = nice_ceiling(max((b.started for b in buckets), default=0))
    slot = (WIDTH - PLOT_LEFT - PLOT_RIGHT) / max(len(buckets), 1)
    gap = min(slot * 0.2, 6)
    scale = (bottom - top) / maximum
    parts: list[SafeString] = [_y_axis(top, bottom, maximum)]
    for index, bucket in enumerate(buckets):
        x = PLOT_LEFT + slot * index + gap / 2
        w = slot - gap
        when = bucket_title(bucket, hourly)
        if bucket.started:
            h = bucket.started * scale
            parts.append(
                _bar(
                    insights.bucket_url(bucket),
                    f"{when}: {bucket.started} started",
                    "kind-started",
                    x,
                    bottom - h,
                    w,
                    h,
                )
            )
        base: float = bottom
        for count, status, css in (
            (bucket.completed, "completed", "kind-completed"),
            (bucket.failed, "failed", "kind-failed"),
        ):
            if not count:
                continue
            h = count * scale
            base -= h
            parts.append(
                _bar(
                    insights.bucket_url(bucket, status),
                    f"{when}: {count} {status}",
                    css,
                    x,
                    base,
                    w,
                    h,
                )
            )
    parts.append(_x_labels(buckets, hourly, TIME_HEIGHT - 6, slot))
    label = (
        f"Sessions started per {'hour' if hourly else 'day'}, with completed and failed: "
        f"{insights.started} started, {insights.completed} completed, {insights.failed} failed"
    )
    return _svg("chart-time", TIME_HEIGHT, label, mark_safe("".join(parts)))


def rate_chart(insights: Insights) -> SafeString:
    """Failure rate (failed / ended) per bucket as a line; buckets where nothing ended
    break the line. Each point links to the bucket's failed sessions."""
    buckets, hourly = insights.buckets, insights.query.hourly
    bottom = RATE_HEIGHT - AXIS
    top = PLOT_TOP
    slot = (WIDTH - PLOT_LEFT - PLOT_RIGHT) / max(len(buckets), 1)
    parts: list[SafeString] = [_y_axis(top, bottom, 100, "{} %")]
    runs: list[list[tuple[float, float]]] = [[]]
    points: list[SafeString] = []
    for index, bucket in enumerate(buckets):
        rate = bucket.failure_rate
        if rate is None:
            runs.append([])
            continue
        x = round(PLOT_LEFT + slot * (index + 0.5), 2)
        y = round(bottom - (bottom - top) * rate, 2)
        runs[-1].append((x, y))
        points.append(
            format_html(
                '<a href="{}" class="chart-link"><title>{}</title>'
                '<circle class="chart-point" cx="{}" cy="{}" r="4"/></a>',
                insights.bucket_url(bucket, "failed"),
                f"{bucket_title(bucket, hourly)}: {percent(rate)} failed "
                f"({bucket.failed} of {bucket.ended} ended)",
                x,
                y,
            )
        )
    for run in runs:
        if len(run) > 1:
            parts.append(
                format_html(
                    '<polyline class="chart-line" points="{}"/>',
                    " ".join(f"{x},{y}" for x, y in run),
                )
            )
    parts.extend(points)
    parts.append(_x_labels(buckets, hourly, RATE_HEIGHT - 6, slot))
    label = (
        f"Failure rate per {'hour' if hourly else 'day'} (failed of completed and failed): "
        f"{percent(insights.failure_rate)} over the range"
    )
    return _svg("chart-rate", RATE_HEIGHT, label, mark_safe("".join(parts)))


def bar_chart(chart_id: str, label: str, tallies: Sequence[Tally], css: str) -> SafeString:
    """Horizontal bars, one per tally: its label, its bar, its count."""
    height = max(len(tallies), 1) * ROW + 4
    width = LABEL_WIDTH + BAR_WIDTH + 70
    maximum = max((t.count for t in tallies), default=0) or 1
    parts = []
    for index, tally in enumerate(tallies):
        y = index * ROW + 4
        parts.append(
            format_html(
                '<text class="chart-label" x="{}" y="{}" text-anchor="end">{}</text>',
                LABEL_WIDTH - 8,
                y + 15,
                tally.label if len(tally.label) <= 28 else tally.label[:27] + "…",
            )
        )
        bar_w = BAR_WIDTH * tally.count / maximum
        if tally.count:
            title = f"{tally.label}: {tally.count}" + (f" — {tally.title}" if tally.title else "")
            parts.append(_bar(tally.url, title, css, LABEL_WIDTH, y, max(bar_w, 2), ROW - 8))
        parts.append(
            format_html(
                '<text class="chart-value" x="{}" y="{}">{}</text>',
                round(LABEL_WIDTH + bar_w + 6, 2),
                y + 15,
                tally.count,
            )
        )
    return _svg(chart_id, height, label, mark_safe("".join(parts)), width=width)


def platform_tallies(insights: Insights) -> list[Tally]:
    return [
        Tally(p.platform, p.label, p.started, p.url, f"{p.failed} failed")
        for p in insights.platforms
    ]


def charts(insights: Insights) -> dict[str, SafeString]:
    """Every chart of the page, by name (the template places them)."""
    return {
        "time": time_chart(insights),
        "rate": rate_chart(insights),
        "errors": bar_chart(
            "chart-errors",
            f"Failures by error code: {insights.failed} failed sessions",
            insights.errors,
            "kind-failed",
        ),
        "platforms": bar_chart(
            "chart-platforms",
            f"Sessions started by platform: {insights.started} in all",
            platform_tallies(insights),
            "kind-plain",
        ),
        "durations": bar_chart(
            "chart-durations",
            "How long bots stayed in the meeting (sessions that ended after being in)",
            insights.durations,
            "kind-plain",
        ),
    }


def page_context(insights: Insights, choices: dict[str, list[str]]) -> dict[str, object]:
    """Everything `templates/insights.html` shows."""
    query = insights.query
    return {
        "q": query,
        "insights": insights,
        "charts": charts(insights),
        "choices": choices,
        "ranges": [(key, label.capitalize()) for key, (label, _span) in RANGES.items()]
        + [(CUSTOM, "Custom")],
        "time_rows": [
            {
                "bucket": bucket,
                "title": table_label(bucket, query.hourly),
                "url": insights.bucket_url(bucket),
                "completed_url": insights.bucket_url(bucket, "completed"),
                "failed_url": insights.bucket_url(bucket, "failed"),
                "rate": percent(bucket.failure_rate),
            }
            for bucket in insights.buckets
        ],
        "failure_rate": percent(insights.failure_rate),
        "all_url": query.list_url(),
        "completed_url": query.list_url(status="completed"),
        "failed_url": query.list_url(status="failed"),
        "platform_rows": [{"row": p, "rate": percent(p.failure_rate)} for p in insights.platforms],
    }
