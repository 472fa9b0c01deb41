"""Reads for pages, admin, streams and health. Each returns plain data (dicts, lists,
dataclasses), never lazy querysets, so async code can call them via `database_sync_to_async`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import Count, Q

from sessions_monitor.models import (
    TERMINAL_STATUSES,
    EventKind,
    MeetingSession,
    SessionEvent,
    StreamState,
)

# Kinds that exist in the upstream's contract and so go out on our re-served stream.
STREAMED_KINDS = frozenset(
    {EventKind.STATUS, EventKind.JOINED, EventKind.LEFT, EventKind.CLOSE, EventKind.GAP}
)


def isoformat(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, the upstream's own timestamp style."""
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def event_to_dict(event: SessionEvent) -> dict[str, Any]:
    """The plain form of a stored event: broadcast payload, selector row, stream source."""
    return {
        "seq": event.seq,
        "kind": event.kind,
        "status": event.status,
        "previous_status": event.previous_status,
        "participant_name": event.participant_name,
        "error_code": event.error_code,
        "error_message": event.error_message,
        "timestamp": isoformat(event.upstream_timestamp),
        "upstream_timestamp": isoformat(event.upstream_timestamp),
        "received_at": isoformat(event.received_at),
        "note": event.note,
        "raw": event.raw,
        "gap_started_at": isoformat(event.gap_started_at),
    }


def session_summary(session: MeetingSession) -> dict[str, Any]:
    """Fields of one session that lists and badges show; also the `sessions.summary` body."""
    return {
        "session_id": session.session_id,
        "bot_name": session.bot_name,
        "platform": session.platform,
        "meeting_link": session.meeting_link,
        "status": session.status,
        "previous_status": session.previous_status,
        "status_since": isoformat(session.status_since),
        "error_code": session.error_code,
        "error_message": session.error_message,
        "failed_from_status": session.failed_from_status,
        "started_at": isoformat(session.started_at),
        "first_seen_at": isoformat(session.first_seen_at),
        "last_event_at": isoformat(session.last_event_at),
        "ended_at": isoformat(session.ended_at),
        "stream_state": session.stream_state,
        "stream_state_since": isoformat(session.stream_state_since),
        "stream_error": session.stream_error,
        "stream_error_code": session.stream_error_code,
        "stream_retry_at": isoformat(session.stream_retry_at),
        "stream_alive_at": isoformat(session.stream_alive_at),
        "watched": session.watched,
        "last_seq": session.last_seq,
        "participants_present": session.participants_present,
        "peak_participants": session.peak_participants,
        "is_terminal": session.status in TERMINAL_STATUSES,
    }


def session_snapshot(session_id: str) -> dict[str, Any] | None:
    session = MeetingSession.objects.filter(pk=session_id).first()
    return None if session is None else session_summary(session)


def events_after(session_id: str, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    """Stored events with seq > after_seq, in order, at most `limit`."""
    events = SessionEvent.objects.filter(session_id=session_id, seq__gt=after_seq).order_by("seq")
    return [event_to_dict(event) for event in events[:limit]]


def present_participants(session_id: str) -> list[str]:
    from sessions_monitor.models import Presence

    return list(
        Presence.objects.filter(session_id=session_id, left_at__isnull=True)
        .order_by("joined_at", "join_seq")
        .values_list("participant_name", flat=True)
    )


@dataclass
class StreamStart:
    """What a new subscriber of our stream is sent before live events."""

    known: bool
    watched: bool = False
    terminal: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0
    resume_from: int | None = None


def stream_start(session_id: str, last_event_id: int | None, limit: int = 10_000) -> StreamStart:
    """History for a (re)connecting subscriber.

    With `last_event_id`: every event after it. Without: the whole history of an ended
    session, or the current status of a live one plus whatever followed it.
    """
    session = MeetingSession.objects.filter(pk=session_id).first()
    if session is None:
        return StreamStart(known=False)
    terminal = session.status in TERMINAL_STATUSES
    if last_event_id is not None and last_event_id > session.last_seq:
        # An id we never issued (another deployment, a reset database): start afresh
        # rather than silently dropping everything up to it.
        last_event_id = None
    if last_event_id is not None:
        after = last_event_id
    elif terminal:
        after = 0
    else:
        latest_status = (
            SessionEvent.objects.filter(session=session, kind=EventKind.STATUS)
            .order_by("-seq")
            .values_list("seq", flat=True)
            .first()
        )
        after = latest_status - 1 if latest_status is not None else session.last_seq
    events = events_after(session_id, after, limit)
    return StreamStart(
        known=True,
        watched=session.watched,
        terminal=terminal,
        events=events,
        last_seq=events[-1]["seq"] if events else after,
        resume_from=last_event_id,
    )


@dataclass(frozen=True)
class FollowStart:
    """What a relay needs to know before it starts streaming a session."""

    has_history: bool
    last_known_at: datetime | None  # the last moment anything here was known of its link


def follow_start(session_id: str) -> FollowStart:
    row = (
        MeetingSession.objects.filter(pk=session_id)
        .values("last_seq", "last_event_at", "stream_alive_at")
        .first()
    )
    if row is None or not row["last_seq"]:
        return FollowStart(False, None)
    moments = [m for m in (row["last_event_at"], row["stream_alive_at"]) if m is not None]
    return FollowStart(True, max(moments) if moments else None)


def watched_sessions_to_follow() -> list[str]:
    """Watched sessions the relay should be streaming (not ended, not permanently failed)."""
    return list(
        MeetingSession.objects.filter(watched=True)
        .exclude(status__in=TERMINAL_STATUSES)
        .exclude(stream_state__in=[StreamState.FAILED, StreamState.ENDED])
        .order_by("first_seen_at")
        .values_list("session_id", flat=True)
    )


def links_by_state() -> dict[str, int]:
    """Upstream links by state: every watched session, and any other with a link state."""
    rows = (
        MeetingSession.objects.filter(Q(watched=True) | ~Q(stream_state=StreamState.IDLE))
        .values("stream_state")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return {row["stream_state"]: row["count"] for row in rows}


def watched_count() -> int:
    return MeetingSession.objects.filter(watched=True).count()
