"""Writes: record upstream events and link states, watch requests. Then broadcast.

Every write runs in one transaction that locks the session row first (`select_for_update`),
so our per-session `seq` is gap-free and strictly increasing even with several relay
processes on PostgreSQL; on SQLite the IMMEDIATE transaction mode serialises writers.
Broadcasting happens only after the commit: what subscribers see is always stored, and a
failed broadcast is logged and counted but never loses the stored event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from sessions_monitor import messages, telemetry
from sessions_monitor.alerts import outbox
from sessions_monitor.db import in_db_thread
from sessions_monitor.models import (
    EmbedRevocation,
    EventKind,
    MeetingSession,
    Presence,
    SessionEvent,
    StreamState,
)
from sessions_monitor.selectors import event_to_dict, isoformat, session_summary
from sessions_monitor.textfit import fit, fit_json
from sessions_monitor.upstream.events import (
    TERMINAL_STATUSES,
    LinkState,
    LinkStateName,
    ParticipantJoined,
    ParticipantLeft,
    StatusChanged,
    StreamClosed,
    Unparseable,
    UpstreamEvent,
)
from sessions_monitor.upstream.ids import validate_session_id

logger = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    session_id: str
    seq: int
    event: dict[str, Any]
    summary: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Change:
    """What one upstream event does to our history, decided before a seq is spent."""

    kind: str
    status: str = ""
    previous_status: str = ""
    participant_name: str = ""
    error_code: str = ""
    error_message: str = ""
    note: str = ""


# --- recording -----------------------------------------------------------------------------


SEEDED_PRESENCE_NOTE = "already in the meeting when MeetingDash started watching"
GAP_JOIN_NOTE = "seen after a gap: joined while MeetingDash was not connected"
GAP_LEAVE_NOTE = "seen after a gap: left while MeetingDash was not connected"


def record_event(
    *,
    session_id: str,
    event: UpstreamEvent,
    broadcast: bool = True,
    seeded: bool = False,
    note: str = "",
) -> RecordedEvent | None:
    """Store one upstream event once, in order. None when it adds nothing (deduplicated).

    `seeded` marks a join taken from the upstream's snapshot of who is present rather than
    from the stream: it is stored only for a name with no join/leave history here yet.
    `note` labels an event we inferred rather than received (presence after a gap).
    """
    validate_session_id(session_id)
    now = timezone.now()
    with transaction.atomic():
        session = _lock_session(session_id)
        change = _fitted(_decide(session, event))
        if change is not None and seeded:
            change = _seeded_join(session, change)
        if change is not None and note:
            change = replace(change, note=note)
        if change is None:
            telemetry.events_deduplicated.inc()
            return None
        stored = _store(session, change, event, now)
        dwell_from = session.status_since
        changed = _apply(session, change, stored, now)
        changed += _raise_alerts(session, change)
        session.save(update_fields=["last_seq", "last_event_at", *changed])
        recorded = RecordedEvent(
            session_id, stored.seq, event_to_dict(stored), session_summary(session)
        )
        if broadcast:
            transaction.on_commit(lambda: broadcast_sync(recorded))
    telemetry.events_recorded.labels(change.kind).inc()
    if change.kind == EventKind.STATUS:
        telemetry.observe_status_change(
            previous=change.previous_status,
            status=change.status,
            dwell_seconds=_seconds_between(dwell_from, session.status_since),
            error_code=change.error_code,
            platform=session.platform,
        )
    timestamp = getattr(event, "timestamp", None)
    if timestamp is not None:
        telemetry.upstream_to_stored.observe(max(0.0, (timezone.now() - timestamp).total_seconds()))
    return recorded


def record_link_state(
    *, session_id: str, state: LinkState, broadcast: bool = True
) -> tuple[RecordedEvent | None, dict[str, Any]]:
    """Update the session's stream state; store a stream note only when the state changes.

    CONNECTING is transient and never noted, and repeated RETRYING (each failed attempt)
    is noted once, so a flapping link does not flood the timeline. Returns the note (or None)
    and the session summary, which is broadcast to `sessions` either way.
    """
    validate_session_id(session_id)
    now = timezone.now()
    with transaction.atomic():
        session = _lock_session(session_id)
        session.stream_state = StreamState(state.state.value)
        session.stream_state_since = now
        failing = state.state in (LinkStateName.RETRYING, LinkStateName.FAILED)
        session.stream_error = fit(state.reason, "stream_error") if failing else ""
        session.stream_error_code = fit(state.error_code, "error_code") if failing else ""
        session.stream_retry_at = (
            now + timedelta(seconds=state.retry_in) if state.retry_in is not None else None
        )
        stored: SessionEvent | None = None
        if state.state != LinkStateName.CONNECTING and _last_noted_state(session) != state.state:
            stored = _store(session, _link_note(state), None, now)
            if _is_lost(session, state):
                outbox.enqueue_session_alert(outbox.LOST, session)
        session.save()
        summary = session_summary(session)
        recorded = (
            None
            if stored is None
            else RecordedEvent(session_id, stored.seq, event_to_dict(stored), summary)
        )
        if broadcast:
            transaction.on_commit(lambda: broadcast_sync(recorded, summary=summary))
    return recorded, summary


async def arecord_event(*, session_id: str, event: UpstreamEvent) -> RecordedEvent | None:
    """The relay's path: store in a worker thread, broadcast from the event loop."""
    recorded = await in_db_thread(record_event)(session_id=session_id, event=event, broadcast=False)
    if recorded is not None:
        await abroadcast(recorded)
    return recorded


