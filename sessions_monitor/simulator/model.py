"""The simulated Session object and the event payloads it produces (no IO, no clock)."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sessions_monitor.upstream.events import TERMINAL_STATUSES

from .scenarios import ACTIVE_SET, Step, format_timestamp
from .transcripts import TranscriptTrack

HISTORY_LIMIT = 1000
CLOSE_DATA: dict[str, Any] = {"reason": "session_ended"}


class SessionConflict(ValueError):
    """The session id is already taken, or the session cannot take the step."""


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One SSE event of a session: `seq` is the session's own event counter (1, 2, ...)."""

    seq: int
    name: str
    data: dict[str, Any]


def status_payload(
    session_id: str,
    status: str,
    timestamp: datetime,
    *,
    error_code: str | None = None,
    error_message: str | None = None,
) -> dict[str, Any]:
    """A `status` event for a status change; `previous_status` repeats `status` (Part A)."""
    return {
        "session_id": session_id,
        "status": status,
        "previous_status": status,
        "timestamp": format_timestamp(timestamp),
        "error_message": error_message,
        "error_code": error_code,
    }


def participant_payload(
    session_id: str, name: str, event: str, timestamp: datetime
) -> dict[str, Any]:
    """A `status` event for a join/leave: no `status` field at all (Part A)."""
    return {
        "session_id": session_id,
        "participant_name": name,
        "event": event,
        "timestamp": format_timestamp(timestamp),
    }


