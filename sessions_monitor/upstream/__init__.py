"""Async client for the Meeting Buddy upstream API. Knows nothing of Django."""

from __future__ import annotations

from .backoff import BackoffPolicy
from .client import (
    DEFAULT_STALL_SECONDS,
    END_GRACE_SECONDS,
    MeetingBuddyClient,
    make_http_client,
)
from .errors import (
    ClientError,
    Forbidden,
    InvalidSessionId,
    MalformedResponse,
    RateLimited,
    SessionNotFound,
    StreamDisconnected,
    StreamStalled,
    Unauthorized,
    UpstreamError,
    UpstreamUnavailable,
    WrongContentType,
)
from .events import (
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
from .ids import is_valid_session_id, validate_session_id
from .metrics import UpstreamMetrics
from .models import ActiveSession, UpstreamSession
from .parse import EventStreamDecoder, event_type, parse_event

__all__ = [
    "DEFAULT_STALL_SECONDS",
    "END_GRACE_SECONDS",
    "TERMINAL_STATUSES",
    "ActiveSession",
    "BackoffPolicy",
    "ClientError",
    "EventStreamDecoder",
    "Forbidden",
    "InvalidSessionId",
    "LinkState",
    "LinkStateName",
    "MalformedResponse",
    "MeetingBuddyClient",
    "ParticipantJoined",
    "ParticipantLeft",
    "RateLimited",
    "SessionNotFound",
    "StatusChanged",
    "StreamClosed",
    "StreamDisconnected",
    "StreamStalled",
    "Unauthorized",
    "Unparseable",
    "UpstreamError",
    "UpstreamEvent",
    "UpstreamMetrics",
    "UpstreamSession",
    "UpstreamUnavailable",
    "WrongContentType",
    "event_type",
    "is_valid_session_id",
    "make_http_client",
    "parse_event",
    "validate_session_id",
]