async def aseed_presence(*, session_id: str, names: Iterable[str], raw: str = "") -> int:
    """The relay's path for `seed_presence`; returns how many joins it stored."""
    recorded = await in_db_thread(seed_presence)(
        session_id=session_id, names=list(names), raw=raw, broadcast=False
    )
    for item in recorded:
        await abroadcast(item)
    return len(recorded)


async def areconcile_presence(*, session_id: str, names: Iterable[str], raw: str = "") -> int:
    recorded = await in_db_thread(reconcile_presence)(
        session_id=session_id, names=list(names), raw=raw, broadcast=False
    )
    for item in recorded:
        await abroadcast(item)
    return len(recorded)


async def arecord_gap(
    *, session_id: str, started_at: datetime | None, reason: str
) -> RecordedEvent:
    recorded = await in_db_thread(record_gap)(
        session_id=session_id, started_at=started_at, reason=reason, broadcast=False
    )
    await abroadcast(recorded)
    return recorded


async def arecord_link_state(*, session_id: str, state: LinkState) -> RecordedEvent | None:
    recorded, summary = await in_db_thread(record_link_state)(
        session_id=session_id, state=state, broadcast=False
    )
    await abroadcast(recorded, summary=summary)
    return recorded


def _lock_session(session_id: str) -> MeetingSession:
    session = MeetingSession.objects.select_for_update().filter(pk=session_id).first()
    if session is None:
        MeetingSession.objects.get_or_create(session_id=session_id)
        session = MeetingSession.objects.select_for_update().get(pk=session_id)
    return session


