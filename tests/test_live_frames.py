"""What a detail page's live frame reads: the regions an event changed, never the event log."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import connection
from django.test.utils import CaptureQueriesContext

from sessions_monitor import consumers, presentation, selectors
from sessions_monitor.messages import HubMessage
from sessions_monitor.models import MeetingSession, SessionEvent
from sessions_monitor.services import record_event
from sessions_monitor.upstream import ParticipantJoined, ParticipantLeft, StatusChanged

pytestmark = pytest.mark.django_db(transaction=True)


def long_meeting(session_id: str) -> dict[str, Any]:
    """A session with 300 stored events, then a join: the join's plain event."""
    record_event(
        session_id=session_id,
        event=StatusChanged(session_id, "active", "joining", None),
        broadcast=False,
    )
    session = MeetingSession.objects.get(pk=session_id)
    SessionEvent.objects.bulk_create(
        SessionEvent(session=session, seq=seq, kind="anomaly", note="old", raw="x" * 2000)
        for seq in range(2, 302)
    )
    MeetingSession.objects.filter(pk=session_id).update(last_seq=301)
    recorded = record_event(
        session_id=session_id, event=ParticipantJoined(session_id, "Ann", None), broadcast=False
    )
    assert recorded is not None
    return recorded.event


async def test_the_regions_of_a_live_event_are_read_without_the_event_log(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session_id = f"mbsess_frame{uuid.uuid4().hex[:8]}"
    event = await database_sync_to_async(long_meeting)(session_id)
    captured: list[str] = []
    real = selectors.read_live_regions

    def spied(*args: Any, **kwargs: Any) -> Any:
        with CaptureQueriesContext(connection) as queries:
            result = real(*args, **kwargs)
        captured.extend(q["sql"] for q in queries.captured_queries)
        return result

    def whole_page(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a live frame read the whole detail page")

    monkeypatch.setattr(selectors, "read_live_regions", spied)
    monkeypatch.setattr(selectors, "read_detail", whole_page)
    message = HubMessage("event", session_id, event, seq=event["seq"])
    changed = presentation.regions_for([event["kind"]])
    page: Any = SimpleNamespace(session_id=session_id)

    html = await consumers.SessionDetailConsumer._regions(page, [message], changed)

    assert 'id="participants"' in html and "Ann" in html and 'value="302"' in html
    assert captured
    assert not any('"sessions_monitor_sessionevent"."raw"' in sql for sql in captured)


def _record(session_id: str, event: Any) -> HubMessage:
    recorded = record_event(session_id=session_id, event=event, broadcast=False)
    assert recorded is not None
    return HubMessage("event", session_id, recorded.event, seq=recorded.event["seq"])


async def _frame(session_id: str, *messages: HubMessage) -> str:
    """The frame's regions before the timeline (which draws everyone, as it should)."""
    changed = presentation.regions_for(str(m.data["kind"]) for m in messages)
    page: Any = SimpleNamespace(session_id=session_id)
    html = await consumers.SessionDetailConsumer._regions(page, list(messages), changed)
    return html.split('<section id="svg-timeline"')[0]


async def test_joins_and_leaves_re_send_only_the_people_they_concern() -> None:
    session_id = f"mbsess_{uuid.uuid4().hex[:12]}"
    record = database_sync_to_async(_record)
    await record(session_id, StatusChanged(session_id, "active", "joining", None))

    first = await _frame(
        session_id, await record(session_id, ParticipantJoined(session_id, "Ann", None))
    )
    assert '<section id="participants"' in first, (
        "the first person: the lists are not on the page yet"
    )

    bob = await record(session_id, ParticipantJoined(session_id, "Bob", None))
    second = await _frame(session_id, bob)
    assert '<section id="participants"' not in second and "Ann" not in second
    assert 'hx-swap-oob="beforeend:#people-now"' in second and "Bob" in second
    assert 'hx-swap-oob="beforeend:#presence-rows"' in second
    assert 'id="people-count" hx-swap-oob="true">2 now' in second

    ann_left = await record(session_id, ParticipantLeft(session_id, "Ann", None))
    leave = await _frame(session_id, ann_left)
    assert '<section id="participants"' not in leave and "Bob" not in leave
    assert 'hx-swap-oob="delete"' in leave and 'id="presence-' in leave and "Ann" in leave
    assert 'id="people-count" hx-swap-oob="true">1 now' in leave

    bob_left = await record(session_id, ParticipantLeft(session_id, "Bob", None))
    last = await _frame(session_id, bob_left)
    assert '<section id="participants"' in last and "Nobody is in the meeting" in last


async def test_the_first_join_sends_the_whole_region_even_when_read_after_the_next_one() -> None:
    """The frame of a page's first presence is rendered from a read that may already hold
    later joins: the page has no lists yet, so the whole region must go (seen in Chromium as
    htmx:oobErrorNoTarget for #people-now and a participant that never appeared)."""
    session_id = f"mbsess_{uuid.uuid4().hex[:12]}"
    record = database_sync_to_async(_record)
    await record(session_id, StatusChanged(session_id, "active", "joining", None))
    first = await record(session_id, ParticipantJoined(session_id, "Ann", None))
    await record(session_id, ParticipantJoined(session_id, "Bob", None))  # stored before the read

    frame = await _frame(session_id, first)

    assert '<section id="participants"' in frame and 'id="people-now"' in frame
    assert 'hx-swap-oob="beforeend:#people-now"' not in frame
