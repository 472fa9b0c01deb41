from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from channels.db import database_sync_to_async
from django.db import close_old_connections
from django.utils import timezone

from sessions_monitor import selectors, services
from sessions_monitor.hub import Hub
from sessions_monitor.models import EventKind, MeetingSession, Presence, SessionEvent, StreamState
from sessions_monitor.services import record_event, record_link_state
from sessions_monitor.upstream.errors import InvalidSessionId
from sessions_monitor.upstream.events import (
    LinkState,
    LinkStateName,
    ParticipantJoined,
    ParticipantLeft,
    StatusChanged,
    StreamClosed,
    Unparseable,
)
from tests.support import make_session, service_missing

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)


def sid() -> str:
    return f"mbsess_svc{uuid.uuid4().hex[:10]}"


def status(session_id: str, value: str, minute: int = 0, **kw) -> StatusChanged:
    return StatusChanged(
        session_id=session_id,
        status=value,
        previous_status=value,  # the upstream's own (untrusted) previous status
        timestamp=T0 + timedelta(minutes=minute),
        raw=f'{{"status":"{value}"}}',
        **kw,
    )


def joined(session_id: str, name: str, minute: int = 0) -> ParticipantJoined:
    return ParticipantJoined(session_id, name, T0 + timedelta(minutes=minute))


def left(session_id: str, name: str, minute: int = 0) -> ParticipantLeft:
    return ParticipantLeft(session_id, name, T0 + timedelta(minutes=minute))


def kinds(session_id: str) -> list[tuple[int, str, str, str]]:
    return list(
        SessionEvent.objects.filter(session_id=session_id)
        .order_by("seq")
        .values_list("seq", "kind", "status", "previous_status")
    )


pytestmark = pytest.mark.django_db(transaction=True)


def test_it_derives_the_previous_status_from_our_own_history() -> None:
    session_id = sid()
    for minute, value in enumerate(["joining", "active", "completed"]):
        record_event(session_id=session_id, event=status(session_id, value, minute))

    assert kinds(session_id) == [
        (1, "status", "joining", ""),
        (2, "status", "active", "joining"),
        (3, "status", "completed", "active"),
    ]
    session = MeetingSession.objects.get(pk=session_id)
    assert (session.status, session.previous_status, session.last_seq) == (
        "completed",
        "active",
        3,
    )
    assert session.ended_at == T0 + timedelta(minutes=2)
    assert session.status_since == session.ended_at


def test_it_does_not_store_a_repeated_status_or_the_reconnect_snapshot() -> None:
    session_id = sid()
    assert record_event(session_id=session_id, event=status(session_id, "joining")) is not None
    assert record_event(session_id=session_id, event=status(session_id, "active", 1)) is not None
    # A reconnect starts with the current status again: not a new event.
    assert record_event(session_id=session_id, event=status(session_id, "active", 1)) is None
    assert record_event(session_id=session_id, event=status(session_id, "active", 5)) is None

    assert [row[2] for row in kinds(session_id)] == ["joining", "active"]
    assert MeetingSession.objects.get(pk=session_id).last_seq == 2


def test_it_keeps_a_terminal_status_and_records_a_late_one_as_anomaly() -> None:
    session_id = sid()
    record_event(session_id=session_id, event=status(session_id, "active"))
    record_event(session_id=session_id, event=status(session_id, "completed", 1))
    recorded = record_event(session_id=session_id, event=status(session_id, "active", 2))

    assert recorded is not None and recorded.event["kind"] == EventKind.ANOMALY
    assert "after terminal" in recorded.event["note"]
    session = MeetingSession.objects.get(pk=session_id)
    assert session.status == "completed"
    assert session.ended_at == T0 + timedelta(minutes=1)


def test_it_records_failure_details_and_the_status_it_failed_from() -> None:
    session_id = sid()
    record_event(session_id=session_id, event=status(session_id, "joining"))
    record_event(
        session_id=session_id,
        event=status(session_id, "failed", 1, error_code="MEETING_NOT_FOUND", error_message="no"),
    )
    session = MeetingSession.objects.get(pk=session_id)
    assert (session.failed_from_status, session.error_code, session.error_message) == (
        "joining",
        "MEETING_NOT_FOUND",
        "no",
    )
    event = SessionEvent.objects.get(session_id=session_id, seq=2)
    assert (event.error_code, event.previous_status) == ("MEETING_NOT_FOUND", "joining")