def _decide(session: MeetingSession, event: UpstreamEvent) -> _Change | None:
    if isinstance(event, Unparseable):
        return _Change(
            EventKind.ANOMALY, note=f"unparseable {event.event_name!r} event: {event.reason}"
        )
    if isinstance(event, StreamClosed):
        if session.events.filter(kind=EventKind.CLOSE).exists():
            return None
        return _Change(EventKind.CLOSE, note=event.reason)
    if event.session_id and event.session_id != session.session_id:
        return _Change(EventKind.ANOMALY, note=f"event for another session {event.session_id!r}")
    if isinstance(event, StatusChanged):
        return _decide_status(session, event)
    # Fitted before matching presence, so a long name matches its own earlier join.
    name = fit(event.participant_name.strip(), "participant_name")
    if not name:
        return _Change(EventKind.ANOMALY, note="participant event without a name")
    present = session.presences.filter(participant_name=name, left_at__isnull=True).exists()
    if isinstance(event, ParticipantJoined) and session.status in TERMINAL_STATUSES:
        return _Change(
            EventKind.ANOMALY,
            participant_name=name,
            note=f"join after terminal {session.status!r}; not counted as present",
        )
    if isinstance(event, ParticipantJoined):
        return None if present else _Change(EventKind.JOINED, participant_name=name)
    assert isinstance(event, ParticipantLeft)
    if present:
        return _Change(EventKind.LEFT, participant_name=name)
    if session.presences.filter(participant_name=name).exists():
        return None  # a repeat, or after the meeting's end closed their interval
    # Kept, not dropped: most likely the join was missed in a gap.
    return _Change(
        EventKind.ANOMALY,
        participant_name=name,
        note="left without ever being seen joining (the join was probably missed in a gap)",
    )


def seed_presence(
    *, session_id: str, names: Iterable[str], raw: str = "", broadcast: bool = True
) -> list[RecordedEvent]:
    """Record the participants the upstream says are present but whose join we never saw
    (we started watching mid-meeting). The stream is fresher than any snapshot, so a name
    we already have join/leave events for is left alone."""
    recorded = []
    for name in dict.fromkeys(name.strip() for name in names if name.strip()):
        event = ParticipantJoined(session_id, name, timestamp=None, raw=raw)
        stored = record_event(session_id=session_id, event=event, broadcast=broadcast, seeded=True)
        if stored is not None:
            recorded.append(stored)
    return recorded


def reconcile_presence(
    *, session_id: str, names: Iterable[str], raw: str = "", broadcast: bool = True
) -> list[RecordedEvent]:
    """After a gap: make who is present here what the upstream says, both ways. Joins and
    leaves the gap hid are stored as such, noted "seen after a gap"."""
    # Fitted as stored names are, or a long name would never match its own presence.
    upstream = list(
        dict.fromkeys(fit(name.strip(), "participant_name") for name in names if name.strip())
    )
    here = set(
        Presence.objects.filter(session_id=session_id, left_at__isnull=True).values_list(
            "participant_name", flat=True
        )
    )
    changes: list[tuple[UpstreamEvent, str]] = [
        (ParticipantJoined(session_id, name, timestamp=None, raw=raw), GAP_JOIN_NOTE)
        for name in upstream
        if name not in here
    ]
    changes += [
        (ParticipantLeft(session_id, name, timestamp=None, raw=raw), GAP_LEAVE_NOTE)
        for name in sorted(here - set(upstream))
    ]
    recorded = []
    for event, note in changes:
        stored = record_event(session_id=session_id, event=event, broadcast=broadcast, note=note)
        if stored is not None:
            recorded.append(stored)
    return recorded


def record_gap(
    *,
    session_id: str,
    started_at: datetime | None,
    reason: str,
    broadcast: bool = True,
) -> RecordedEvent:
    """Say that no upstream stream was connected from `started_at` (None: unknown) to now,
    so events the upstream sent then may be missing (it has no replay)."""
    validate_session_id(session_id)
    now = timezone.now()
    with transaction.atomic():
        session = _lock_session(session_id)
        since = "an unknown time" if started_at is None else isoformat(started_at)
        change = _Change(
            EventKind.GAP,
            note=f"no upstream connection since {since} ({reason}): events may be missing",
        )
        stored = _store(session, change, None, now)
        stored.gap_started_at = started_at
        stored.save(update_fields=["gap_started_at"])
        session.save(update_fields=["last_seq", "last_event_at"])
        recorded = RecordedEvent(
            session_id, stored.seq, event_to_dict(stored), session_summary(session)
        )
        if broadcast:
            transaction.on_commit(lambda: broadcast_sync(recorded))
    telemetry.gaps.inc()
    telemetry.events_recorded.labels(EventKind.GAP).inc()
    if started_at is not None:
        telemetry.gap_seconds.inc(max(0.0, (now - started_at).total_seconds()))
    return recorded