@dataclass(slots=True)
class SimSession:
    session_id: str
    meeting_link: str
    platform: str
    bot_name: str
    created_at: datetime
    kind: str = "manual"
    organization_id: str = "org_meetingdash_demo"
    user_id: str = "usr_simulator"
    transcription_enabled: bool = True
    transcription_language: str = "en"
    debug_mode: bool = False
    status: str = "initializing"
    status_changed_at: datetime | None = None
    updated_at: datetime | None = None
    join_timestamp: datetime | None = None
    leave_timestamp: datetime | None = None
    error_code: str | None = None
    error_message: str | None = None
    participants: list[str] = field(default_factory=list)
    participant_history: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    last_seq: int = 0
    history: deque[StreamEvent] = field(default_factory=lambda: deque(maxlen=HISTORY_LIMIT))
    transcript: TranscriptTrack = field(default_factory=TranscriptTrack)

    def __post_init__(self) -> None:
        self.status_changed_at = self.status_changed_at or self.created_at
        self.updated_at = self.updated_at or self.created_at

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    def record(self, name: str, data: dict[str, Any]) -> StreamEvent:
        self.last_seq += 1
        event = StreamEvent(self.last_seq, name, data)
        self.history.append(event)
        return event

    def apply(self, step: Step, at: datetime) -> list[StreamEvent]:
        """Apply one step at time `at`; returns the events it produces, in order."""
        self.transcript.advance(self, at)
        self.updated_at = at
        if step.join is not None or step.leave is not None:
            return [self._participant(step, at)]
        assert step.status is not None
        self.status = step.status
        self.status_changed_at = at
        self.error_code = step.error_code if step.status == "failed" else None
        self.error_message = step.error_message if step.status == "failed" else None
        if step.status in ("active", "recording") and self.join_timestamp is None:
            self.join_timestamp = at
        events = [
            self.record(
                "status",
                status_payload(
                    self.session_id,
                    self.status,
                    at,
                    error_code=self.error_code,
                    error_message=self.error_message,
                ),
            )
        ]
        if self.is_terminal:
            self._finish(at)
            events.append(self.record("close", dict(CLOSE_DATA)))
        return events

    def _participant(self, step: Step, at: datetime) -> StreamEvent:
        name = step.join if step.join is not None else step.leave
        assert name is not None
        event = "joined" if step.join is not None else "left"
        if event == "joined" and name not in self.participants:
            self.participants.append(name)
        elif event == "left" and name in self.participants:
            self.participants.remove(name)
        self.participant_history.append(
            {"name": name, "event": event, "timestamp": format_timestamp(at)}
        )
        return self.record("status", participant_payload(self.session_id, name, event, at))

    def _finish(self, at: datetime) -> None:
        self.participants.clear()
        if self.join_timestamp is not None:
            self.leave_timestamp = at

    def snapshot(self) -> dict[str, Any]:
        """The current status as a `status` event payload, for a new subscriber."""
        assert self.status_changed_at is not None
        return status_payload(
            self.session_id,
            self.status,
            self.status_changed_at,
            error_code=self.error_code,
            error_message=self.error_message,
        )

    def duration_seconds(self, now: datetime) -> float | None:
        if self.join_timestamp is None:
            return None
        end = self.leave_timestamp or now
        return round((end - self.join_timestamp).total_seconds(), 1)

    def to_json(self, now: datetime) -> dict[str, Any]:
        """The Session object (upstream-api.md §4)."""
        recorded = self.join_timestamp is not None
        finished = self.is_terminal and recorded
        duration = self.duration_seconds(now) if finished else None
        segments = int((duration or 0) // 6) if finished else None
        return {
            "session_id": self.session_id,
            "organization_id": self.organization_id,
            "user_id": self.user_id,
            "meeting_link": self.meeting_link,
            "platform": self.platform,
            "bot_name": self.bot_name,
            "status": self.status,
            "transcription_enabled": self.transcription_enabled,
            "transcription_language": self.transcription_language,
            "debug_mode": self.debug_mode,
            "created_at": _ts(self.created_at),
            "updated_at": _ts(self.updated_at),
            "join_timestamp": _ts(self.join_timestamp),
            "leave_timestamp": _ts(self.leave_timestamp),
            "total_duration_seconds": duration,
            "segment_count": segments,
            "audio_file_count": 1 if finished else None,
            "video_file_count": 0 if finished else None,
            "total_size_bytes": int((duration or 0) * 32_000) if finished else None,
            "output_directory": f"/data/meeting-buddy/{self.organization_id}/{self.session_id}"
            if recorded
            else None,
            "error_message": self.error_message,
            "error_code": self.error_code,
            "metadata": dict(self.metadata),
            "current_participants": {
                "count": len(self.participants),
                "names": list(self.participants),
            },
            "participant_history": list(self.participant_history),
            "audio_status": _sub_status(self.status, recorded),
            "transcription_status": _sub_status(self.status, recorded)
            if self.transcription_enabled
            else None,
            "recording_status": _sub_status(self.status, recorded),
            "bot_id": f"bot_{self.session_id.removeprefix('mbsess_')}",
            "external_meeting_id": None,
            "transcription_source": "live" if self.transcription_enabled else None,
            "speaker_labels": None,
            "voice_agent_enabled": False,
            "voice_profile_id": None,
            "visibility": "organization",
            "shared_department_ids": None,
            "has_recording": finished,
            "is_post_fixed": False if finished else None,
        }

    def to_active_json(self, now: datetime) -> dict[str, Any]:
        """An `analytics/active` item (§8.1): note `meet`, not `google_meet`, there."""
        return {
            "session_id": self.session_id,
            "meeting_link": self.meeting_link,
            "platform": "meet" if self.platform == "google_meet" else self.platform,
            "status": self.status,
            "bot_name": self.bot_name,
            "join_timestamp": _ts(self.join_timestamp),
            "current_participants": list(self.participants),
            "duration_so_far_seconds": self.duration_seconds(now),
        }

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_SET


def _ts(value: datetime | None) -> str | None:
    return None if value is None else format_timestamp(value)


def _sub_status(status: str, recorded: bool) -> str | None:
    if not recorded:
        return None if status not in TERMINAL_STATUSES else "not_started"
    if status in ("active", "recording"):
        return "running"
    if status == "failed":
        return "interrupted"
    return "completed" if status == "completed" else "stopping"
