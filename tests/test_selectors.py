from __future__ import annotations

import uuid

import pytest

from sessions_monitor.selectors import events_after, session_snapshot, stream_start
from sessions_monitor.services import record_event, record_link_state
from sessions_monitor.upstream import (
    LinkState,
    LinkStateName,
    ParticipantJoined,
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