RAW_KEPT_ON_REFUSAL = 10_000


def record_anomaly(
    *, session_id: str, note: str, raw: str = "", broadcast: bool = True
) -> RecordedEvent:
    """Store a note of something that went wrong with this session's data (kept in order)."""
    validate_session_id(session_id)
    now = timezone.now()
    with transaction.atomic():
        session = _lock_session(session_id)
        stored = _store(session, _Change(EventKind.ANOMALY, note=note), None, now)
        stored.raw = raw[:RAW_KEPT_ON_REFUSAL]
        stored.save(update_fields=["raw"])
        session.save(update_fields=["last_seq", "last_event_at"])
        recorded = RecordedEvent(
            session_id, stored.seq, event_to_dict(stored), session_summary(session)
        )
        if broadcast:
            transaction.on_commit(lambda: broadcast_sync(recorded))
    telemetry.events_recorded.labels(EventKind.ANOMALY).inc()
    return recorded


async def arecord_anomaly(*, session_id: str, note: str, raw: str = "") -> RecordedEvent:
    recorded = await in_db_thread(record_anomaly)(
        session_id=session_id, note=note, raw=raw, broadcast=False
    )
    await abroadcast(recorded)
    return recorded


def claim_stream(session_id: str, owner: str, ttl_seconds: float) -> bool:
    """Scaled mode: the database's half of "who streams this session". The Redis lease is
    the fast guard, but Redis may restart and forget every lease; a relay takes a session
    only when no other relay's claim on it is still current, so a relay that streams
    through a Redis restart keeps its sessions. (Relay hosts' clocks must agree to well
    within the lease time: NTP.)"""
    now = timezone.now()
    claim = {"relay_owner": owner, "relay_claimed_until": now + timedelta(seconds=ttl_seconds)}
    claimable = Q(relay_owner__in=["", owner]) | Q(relay_claimed_until__isnull=True)
    claimable |= Q(relay_claimed_until__lt=now)
    if MeetingSession.objects.filter(claimable, pk=session_id).update(**claim):
        return True
    try:
        with transaction.atomic():
            MeetingSession.objects.create(session_id=session_id, **claim)
    except IntegrityError:
        return False  # it exists: another relay's claim holds it
    return True


def renew_stream_claims(session_ids: Iterable[str], owner: str, ttl_seconds: float) -> int:
    """One UPDATE for every session this relay streams; those another relay claimed since
    (after this relay's claim lapsed) are left to it."""
    ids = list(session_ids)
    if not ids:
        return 0
    until = timezone.now() + timedelta(seconds=ttl_seconds)
    return MeetingSession.objects.filter(pk__in=ids, relay_owner=owner).update(
        relay_claimed_until=until
    )


def release_stream_claim(session_id: str, owner: str) -> None:
    """Hand a session back at once (stop, unwatch, hand-over), not after the claim lapses."""
    MeetingSession.objects.filter(pk=session_id, relay_owner=owner).update(
        relay_owner="", relay_claimed_until=None
    )


def mark_streams_alive(session_ids: Iterable[str]) -> int:
    """The relay's "still live" for the sessions it streams: one UPDATE for all of them.
    After a crash or a take-over, a gap then starts no earlier than this."""
    ids = list(session_ids)
    if not ids:
        return 0
    return MeetingSession.objects.filter(pk__in=ids).update(stream_alive_at=timezone.now())


