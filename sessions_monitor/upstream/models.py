"""Typed REST objects (upstream-api.md §4, §8.1). Unknown fields are kept in `extra`.

Only the fields the dashboard needs are typed; everything else the upstream sends stays
in `extra`, untouched, so a new upstream field is never a parse error.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from .errors import MalformedResponse
from .parse import parse_timestamp


def _str(payload: dict[str, Any], key: str, default: str = "") -> str:
    value = payload.get(key)
    return value if isinstance(value, str) else default


def _opt_str(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def _opt_bool(payload: dict[str, Any], key: str) -> bool | None:
    value = payload.get(key)
    return value if isinstance(value, bool) else None


def _opt_float(payload: dict[str, Any], key: str) -> float | None:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _required_object(payload: object, what: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise MalformedResponse(f"Expected a JSON object for {what}.")
    for key in ("session_id", "status"):
        if not isinstance(payload.get(key), str) or not payload[key]:
            raise MalformedResponse(f"The {what} has no '{key}'.")
    return payload


def _extra(payload: dict[str, Any], cls: type) -> dict[str, Any]:
    known = {f.name for f in fields(cls)} - {"extra"}
    return {key: value for key, value in payload.items() if key not in known}


@dataclass(frozen=True, slots=True)
class UpstreamSession:
    """The Session object (§4)."""

    session_id: str
    status: str
    bot_name: str = ""
    platform: str = ""
    meeting_link: str = ""
    organization_id: str = ""
    user_id: str = ""
    transcription_enabled: bool | None = None
    transcription_language: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    join_timestamp: datetime | None = None
    leave_timestamp: datetime | None = None
    total_duration_seconds: float | None = None
    error_code: str | None = None
    error_message: str | None = None
    current_participants: Any = None
    metadata: Any = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def present_participant_names(self) -> tuple[str, ...]:
        """Names in `current_participants`: an undocumented object on the Session (§9.4),
        a list of names elsewhere. Accepts a list of names or of `{"name": ...}` objects, or
        an object holding such a list under `names`/`participants`; anything else is ()."""
        value = self.current_participants
        if isinstance(value, dict):
            value = value.get("names", value.get("participants"))
        if not isinstance(value, list):
            return ()
        names = (item.get("name") if isinstance(item, dict) else item for item in value)
        return tuple(name for name in names if isinstance(name, str) and name.strip())

    @classmethod
    def from_json(cls, payload: object) -> UpstreamSession:
        data = _required_object(payload, "session")
        return cls(
            session_id=data["session_id"],
            status=data["status"],
            bot_name=_str(data, "bot_name"),
            platform=_str(data, "platform"),
            meeting_link=_str(data, "meeting_link"),
            organization_id=_str(data, "organization_id"),
            user_id=_str(data, "user_id"),
            transcription_enabled=_opt_bool(data, "transcription_enabled"),
            transcription_language=_opt_str(data, "transcription_language"),
            created_at=parse_timestamp(data.get("created_at")),
            updated_at=parse_timestamp(data.get("updated_at")),
            join_timestamp=parse_timestamp(data.get("join_timestamp")),
            leave_timestamp=parse_timestamp(data.get("leave_timestamp")),
            total_duration_seconds=_opt_float(data, "total_duration_seconds"),
            error_code=_opt_str(data, "error_code"),
            error_message=_opt_str(data, "error_message"),
            current_participants=data.get("current_participants"),
            metadata=data.get("metadata"),
            extra=_extra(data, cls),
        )


@dataclass(frozen=True, slots=True)
class ActiveSession:
    """One item of `GET analytics/active` (§8.1)."""

    session_id: str
    status: str
    bot_name: str = ""
    platform: str = ""
    meeting_link: str = ""
    join_timestamp: datetime | None = None
    current_participants: tuple[str, ...] = ()
    duration_so_far_seconds: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, payload: object) -> ActiveSession:
        data = _required_object(payload, "active session")
        participants = data.get("current_participants")
        names = (
            tuple(p for p in participants if isinstance(p, str))
            if isinstance(participants, list)
            else ()
        )
        return cls(
            session_id=data["session_id"],
            status=data["status"],
            bot_name=_str(data, "bot_name"),
            platform=_str(data, "platform"),
            meeting_link=_str(data, "meeting_link"),
            join_timestamp=parse_timestamp(data.get("join_timestamp")),
            current_participants=names,
            duration_so_far_seconds=_opt_float(data, "duration_so_far_seconds"),
            extra=_extra(data, cls),
        )


@dataclass(frozen=True, slots=True)
class UpstreamTranscriptSegment:
    """One item of `GET …/transcripts` (§5.5); `speaker` prefers `speaker_display_name`."""

    transcript_id: str
    text: str
    start_time: float
    end_time: float
    speaker: str = ""
    confidence: float | None = None
    language_code: str = ""
    created_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, payload: object) -> UpstreamTranscriptSegment:
        """Raises MalformedResponse without an id or a start time: such a segment cannot be
        stored once or placed in order."""
        if not isinstance(payload, dict):
            raise MalformedResponse("Expected a JSON object for a transcript segment.")
        transcript_id = _opt_str(payload, "transcript_id")
        start = _opt_float(payload, "start_time")
        if not transcript_id or start is None:
            raise MalformedResponse("A transcript segment has no 'transcript_id' or 'start_time'.")
        end = _opt_float(payload, "end_time")
        return cls(
            transcript_id=transcript_id,
            text=_str(payload, "text"),
            start_time=start,
            end_time=end if end is not None and end >= start else start,
            speaker=_str(payload, "speaker_display_name") or _str(payload, "speaker"),
            confidence=_opt_float(payload, "confidence"),
            language_code=_str(payload, "language_code"),
            created_at=parse_timestamp(payload.get("created_at")),
            extra=_extra(payload, cls),
        )


def parse_transcript(body: object) -> tuple[list[UpstreamTranscriptSegment], int]:
    """The segments of a `GET …/transcripts` answer (a bare array) and how many items were
    skipped as malformed. Not an array at all is a MalformedResponse."""
    if body is None:
        return [], 0
    if not isinstance(body, list):
        raise MalformedResponse("transcripts did not answer with an array.")
    segments: list[UpstreamTranscriptSegment] = []
    for item in body:
        try:
            segments.append(UpstreamTranscriptSegment.from_json(item))
        except MalformedResponse:
            continue
    return segments, len(body) - len(segments)
