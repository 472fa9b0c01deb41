"""Everything that travels on the channel layer: names, message types, builders, parsers.

- group `sessions`: a `sessions.summary` (the session's `selectors.session_summary`) after
  every stored change of any session;
- group `session.<id>`: a `session.event` per stored event of that session, in seq order,
  with the summary as it is after the event;
- group `session.<id>` also: a `session.transcript` with the transcript segments the relay
  just stored (no seq: a missed one is covered by the page's resync, which re-reads them);
- group `alerts`: a `session.alert` when a session fails, is lost, gets stuck or moves on
  from being stuck (followers' toasts; `AlertMessage`);
- channel `session-relay`: `session.watch` / `session.unwatch`, for whichever relay reads it;
- a hub's own reader channel: `hub.stop`, which ends that reader (see `Hub._release`).

Producers build messages with the functions here and receivers parse them here, so the two
sides cannot drift apart. A message that does not parse is logged, counted
(`meetingdash_bad_messages`) and dropped: nothing a channel layer delivers can stop a hub
feed or the relay's listener.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal, TypedDict

from sessions_monitor import telemetry

logger = logging.getLogger(__name__)

SESSIONS_GROUP: Final = "sessions"
RELAY_CHANNEL: Final = "session-relay"
# Alerts for followers' toasts: failed, stuck, lost and resolved sessions, of every session.
ALERTS_GROUP: Final = "alerts"

EVENT: Final = "session.event"
TRANSCRIPT: Final = "session.transcript"
SUMMARY: Final = "sessions.summary"
WATCH: Final = "session.watch"
UNWATCH: Final = "session.unwatch"
HUB_STOP: Final = "hub.stop"
ALERT: Final = "session.alert"

Kind = Literal["event", "summary", "transcript", "alert", "resync", "lost"]
Rendered = bytes | str
Receiver = Literal["hub", "relay"]


def session_group(session_id: str) -> str:
    """The group of one session's events."""
    return f"session.{session_id}"


class EventMessage(TypedDict):
    type: Literal["session.event"]
    session_id: str
    seq: int
    event: dict[str, Any]
    # The session as it is after this event: renderers need no DB read per message.
    session: dict[str, Any] | None


class TranscriptMessage(TypedDict):
    type: Literal["session.transcript"]
    session_id: str
    # `transcripts.plain_segment` of each new segment, in start order.
    segments: list[dict[str, Any]]


class AlertMessage(TypedDict):
    type: Literal["session.alert"]
    # failed, stuck, lost, resolved (a stuck session moved on)
    kind: str
    session_id: str
    bot_name: str
    platform: str
    status: str
    error_code: str
    error_message: str
    # What happened, in a sentence, for the toast and the notification.
    text: str
    at: str  # ISO 8601


class WatchMessage(TypedDict):
    type: Literal["session.watch", "session.unwatch"]
    session_id: str


class StopMessage(TypedDict):
    type: Literal["hub.stop"]


@dataclass(frozen=True, slots=True)
class WatchRequest:
    session_id: str
    watched: bool


def event_message(
    *, session_id: str, seq: int, event: dict[str, Any], session: dict[str, Any] | None = None
) -> EventMessage:
    return {"type": EVENT, "session_id": session_id, "seq": seq, "event": event, "session": session}


def transcript_message(*, session_id: str, segments: list[dict[str, Any]]) -> TranscriptMessage:
    return {"type": TRANSCRIPT, "session_id": session_id, "segments": segments}