def _seeded_join(session: MeetingSession, change: _Change) -> _Change | None:
    if change.kind != EventKind.JOINED:
        return None
    known = session.events.filter(
        participant_name=change.participant_name, kind__in=[EventKind.JOINED, EventKind.LEFT]
    ).exists()
    return None if known else replace(change, note=SEEDED_PRESENCE_NOTE)


def _fitted(change: _Change | None) -> _Change | None:
    """Every text of the change cut to its column (textfit): nothing is refused for size."""
    if change is None:
        return None
    return replace(
        change,
        status=fit(change.status, "status"),
        previous_status=fit(change.previous_status, "status"),
        participant_name=fit(change.participant_name, "participant_name"),
        error_code=fit(change.error_code, "error_code"),
        error_message=fit(change.error_message, "error_message"),
    )


def _decide_status(session: MeetingSession, event: StatusChanged) -> _Change | None:
    new, current = fit(event.status.strip(), "status"), session.status
    if not new:
        return _Change(EventKind.ANOMALY, note="status event without a status")
    if new == current:
        # The snapshot a new connection starts with, or the upstream repeating itself.
        return None
    if current in TERMINAL_STATUSES:
        return _Change(
            EventKind.ANOMALY,
            status=new,
            previous_status=current,
            note=f"status {new!r} after terminal {current!r}; status kept",
        )
    return _Change(
        EventKind.STATUS,
        status=new,
        previous_status=current,
        error_code=event.error_code or "",
        error_message=event.error_message or "",
    )


def _store(
    session: MeetingSession, change: _Change, event: UpstreamEvent | None, now: datetime
) -> SessionEvent:
    session.last_seq += 1
    session.last_event_at = now
    timestamp = getattr(event, "timestamp", None)
    return SessionEvent.objects.create(
        session=session,
        seq=session.last_seq,
        kind=change.kind,
        status=change.status,
        previous_status=change.previous_status,
        participant_name=change.participant_name,
        error_code=change.error_code,
        error_message=change.error_message,
        upstream_timestamp=timestamp,
        received_at=now,
        raw=fit(getattr(event, "raw", "") or "", "raw"),
        note=fit(change.note, "note"),
    )


def _apply(
    session: MeetingSession, change: _Change, stored: SessionEvent, now: datetime
) -> list[str]:
    """Fold a stored event into the session row and presence intervals; returns the
    session fields it changed (the UPDATE then writes only those: measurably cheaper)."""
    at = stored.upstream_timestamp or now
    changed = []
    if session.started_at is None:
        session.started_at = at
        changed.append("started_at")
    if change.kind == EventKind.STATUS:
        session.previous_status = change.previous_status
        session.status = change.status
        session.status_since = at
        changed += ["previous_status", "status", "status_since"]
        if change.status == "active" and session.in_meeting_at is None:
            session.in_meeting_at = at
            changed.append("in_meeting_at")
        if change.status == "failed":
            session.failed_from_status = change.previous_status
            session.error_code = change.error_code
            session.error_message = change.error_message
            changed += ["failed_from_status", "error_code", "error_message"]
        if change.status in TERMINAL_STATUSES:
            session.ended_at = at
            changed.append("ended_at")
            changed += _close_presences(session, at, stored.seq)
    elif change.kind == EventKind.JOINED:
        Presence.objects.create(
            session=session,
            participant_name=change.participant_name,
            joined_at=at,
            join_seq=stored.seq,
        )
        # _decide saw no open interval for this name, so exactly one more is present.
        session.participants_present += 1
        session.peak_participants = max(session.peak_participants, session.participants_present)
        changed += ["participants_present", "peak_participants"]
    elif change.kind == EventKind.LEFT:
        Presence.objects.filter(
            session=session, participant_name=change.participant_name, left_at__isnull=True
        ).update(left_at=at, leave_seq=stored.seq)
        session.participants_present = max(0, session.participants_present - 1)
        changed.append("participants_present")
    return changed


def _seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    return None if start is None or end is None else (end - start).total_seconds()


