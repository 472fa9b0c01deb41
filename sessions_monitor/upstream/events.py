"""Typed, immutable values the upstream client yields. No Django, no IO.

`follow_status()` yields these events interleaved with `LinkState` changes.
Every event keeps the raw `data` text it was parsed from.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

#: The statuses a session never leaves: the one definition (models, simulator and pages use it).
TERMINAL_STATUSES = frozenset({"completed", "failed"})
# The statuses the upstream documents, in lifecycle order (`waiting`: the waiting room).
STATUSES: tuple[str, ...] = (
    "initializing",
    "joining",
    "waiting",
    "active",
    "recording",
    "leaving",
    "completed",
    "failed",
)


@dataclass(frozen=True, slots=True)
class StatusChanged:
    session_id: str
    status: str
    previous_status: str | None
    timestamp: datetime | None
    error_code: str | None = None
    error_message: str | None = None
    raw: str = ""
    event_id: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


@dataclass(frozen=True, slots=True)
class ParticipantJoined:
    session_id: str
    participant_name: str
    timestamp: datetime | None
    raw: str = ""
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class ParticipantLeft:
    session_id: str
    participant_name: str
    timestamp: datetime | None
    raw: str = ""
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class StreamClosed:
    reason: str
    raw: str = ""
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class Unparseable:
    """An event we could not understand: kept, logged and counted, never fatal."""

    event_name: str
    raw: str
    reason: str
    event_id: str | None = None


UpstreamEvent = StatusChanged | ParticipantJoined | ParticipantLeft | StreamClosed | Unparseable


class LinkStateName(enum.StrEnum):
    CONNECTING = "connecting"
    LIVE = "live"
    RETRYING = "retrying"
    ENDED = "ended"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class LinkState:
    """A change of the upstream connection's state, for storage and for the UI.

    `last_byte_at` (on RETRYING and FAILED): when this stream last received a byte, keepalives
    included, so the relay can say exactly since when it may have missed events.
    """

    state: LinkStateName
    reason: str = ""
    retry_in: float | None = None
    error_code: str | None = None
    last_byte_at: datetime | None = None
