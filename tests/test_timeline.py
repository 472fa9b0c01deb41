"""The SVG timeline's geometry (pure: no database)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from sessions_monitor import presentation as p
from sessions_monitor import timeline as t

T0 = datetime(2026, 1, 5, 10, 0, 0, tzinfo=UTC)


def _event(seq: int, kind: str, at: datetime, **fields: Any) -> p.TimelineEvent:
    return p.timeline_event({"seq": seq, "kind": kind, "upstream_timestamp": at, **fields})


def test_status_phases_merge_repeats_and_close_at_the_end() -> None:
    events = [
        _event(1, "status", T0, status="joining"),
        _event(2, "status", T0 + timedelta(seconds=10), status="joining"),
        _event(3, "joined", T0 + timedelta(seconds=12), participant_name="A"),
        _event(4, "status", T0 + timedelta(seconds=20), status="active"),
        _event(5, "status", T0 + timedelta(seconds=60), status="completed"),
    ]
    phases = t.status_phases(events, ended_at=T0 + timedelta(seconds=60))
    assert [(ph.status, ph.start, ph.end) for ph in phases] == [
        ("joining", T0, T0 + timedelta(seconds=20)),
        ("active", T0 + timedelta(seconds=20), T0 + timedelta(seconds=60)),
        ("completed", T0 + timedelta(seconds=60), T0 + timedelta(seconds=60)),
    ]


def test_timeline_geometry_scales_bars_and_gives_each_participant_a_lane() -> None:
    phases = [
        t.Phase("joining", T0, T0 + timedelta(seconds=25)),
        t.Phase("active", T0 + timedelta(seconds=25), None),
    ]
    intervals = [
        t.Interval("Alice", T0 + timedelta(seconds=25), T0 + timedelta(seconds=50)),
        t.Interval("Bob", T0 + timedelta(seconds=30), None),
        t.Interval("Alice", T0 + timedelta(seconds=75), None),  # a rejoin: same lane, new bar
    ]
    g = t.timeline_geometry(phases, intervals, start=T0, end=T0 + timedelta(seconds=100))
    plot = t.SVG_WIDTH - t.SVG_LABEL_WIDTH
    assert [lane.label for lane in g.lanes] == ["Status", "Alice", "Bob"]
    joining, active = g.lanes[0].bars
    assert joining.x == t.SVG_LABEL_WIDTH and joining.width == pytest.approx(plot * 0.25)
    assert active.x + active.width == pytest.approx(t.SVG_WIDTH)  # open phase runs to the end
    assert [b.x for b in g.lanes[1].bars] == [
        pytest.approx(t.SVG_LABEL_WIDTH + plot * 0.25),
        pytest.approx(t.SVG_LABEL_WIDTH + plot * 0.75),
    ]
    assert g.lanes[2].y == 2 * t.SVG_ROW
    assert g.height == 3 * t.SVG_ROW + t.SVG_AXIS
    assert [t.label for t in g.ticks][0] == "10:00:00" and len(g.ticks) == 5
    assert joining.show_label and joining.label_x == joining.x + 5
    assert not g.empty


def test_timeline_geometry_shows_blips_and_clamps() -> None:
    g = t.timeline_geometry(
        [t.Phase("failed", T0, T0)],
        [t.Interval("Early", T0 - timedelta(seconds=30), T0)],
        start=T0,
        end=T0 + timedelta(seconds=10),
    )
    assert g.lanes[0].bars[0].width == 2.0
    assert not g.lanes[0].bars[0].show_label  # "Failed" does not fit in a blip
    short = t.timeline_geometry(
        [], [t.Interval("A", T0, None)], start=T0, end=T0 + timedelta(seconds=2)
    )
    assert [t.label for t in short.ticks] == ["10:00:00", "", "10:00:01", "", "10:00:02"]
    assert g.lanes[1].bars[0].x == t.SVG_LABEL_WIDTH
    assert t.timeline_geometry([], [], start=T0, end=T0).empty


def _view(**fields: Any) -> p.SessionView:
    return p.session_view(
        {"session_id": "mbsess_geo", "started_at": T0, **fields}, now=T0 + timedelta(seconds=100)
    )


def test_session_geometry_runs_from_the_start_to_now_with_gaps_and_people() -> None:
    status = [_event(1, "status", T0, status="active")]
    gap = p.timeline_event(
        {
            "seq": 2,
            "kind": "gap",
            "received_at": T0 + timedelta(seconds=50),
            "gap_started_at": T0 + timedelta(seconds=40),
        }
    )
    alice = p.PresenceRow("Alice", T0 + timedelta(seconds=10), None, 3, "1 min 30 s")
    g = t.session_geometry(
        _view(status="active"), status, [alice], gaps=[gap], span=(T0, T0 + timedelta(seconds=50))
    )
    assert [lane.label for lane in g.lanes] == ["Status", "Not connected", "Alice"]
    plot = t.SVG_WIDTH - t.SVG_LABEL_WIDTH
    (missing,) = g.lanes[1].bars
    assert missing.x == pytest.approx(t.SVG_LABEL_WIDTH + plot * 0.4)
    assert missing.width == pytest.approx(plot * 0.1)
    assert g.lanes[0].bars[0].x + g.lanes[0].bars[0].width == pytest.approx(t.SVG_WIDTH)


def test_an_ended_session_runs_to_its_last_event_and_nothing_drawn_starts_now() -> None:
    ended = _view(status="completed", ended_at=T0 + timedelta(seconds=20))
    changes = [
        _event(1, "status", T0, status="active"),
        _event(2, "status", T0 + timedelta(seconds=20), status="completed"),
    ]
    late = t.session_geometry(ended, changes, [], span=(T0, T0 + timedelta(seconds=40)))
    active = late.lanes[0].bars[0]
    assert active.width == pytest.approx((t.SVG_WIDTH - t.SVG_LABEL_WIDTH) / 2)
    empty = t.session_geometry(_view(status="joining"), [], [])
    assert empty.empty and empty.ticks[0].label == p.clock(T0 + timedelta(seconds=100))
