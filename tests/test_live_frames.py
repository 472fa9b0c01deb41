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
from sessions_monitor.upstream import ParticipantJoined, StatusChanged

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

    html = await consumers.SessionDetailConsumer._regions(page, message, changed)

    assert 'id="participants"' in html and "Ann" in html and 'value="302"' in html
    assert captured
    assert not any('"sessions_monitor_sessionevent"."raw"' in sql for sql in captured)