def summary_message(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The summary's fields at the top level, next to `type` (receivers read them as is)."""
    return {"type": SUMMARY, **summary}


def alert_message(*, kind: str, session: Mapping[str, Any], text: str, at: str) -> AlertMessage:
    """`session`: a `session_summary` (or anything with its keys)."""
    return {
        "type": ALERT,
        "kind": kind,
        "session_id": str(session.get("session_id", "")),
        "bot_name": str(session.get("bot_name") or ""),
        "platform": str(session.get("platform") or ""),
        "status": str(session.get("status") or ""),
        "error_code": str(session.get("error_code") or ""),
        "error_message": str(session.get("error_message") or ""),
        "text": text,
        "at": at,
    }


def watch_message(session_id: str, watched: bool) -> WatchMessage:
    return {"type": WATCH if watched else UNWATCH, "session_id": session_id}


def stop_message() -> StopMessage:
    return {"type": HUB_STOP}


def is_stop(raw: Mapping[str, Any]) -> bool:
    return raw.get("type") == HUB_STOP


class HubMessage:
    """One layer message, shared (read-only) by every local subscriber of a hub."""

    __slots__ = ("kind", "session_id", "seq", "data", "session", "_rendered")

    def __init__(
        self,
        kind: Kind,
        session_id: str | None,
        data: dict[str, Any],
        seq: int | None = None,
        session: dict[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.session_id = session_id
        self.seq = seq
        self.data = data
        # Events: the session summary after the event (same fields as `sessions.summary`).
        self.session = session
        self._rendered: dict[str, Rendered] = {}

    def render(self, key: str, fn: Callable[[HubMessage], Rendered]) -> Rendered:
        """`fn(self)`, computed once per process per message and key, then shared."""
        try:
            return self._rendered[key]
        except KeyError:
            value = self._rendered[key] = fn(self)
            return value

    def __repr__(self) -> str:
        return f"HubMessage({self.kind!r}, {self.session_id!r}, seq={self.seq})"


def parse_hub_message(raw: Mapping[str, Any]) -> HubMessage | None:
    """A `session.event`, `session.transcript`, `sessions.summary` or `session.alert` as a
    HubMessage; None (logged, counted) for anything else."""
    parsed = _hub_message(raw)
    if isinstance(parsed, str):
        _dropped("hub", raw, parsed)
        return None
    return parsed


def parse_watch_message(raw: Mapping[str, Any]) -> WatchRequest | None:
    """A watch or unwatch request; None (logged, counted) for anything else."""
    parsed = _watch_request(raw)
    if isinstance(parsed, str):
        _dropped("relay", raw, parsed)
        return None
    return parsed


def _hub_message(raw: Mapping[str, Any]) -> HubMessage | str:
    """The message, or why it is not one."""
    if not isinstance(raw, Mapping):
        return "a message that is not a mapping"
    kind = raw.get("type")
    if kind == EVENT:
        session_id, seq, event = raw.get("session_id"), raw.get("seq"), raw.get("event")
        session = raw.get("session")
        if not isinstance(session_id, str) or not session_id:
            return "an event without a session id"
        if not _is_seq(seq):
            return "an event without a valid seq"
        if not isinstance(event, dict) or not (session is None or isinstance(session, dict)):
            return "an event whose body is not a mapping"
        return HubMessage("event", session_id, event, seq=seq, session=session)
    if kind == TRANSCRIPT:
        session_id, segments = raw.get("session_id"), raw.get("segments")
        if not isinstance(session_id, str) or not session_id:
            return "a transcript without a session id"
        if not isinstance(segments, list) or not all(isinstance(s, dict) for s in segments):
            return "a transcript whose segments are not a list of mappings"
        return HubMessage("transcript", session_id, {"segments": segments})
    if kind == SUMMARY:
        data = {key: value for key, value in raw.items() if key != "type"}
        session_id = data.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            return "a summary without a session id"
        return HubMessage("summary", session_id, data)
    if kind == ALERT:
        return _alert(raw)
    return "an unknown message type"


ALERT_KINDS: Final = frozenset({"failed", "stuck", "lost", "resolved"})
ALERT_FIELDS: Final = (
    "kind",
    "session_id",
    "bot_name",
    "platform",
    "status",
    "error_code",
    "error_message",
    "text",
    "at",
)


def _alert(raw: Mapping[str, Any]) -> HubMessage | str:
    session_id = raw.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        return "an alert without a session id"
    if raw.get("kind") not in ALERT_KINDS:
        return "an alert of an unknown kind"
    if not all(isinstance(raw.get(name) or "", str) for name in ALERT_FIELDS):
        return "an alert with a field that is not text"
    return HubMessage("alert", session_id, {name: raw.get(name) or "" for name in ALERT_FIELDS})


def _watch_request(raw: Mapping[str, Any]) -> WatchRequest | str:
    """The request, or why it is not one."""
    if not isinstance(raw, Mapping):
        return "a message that is not a mapping"
    kind = raw.get("type")
    if kind not in (WATCH, UNWATCH):
        return "an unknown message type"
    session_id = raw.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        return "a watch request without a session id"
    return WatchRequest(session_id, watched=kind == WATCH)


def _is_seq(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _dropped(receiver: Receiver, raw: object, reason: str) -> None:
    telemetry.bad_messages.labels(receiver).inc()
    # The type and the keys only: a message may be large, or carry participants' names.
    keys = sorted(str(key) for key in raw)[:12] if isinstance(raw, Mapping) else []
    kind = raw.get("type") if isinstance(raw, Mapping) else type(raw).__name__
    logger.warning("%s: dropped %s (type %.60r, keys %s)", receiver, reason, kind, keys)
