from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.template.loader import render_to_string
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from sessions_monitor.models import MeetingSession, SessionEvent
from sessions_monitor.presentation import (
    REGIONS,
    REGIONS_BY_KIND,
    SessionDetail,
    detail_context,
    recent_minutes,
    regions_for,
)
from sessions_monitor.selectors import (
    events_after,
    filter_counts,
    last_stored_seq,
    list_page,
    read_detail,
    read_live_regions,
    read_overall_upstream,
    read_session,
    recently_ended,
    search_sessions,
    session_snapshot,
    stream_start,
)
from sessions_monitor.services import (
    record_anomaly,
    record_event,
    record_gap,
    record_link_state,
    seed_presence,
)
from sessions_monitor.upstream import (
    LinkState,
    LinkStateName,
    ParticipantJoined,
    ParticipantLeft,
    StatusChanged,
    StreamClosed,
)

pytestmark = pytest.mark.django_db


def sid() -> str:
    return f"mbsess_sel{uuid.uuid4().hex[:10]}"


def build(session_id: str, *, ended: bool = False) -> None:
    record_link_state(session_id=session_id, state=LinkState(LinkStateName.LIVE), broadcast=False)
    for value in ("joining", "active"):
        record_event(
            session_id=session_id,
            event=StatusChanged(session_id, value, value, None),
            broadcast=False,
        )
    record_event(
        session_id=session_id, event=ParticipantJoined(session_id, "Alice", None), broadcast=False
    )
    if ended:
        record_event(
            session_id=session_id,
            event=StatusChanged(session_id, "completed", "completed", None),
            broadcast=False,
        )
        record_event(session_id=session_id, event=StreamClosed("session_ended"), broadcast=False)


def test_a_live_session_starts_with_its_current_status_and_what_followed() -> None:
    session_id = sid()
    build(session_id)  # seq 1 stream note, 2 joining, 3 active, 4 Alice joined

    start = stream_start(session_id, None)

    assert start.known and not start.terminal
    assert [(e["seq"], e["kind"]) for e in start.events] == [(3, "status"), (4, "joined")]
    assert start.last_seq == 4


def test_an_ended_session_starts_with_its_whole_history() -> None:
    session_id = sid()
    build(session_id, ended=True)

    start = stream_start(session_id, None)

    assert start.terminal
    assert [e["kind"] for e in start.events] == [
        "stream",
        "status",
        "status",
        "joined",
        "status",
        "close",
    ]


def test_last_event_id_resumes_after_it_and_an_unknown_one_starts_afresh() -> None:
    session_id = sid()
    build(session_id)

    assert [e["seq"] for e in stream_start(session_id, 2).events] == [3, 4]
    assert stream_start(session_id, 4).events == []
    assert stream_start(session_id, 4).resume_from == 4
    fresh = stream_start(session_id, 99)
    assert fresh.resume_from is None
    assert [e["seq"] for e in fresh.events] == [3, 4]


def test_unknown_sessions_and_plain_reads() -> None:
    assert stream_start("mbsess_nothere", None).known is False
    assert session_snapshot("mbsess_nothere") is None
    session_id = sid()
    build(session_id)
    snapshot = session_snapshot(session_id)
    assert snapshot is not None
    assert (snapshot["status"], snapshot["previous_status"], snapshot["last_seq"]) == (
        "active",
        "joining",
        4,
    )
    assert [e["seq"] for e in events_after(session_id, 1, limit=2)] == [2, 3]


# --- page reads -----------------------------------------------------------------------------------


def a_meeting(session_id: str) -> None:
    """Statuses, a join we saw, one present before watching began, a payload-heavy anomaly, a
    gap, a leave and a failure: every kind a detail region draws."""
    build(session_id)  # 1 link note, 2 joining, 3 active, 4 Alice joined
    seed_presence(session_id=session_id, names=["Bob"], broadcast=False)
    record_anomaly(session_id=session_id, note="odd", raw="x" * 5000, broadcast=False)
    record_gap(
        session_id=session_id,
        started_at=timezone.now() - timedelta(seconds=5),
        reason="test",
        broadcast=False,
    )
    record_event(
        session_id=session_id, event=ParticipantLeft(session_id, "Alice", None), broadcast=False
    )
    record_event(
        session_id=session_id,
        event=StatusChanged(session_id, "failed", "active", None, "BOT_REMOVED", "Removed"),
        broadcast=False,
    )