def _raise_alerts(session: MeetingSession, change: _Change) -> list[str]:
    """In the event's transaction (the outbox): a failure, and the end of a stuck episode."""
    if change.kind != EventKind.STATUS:
        return []
    changed = []
    if session.stuck_since is not None:
        outbox.enqueue_resolved(session, episode_at=session.stuck_since)
        session.stuck_since = None
        changed.append("stuck_since")
    if change.status == "failed":
        outbox.enqueue_session_alert(outbox.FAILED, session)
    return changed


def _is_lost(session: MeetingSession, state: LinkState) -> bool:
    """The upstream answered that it does not know a session we thought was running."""
    return (
        state.state is LinkStateName.FAILED
        and state.reason == "not_found"
        and session.status not in TERMINAL_STATUSES
    )


def _close_presences(session: MeetingSession, at: datetime, seq: int) -> list[str]:
    """A meeting that ended has nobody left in it: close the open intervals then."""
    if not session.participants_present:
        return []
    Presence.objects.filter(session=session, left_at__isnull=True).update(left_at=at, leave_seq=seq)
    session.participants_present = 0
    return ["participants_present"]


def _last_noted_state(session: MeetingSession) -> str | None:
    return (
        session.events.filter(kind=EventKind.STREAM)
        .order_by("-seq")
        .values_list("status", flat=True)
        .first()
    )


def _link_note(state: LinkState) -> _Change:
    text = {
        LinkStateName.LIVE: "upstream stream live",
        LinkStateName.RETRYING: "upstream stream lost",
        LinkStateName.ENDED: "upstream stream ended",
        LinkStateName.FAILED: "upstream stream failed",
    }.get(state.state, state.state.value)
    if state.reason:
        text += f": {state.reason}"
    if state.retry_in is not None:
        text += f" (retrying in {state.retry_in:.1f} s)"
    return _Change(
        EventKind.STREAM,
        status=state.state.value,
        error_code=state.error_code or "",
        note=text,
    )


# --- broadcasting --------------------------------------------------------------------------


BROADCAST_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0)
_broadcast_retries: set[asyncio.Task[None]] = set()


async def abroadcast(
    recorded: RecordedEvent | None, *, summary: dict[str, Any] | None = None, retry: bool = True
) -> bool:
    """Send a stored event to `session.<id>` and the summary to `sessions`. Never raises.

    A failed send (a Redis restart leaves stale pooled connections) is retried in the
    background for about 40 s, so even the last event of a session arrives; out of order
    is fine, the hub orders by seq and resyncs its subscribers across any hole meanwhile.
    """
    summary = summary if summary is not None else (recorded.summary if recorded else None)
    if await _send_once(recorded, summary):
        return True
    telemetry.broadcast_failures.inc()
    if not retry:
        return False
    task = asyncio.get_running_loop().create_task(_retry_broadcast(recorded, summary))
    _broadcast_retries.add(task)
    task.add_done_callback(_broadcast_retries.discard)
    return False


async def _send_once(recorded: RecordedEvent | None, summary: dict[str, Any] | None) -> bool:
    layer = get_channel_layer()
    try:
        assert layer is not None, "no channel layer configured"
        if recorded is not None:
            message = messages.event_message(
                session_id=recorded.session_id,
                seq=recorded.seq,
                event=recorded.event,
                session=recorded.summary,
            )
            await layer.group_send(messages.session_group(recorded.session_id), message)
        if summary is not None:
            await layer.group_send(messages.SESSIONS_GROUP, messages.summary_message(summary))
    except Exception as exc:
        logger.warning(
            "broadcast failed (%s); the event is stored and the send is retried",
            type(exc).__name__,
        )
        return False
    telemetry.broadcasts.inc()
    return True


async def _retry_broadcast(recorded: RecordedEvent | None, summary: dict[str, Any] | None) -> None:
    for delay in BROADCAST_RETRY_DELAYS:
        await asyncio.sleep(delay)
        if await _send_once(recorded, summary):
            return
    telemetry.broadcasts_abandoned.inc()
    logger.error("broadcast abandoned after retries; subscribers resync on the next event")