def test_it_keeps_presence_intervals_and_a_rejoin_is_a_new_interval() -> None:
    session_id = sid()
    record_event(session_id=session_id, event=status(session_id, "active"))
    assert record_event(session_id=session_id, event=joined(session_id, "Alice", 1))
    assert record_event(session_id=session_id, event=joined(session_id, "Alice", 1)) is None
    assert record_event(session_id=session_id, event=joined(session_id, "Bob", 2))
    assert record_event(session_id=session_id, event=left(session_id, "Alice", 3))
    assert record_event(session_id=session_id, event=left(session_id, "Alice", 3)) is None
    assert record_event(session_id=session_id, event=joined(session_id, "Alice", 4))

    intervals = list(
        Presence.objects.filter(session_id=session_id)
        .order_by("join_seq")
        .values_list("participant_name", "join_seq", "leave_seq")
    )
    assert intervals == [("Alice", 2, 4), ("Bob", 3, None), ("Alice", 5, None)]
    session = MeetingSession.objects.get(pk=session_id)
    assert (session.participants_present, session.peak_participants) == (2, 2)
    joins = SessionEvent.objects.filter(session_id=session_id, kind=EventKind.JOINED)
    assert joins.count() == 3
    assert {join.status for join in joins} == {""}  # join/leave carry no status


def test_it_stores_close_once() -> None:
    session_id = sid()
    record_event(session_id=session_id, event=status(session_id, "completed"))
    assert record_event(session_id=session_id, event=StreamClosed("session_ended")) is not None
    assert record_event(session_id=session_id, event=StreamClosed("session_ended")) is None
    assert [row[1] for row in kinds(session_id)] == ["status", "close"]


def test_it_keeps_unparseable_events_as_anomalies_with_their_raw_text() -> None:
    session_id = sid()
    recorded = record_event(
        session_id=session_id, event=Unparseable("status", "{not json", "invalid JSON")
    )
    assert recorded is not None
    stored = SessionEvent.objects.get(session_id=session_id)
    assert (stored.kind, stored.raw) == (EventKind.ANOMALY, "{not json")
    assert "invalid JSON" in stored.note


def test_it_rejects_a_malformed_session_id() -> None:
    with pytest.raises(InvalidSessionId):
        record_event(session_id="abc", event=status("abc", "active"))
    with pytest.raises(InvalidSessionId):
        record_event(session_id="mbsess_x\n", event=status("mbsess_x\n", "active"))


def test_it_notes_stream_state_changes_without_flooding_the_timeline() -> None:
    session_id = sid()
    states = [
        LinkState(LinkStateName.CONNECTING),
        LinkState(LinkStateName.LIVE),
        LinkState(LinkStateName.RETRYING, "connection dropped", retry_in=1.0),
        LinkState(LinkStateName.CONNECTING),
        LinkState(LinkStateName.RETRYING, "HTTP 503", retry_in=2.0),
        LinkState(LinkStateName.CONNECTING),
        LinkState(LinkStateName.LIVE),
        LinkState(LinkStateName.LIVE),
    ]
    for state in states:
        record_link_state(session_id=session_id, state=state)

    notes = list(
        SessionEvent.objects.filter(session_id=session_id, kind=EventKind.STREAM)
        .order_by("seq")
        .values_list("status", flat=True)
    )
    assert notes == ["live", "retrying", "live"]
    session = MeetingSession.objects.get(pk=session_id)
    assert session.stream_state == StreamState.LIVE
    assert session.stream_error == ""


def test_it_stores_a_permanent_failure_with_its_code() -> None:
    session_id = sid()
    note, summary = record_link_state(
        session_id=session_id,
        state=LinkState(LinkStateName.FAILED, "not found upstream", error_code="SESSION_NOT_FOUND"),
    )
    assert note is not None and note.event["error_code"] == "SESSION_NOT_FOUND"
    assert summary["stream_state"] == "failed"
    assert summary["stream_error_code"] == "SESSION_NOT_FOUND"