def test_the_detail_read_holds_the_log_transitions_presences_and_how_they_joined() -> None:
    session_id = sid()
    a_meeting(session_id)

    detail = read_detail(session_id)

    assert detail is not None and detail.session.is_failed
    assert [e.kind for e in detail.events][:4] == ["stream", "status", "status", "joined"]
    assert detail.last_seq == last_stored_seq(session_id) == detail.events[-1].seq
    assert [t.status for t in detail.transitions] == ["joining", "active", "failed"]
    assert [(p.name, p.how_joined) for p in detail.presences] == [
        ("Alice", ""),
        ("Bob", "present when watching began"),
    ]
    assert detail.geometry is not None
    assert [lane.label for lane in detail.geometry.lanes] == [
        "Status",
        "Not connected",
        "Alice",
        "Bob",
    ]
    assert read_detail("mbsess_nothere") is None
    assert last_stored_seq("mbsess_nothere") == 0


def test_read_session_is_the_snapshot_as_the_pages_show_it() -> None:
    session_id = sid()
    build(session_id)
    view = read_session(session_id)
    snapshot = session_snapshot(session_id)
    assert view is not None and snapshot is not None
    assert (view.status, view.previous_status, view.last_seq) == ("active", "joining", 4)
    assert view.stream_state_since == parse_datetime(snapshot["stream_state_since"])
    assert read_session("mbsess_nothere") is None


def test_list_reads_filter_search_count_and_badge() -> None:
    live, ended = sid(), sid()
    build(live)
    build(ended, ended=True)

    page = search_sessions(filter_name="live", query="", page_number=1)
    assert [row.session_id for row in page.object_list] == [live]
    found = search_sessions(filter_name="all", query="alice", page_number=1)
    assert {row.session_id for row in found.object_list} == {live, ended}
    counts = filter_counts()
    assert (counts["live"], counts["ended"], counts["all"]) == (1, 1, 2)
    assert [row.session_id for row in recently_ended(60)] == [ended]
    assert read_overall_upstream().state in ("live", "none")
    context = list_page(filter_name="ended", query="", page_number=None)
    assert [row.session_id for row in context["page_obj"].object_list] == [ended]
    assert context["recent_minutes"] == recent_minutes()


# --- live regions ---------------------------------------------------------------------------------


def render_regions(detail: SessionDetail, regions: frozenset[str]) -> str:
    context = {**detail_context(detail, after=99), "regions": regions}
    return render_to_string("sessions_monitor/session_detail.html#live-regions", context)


@pytest.mark.parametrize(
    "regions", [REGIONS, *REGIONS_BY_KIND.values()], ids=lambda r: ",".join(sorted(r))
)
def test_live_regions_render_exactly_as_from_the_whole_detail(regions: frozenset[str]) -> None:
    session_id = sid()
    a_meeting(session_id)
    now = timezone.now()

    whole = read_detail(session_id, now)
    part = read_live_regions(session_id, regions, now)

    assert whole is not None and part is not None
    assert render_regions(part, regions) == render_regions(whole, regions)


def event_reads(queries: list[dict[str, str]]) -> list[str]:
    return [q["sql"] for q in queries if "sessions_monitor_sessionevent" in q["sql"]]


def test_a_live_frame_reads_no_event_log_however_long() -> None:
    session_id = sid()
    build(session_id)
    session = MeetingSession.objects.get(pk=session_id)
    SessionEvent.objects.bulk_create(
        SessionEvent(session=session, seq=seq, kind="anomaly", note="old", raw="x" * 2000)
        for seq in range(5, 505)
    )
    MeetingSession.objects.filter(pk=session_id).update(last_seq=504)
    record_event(
        session_id=session_id, event=ParticipantJoined(session_id, "Zed", None), broadcast=False
    )

    with CaptureQueriesContext(connection) as live:
        detail = read_live_regions(session_id, regions_for(["joined"]))
    with CaptureQueriesContext(connection) as whole:
        read_detail(session_id)

    assert detail is not None and [p.name for p in detail.present] == ["Alice", "Zed"]
    payload = '"sessions_monitor_sessionevent"."raw"'
    assert any(payload in sql for sql in event_reads(whole.captured_queries))  # the check bites
    reads = event_reads(live.captured_queries)
    assert reads and not any(payload in sql for sql in reads)
    # Each read of events either picks kinds (status changes, gaps, the join's note) or
    # aggregates (the first and last moment): none reads the 500 old events out.
    assert all('"kind"' in sql or "MIN(" in sql for sql in reads), reads
    assert len(live.captured_queries) <= 4
