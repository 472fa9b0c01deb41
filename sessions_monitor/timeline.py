"""The SVG timeline's geometry: lanes of bars on a time axis, in SVG units.

Pure: plain values in, plain values out (`tests/test_timeline.py`); the template only draws
what `TimelineGeometry` says. Lane 0 is the status phases, then the gaps (if any), then one
lane per participant.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sessions_monitor.models import EventKind
from sessions_monitor.presentation import (
    PresenceRow,
    SessionView,
    TimelineEvent,
    clock,
    status_label,
    status_tone,
)
from sessions_monitor.upstream import TERMINAL_STATUSES

SVG_WIDTH = 1000
SVG_LABEL_WIDTH = 160
SVG_ROW = 26
SVG_AXIS = 24


@dataclass(frozen=True)
class Bar:
    x: float
    width: float
    tone: str
    label: str
    title: str

    @property
    def show_label(self) -> bool:
        """Whether the label fits inside the bar (about 7 units per character at 12px)."""
        return len(self.label) * 7 + 10 <= self.width

    @property
    def label_x(self) -> float:
        return round(self.x + 5, 2)


@dataclass(frozen=True)
class Lane:
    y: float
    label: str
    bars: list[Bar]


@dataclass(frozen=True)
class Tick:
    x: float
    label: str


@dataclass(frozen=True)
class TimelineGeometry:
    width: int
    height: int
    label_width: int
    lanes: list[Lane]
    ticks: list[Tick]
    empty: bool = False

    @property
    def axis_y(self) -> int:
        return self.height - SVG_AXIS


@dataclass(frozen=True)
class Phase:
    status: str
    start: datetime
    end: datetime | None


@dataclass(frozen=True)
class Interval:
    name: str
    start: datetime
    end: datetime | None


def timeline_geometry(
    phases: Sequence[Phase],
    intervals: Sequence[Interval],
    *,
    start: datetime,
    end: datetime,
    gaps: Sequence[Interval] = (),
) -> TimelineGeometry:
    """Lane 0: status phases; then, if any, a lane of gaps (no upstream connection: events
    may be missing); then one lane per participant (in first-join order).

    Open phases/intervals run to `end`. Every bar is at least 2 units wide so a blip shows.
    """
    span = max((end - start).total_seconds(), 1.0)
    plot = SVG_WIDTH - SVG_LABEL_WIDTH

    def x_of(moment: datetime) -> float:
        offset = min(max((moment - start).total_seconds(), 0.0), span)
        return round(SVG_LABEL_WIDTH + plot * offset / span, 2)

    def bar(a: datetime, b: datetime | None, tone: str, label: str, title: str) -> Bar:
        x0, x1 = x_of(a), x_of(b or end)
        return Bar(x0, max(round(x1 - x0, 2), 2.0), tone, label, title)

    lanes = [
        Lane(
            0,
            "Status",
            [
                bar(
                    p.start,
                    p.end,
                    status_tone(p.status),
                    status_label(p.status),
                    f"{status_label(p.status)} from {clock(p.start)}"
                    + (f" to {clock(p.end)}" if p.end else ""),
                )
                for p in phases
            ],
        )
    ]
    if gaps:
        lanes.append(
            Lane(
                SVG_ROW,
                "Not connected",
                [
                    bar(
                        g.start,
                        g.end,
                        "gap",
                        "gap",
                        f"No upstream connection {clock(g.start)} – {clock(g.end) if g.end else 'now'}:"
                        " events may be missing",
                    )
                    for g in gaps
                ],
            )
        )
    by_name: dict[str, list[Interval]] = {}
    for interval in intervals:
        by_name.setdefault(interval.name, []).append(interval)
    for index, (name, items) in enumerate(by_name.items(), start=len(lanes)):
        lanes.append(
            Lane(
                index * SVG_ROW,
                name,
                [
                    bar(
                        i.start,
                        i.end,
                        "present",
                        name,
                        f"{name}: {clock(i.start)} – {clock(i.end) if i.end else 'now'}",
                    )
                    for i in items
                ],
            )
        )
    ticks: list[Tick] = []
    for n in range(5):
        label = clock(start + timedelta(seconds=span * n / 4))
        # Short spans give equal HH:MM:SS labels: show each time once.
        shown = "" if label in {tick.label for tick in ticks} else label
        ticks.append(Tick(round(SVG_LABEL_WIDTH + plot * n / 4, 2), shown))
    height = len(lanes) * SVG_ROW + SVG_AXIS
    return TimelineGeometry(
        SVG_WIDTH, height, SVG_LABEL_WIDTH, lanes, ticks, empty=not phases and not intervals
    )


def status_phases(events: Sequence[TimelineEvent], ended_at: datetime | None) -> list[Phase]:
    """Consecutive status phases from the status events (a repeated status extends its phase)."""
    phases: list[Phase] = []
    for event in events:
        if event.kind != EventKind.STATUS or not event.status:
            continue
        if phases and phases[-1].status == event.status:
            continue
        if phases:
            phases[-1] = Phase(phases[-1].status, phases[-1].start, event.at)
        phases.append(Phase(event.status, event.at, None))
    if phases and phases[-1].status in TERMINAL_STATUSES:
        last = phases[-1]
        phases[-1] = Phase(last.status, last.start, ended_at or last.start)
    return phases


def session_geometry(
    session: SessionView,
    transitions: Sequence[TimelineEvent],
    presences: Sequence[PresenceRow],
    *,
    gaps: Sequence[TimelineEvent] = (),
    span: tuple[datetime, datetime] | None = None,
) -> TimelineGeometry:
    """The detail page's timeline of one session.

    `span` is the first and the last moment of any of its events (None: no events). The axis
    runs from the start (or the earliest event or join) to the end, or now; an ended session
    whose last event came after its end runs to that event.
    """
    now = session.now
    times = [p.joined_at for p in presences] + (list(span) if span else [])
    start = min([session.started_at or now, *times]) if times else now
    end = session.ended_at or now
    if session.is_terminal and span is not None:
        end = max(end, max(times))
    intervals = [Interval(p.name, p.joined_at, p.left_at) for p in presences]
    missing = [Interval("gap", g.gap_started_at or g.received_at, g.received_at) for g in gaps]
    return timeline_geometry(
        status_phases(transitions, session.ended_at),
        intervals,
        start=start,
        end=max(end, start),
        gaps=missing,
    )