@pytest.mark.postgres
def test_seq_is_gap_free_under_concurrent_writers() -> None:
    from django.db import connection

    if connection.vendor != "postgresql":
        service_missing("needs DATABASE_URL=postgres://… (row locks under concurrent writers)")
    session_id = sid()
    record_event(session_id=session_id, event=status(session_id, "active"))
    errors: list[BaseException] = []

    def writer(prefix: str) -> None:
        try:
            for i in range(15):
                record_event(session_id=session_id, event=joined(session_id, f"{prefix}{i}"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=writer, args=(p,)) for p in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    seqs = list(
        SessionEvent.objects.filter(session_id=session_id)
        .order_by("seq")
        .values_list("seq", flat=True)
    )
    assert seqs == list(range(1, 62))
    assert MeetingSession.objects.get(pk=session_id).participants_present == 60


async def test_it_broadcasts_stored_events_to_the_session_and_the_sessions_groups(
    fresh_channel_layer,
) -> None:
    session_id = sid()
    hub = Hub(fresh_channel_layer)
    events = await hub.subscribe(session_id)
    summaries = await hub.subscribe(None)

    recorded = await services.arecord_event(
        session_id=session_id, event=status(session_id, "active")
    )
    assert recorded is not None
    message = await asyncio.wait_for(events.get(), 5)
    assert (message.kind, message.seq, message.data["status"]) == ("event", 1, "active")
    # The session after the event travels with it, and the stored event with its raw text.
    assert message.session is not None
    assert (message.session["status"], message.session["last_seq"]) == ("active", 1)
    assert message.data["raw"] == '{"status":"active"}'
    summary = await asyncio.wait_for(summaries.get(), 5)
    assert (summary.session_id, summary.data["status"], summary.data["last_seq"]) == (
        session_id,
        "active",
        1,
    )
    # A deduplicated event is not broadcast: the next message is the next new event's.
    assert (
        await services.arecord_event(session_id=session_id, event=status(session_id, "active"))
        is None
    )
    assert await services.arecord_event(
        session_id=session_id, event=status(session_id, "recording", minute=1)
    )
    message = await asyncio.wait_for(events.get(), 5)
    assert (message.seq, message.data["status"]) == (2, "recording")
    events.close()
    summaries.close()


def failures() -> float:
    from sessions_monitor.telemetry import REGISTRY

    return REGISTRY.get_sample_value("meetingdash_broadcast_failures_total") or 0.0


async def test_a_broadcast_failure_never_loses_the_stored_event(fresh_channel_layer) -> None:
    session_id = sid()

    async def broken_group_send(group: str, message: dict) -> None:
        raise ConnectionError("layer down")

    fresh_channel_layer.group_send = broken_group_send
    before = failures()
    recorded = await services.arecord_event(
        session_id=session_id, event=status(session_id, "active")
    )

    assert recorded is not None
    assert failures() == before + 1
    assert await SessionEvent.objects.filter(session_id=session_id).acount() == 1


def test_the_sync_path_broadcasts_after_commit(sync_channel_layer) -> None:
    from asgiref.sync import async_to_sync

    session_id = sid()
    received: list[dict] = []

    async def scenario() -> None:
        channel = await sync_channel_layer.new_channel()
        await sync_channel_layer.group_add(f"session.{session_id}", channel)
        await asyncio.to_thread(
            record_event, session_id=session_id, event=status(session_id, "joining")
        )
        received.append(await asyncio.wait_for(sync_channel_layer.receive(channel), 5))

    async_to_sync(scenario)()
    assert received[0]["type"] == "session.event"
    assert received[0]["seq"] == 1


def test_watch_flags_and_metadata() -> None:
    session_id = sid()
    assert services.mark_watched(session_id) is True
    assert services.mark_watched(session_id) is False
    services.upsert_session_metadata(
        session_id, bot_name="Buddy", platform="zoom", meeting_link="https://zoom.us/j/1"
    )
    session = MeetingSession.objects.get(pk=session_id)
    assert (session.watched, session.bot_name, session.platform) == (True, "Buddy", "zoom")
    # A fresh watch request retries a permanently failed link.
    MeetingSession.objects.filter(pk=session_id).update(stream_state=StreamState.FAILED)
    assert services.mark_watched(session_id) is True
    assert MeetingSession.objects.get(pk=session_id).stream_state == StreamState.IDLE


async def test_a_lost_broadcast_reaches_subscribers_through_a_resync(fresh_channel_layer) -> None:
    from sessions_monitor.selectors import events_after

    session_id = sid()
    subscription = await Hub(fresh_channel_layer).subscribe(session_id)
    working_group_send = fresh_channel_layer.group_send

    async def failing_once(group: str, message: dict) -> None:
        fresh_channel_layer.group_send = working_group_send
        raise ConnectionError("layer hiccup")

    await services.arecord_event(session_id=session_id, event=status(session_id, "joining"))
    fresh_channel_layer.group_send = failing_once
    await services.arecord_event(session_id=session_id, event=status(session_id, "active", 1))
    await services.arecord_event(session_id=session_id, event=status(session_id, "completed", 2))

    seen: int | None = 0
    while (message := await asyncio.wait_for(subscription.get(), 5)).kind != "resync":
        seen = message.seq  # event 1, unless the resync already replaced it in the queue
    missed = await database_sync_to_async(events_after)(session_id, seen or 0)
    assert [e["status"] for e in missed][-2:] == ["active", "completed"]
    subscription.close()


def test_the_end_of_a_meeting_closes_open_presence_intervals() -> None:
    session_id = sid()
    record_event(session_id=session_id, event=status(session_id, "active"))
    record_event(session_id=session_id, event=joined(session_id, "Alice", 1))
    record_event(session_id=session_id, event=joined(session_id, "Bob", 2))
    record_event(
        session_id=session_id,
        event=status(session_id, "failed", 3, error_code="REMOVED_BY_HOST", error_message="x"),
    )

    open_intervals = Presence.objects.filter(session_id=session_id, left_at__isnull=True)
    assert not open_intervals.exists()
    assert set(
        Presence.objects.filter(session_id=session_id).values_list("left_at", "leave_seq")
    ) == {(T0 + timedelta(minutes=3), 4)}
    session = MeetingSession.objects.get(pk=session_id)
    assert (session.participants_present, session.peak_participants) == (0, 2)
    # A late leave adds nothing; a late join is kept as an anomaly, not as presence.
    assert record_event(session_id=session_id, event=left(session_id, "Bob", 4)) is None
    late = record_event(session_id=session_id, event=joined(session_id, "Carol", 5))
    assert late is not None and late.event["kind"] == EventKind.ANOMALY
    assert MeetingSession.objects.get(pk=session_id).participants_present == 0


# --- relay claims (scaled mode) --------------------------------------------------------------


def test_a_claim_keeps_other_relays_off_until_it_lapses_or_is_released() -> None:
    session_id = make_session("mbsess_claimed00001").session_id
    assert services.claim_stream(session_id, "relay-a", 30)
    assert services.claim_stream(session_id, "relay-a", 30), "a relay may claim again"
    assert not services.claim_stream(session_id, "relay-b", 30)
    assert selectors.watched_sessions_to_follow("relay-b") == []
    assert selectors.watched_sessions_to_follow("relay-a") == [session_id]

    services.release_stream_claim(session_id, "relay-b")  # not its claim: nothing changes
    assert not services.claim_stream(session_id, "relay-b", 30)
    services.release_stream_claim(session_id, "relay-a")
    assert services.claim_stream(session_id, "relay-b", 30)

    MeetingSession.objects.filter(pk=session_id).update(
        relay_claimed_until=timezone.now() - timedelta(seconds=1)
    )
    assert selectors.watched_sessions_to_follow("relay-a") == [session_id], "lapsed"
    assert services.renew_stream_claims([session_id], "relay-a", 30) == 0, "not a's to renew"
    assert services.claim_stream(session_id, "relay-a", 30)
    assert services.renew_stream_claims([session_id], "relay-a", 30) == 1


def test_a_claim_on_a_session_not_stored_yet_creates_it() -> None:
    assert services.claim_stream("mbsess_claimnew0001", "relay-a", 30)
    assert not services.claim_stream("mbsess_claimnew0001", "relay-b", 30)
    row = MeetingSession.objects.get(pk="mbsess_claimnew0001")
    assert row.relay_owner == "relay-a"