def broadcast_sync(
    recorded: RecordedEvent | None, *, summary: dict[str, Any] | None = None
) -> bool:
    # No background retry here: this loop ends with the call. The hub's seq check resyncs
    # subscribers on the next event instead.
    return bool(async_to_sync(abroadcast)(recorded, summary=summary, retry=False))


# --- watching ------------------------------------------------------------------------------


def mark_watched(session_id: str, watched: bool = True) -> bool:
    """Set the session's watched flag; True when it changed. A fresh watch retries a
    permanently failed link (an operator asked again)."""
    validate_session_id(session_id)
    session, created = MeetingSession.objects.get_or_create(session_id=session_id)
    retry_failed = watched and session.stream_state == StreamState.FAILED
    if session.watched == watched and not created and not retry_failed:
        return False
    updates: dict[str, Any] = {"watched": watched}
    if retry_failed or not watched:
        updates["stream_state"] = StreamState.IDLE
    MeetingSession.objects.filter(pk=session_id).update(**updates)
    return True


def request_watch(session_id: str) -> None:
    """Mark the session watched and tell the relay (also picked up by its periodic rescan)."""
    mark_watched(session_id, True)
    _notify_relay_sync(messages.watch_message(session_id, watched=True))


def request_unwatch(session_id: str) -> None:
    mark_watched(session_id, False)
    _notify_relay_sync(messages.watch_message(session_id, watched=False))


async def arequest_watch(session_id: str) -> None:
    await database_sync_to_async(mark_watched)(session_id, True)
    await _notify_relay(messages.watch_message(session_id, watched=True))


async def _notify_relay(message: messages.WatchMessage) -> None:
    layer = get_channel_layer()
    try:
        assert layer is not None
        await layer.send(messages.RELAY_CHANNEL, message)
    except Exception as exc:
        # The relay's rescan of watched sessions picks it up anyway.
        logger.warning("could not notify the relay (%s); it will see the flag on rescan", exc)


def _notify_relay_sync(message: messages.WatchMessage) -> None:
    async_to_sync(_notify_relay)(message)


def upsert_session_metadata(
    session_id: str,
    *,
    bot_name: str = "",
    meeting_link: str = "",
    platform: str = "",
    created_at: datetime | None = None,
    raw: dict[str, Any] | None = None,
) -> MeetingSession:
    """Store what the upstream's REST API says about a session (never its status: events do)."""
    validate_session_id(session_id)
    with transaction.atomic():
        session = _lock_session(session_id)
        session.bot_name = fit(bot_name, "bot_name") or session.bot_name
        session.meeting_link = fit(meeting_link, "meeting_link") or session.meeting_link
        session.platform = fit(platform, "platform") or session.platform
        if created_at is not None:
            session.started_at = created_at
        if raw is not None:
            session.raw = fit_json(raw)
        session.save(update_fields=["bot_name", "meeting_link", "platform", "started_at", "raw"])
    return session


# --- widget links ----------------------------------------------------------------------------


def revoke_widget_links(*, session_ids: Iterable[str] | None, user: Any = None) -> int:
    """Make widget links issued until now invalid: of these sessions, or (None) of every
    session. Open widgets close within one keepalive interval. Returns the rows written."""
    now = timezone.now()
    by = user if getattr(user, "pk", None) else None
    if session_ids is None:
        EmbedRevocation.objects.create(session=None, revoked_at=now, revoked_by=by)
        return 1
    known = MeetingSession.objects.filter(pk__in=list(session_ids)).values_list("pk", flat=True)
    rows = [EmbedRevocation(session_id=sid, revoked_at=now, revoked_by=by) for sid in known]
    EmbedRevocation.objects.bulk_create(rows)
    return len(rows)
