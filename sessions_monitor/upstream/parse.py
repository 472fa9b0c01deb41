"""Sans-IO: bytes → server-sent events → typed upstream events. No sockets, no clocks.

`EventStreamDecoder` feeds httpx-sse's own `SSEDecoder` (the field rules) and fixes, in front
of and behind it, what httpx-sse gets wrong against the WHATWG spec (relay-performance.md §4):

- a leading UTF-8 BOM is stripped (httpx-sse keeps it, so the first field is `\\ufeffevent`
  and the first event is lost);
- `retry:` is only honoured when its value is ASCII digits (httpx-sse's `int()` accepts
  `-5` and `1_000`); the decoder never sees `retry` lines, so a retry-only block cannot
  become an event either;
- a block without any `data` line is not dispatched, as the spec says (httpx-sse dispatches
  a phantom event with `data == ""` after a comment once an `id:` was seen, for id-only
  blocks and for `event:`-only blocks); a block with an empty `data:` line still is;
- a line ended by CR is complete at once (httpx-sse's line decoder holds a trailing CR back
  until the next chunk, in case an LF follows: on a CR-only stream every event would wait
  for the next keepalive, up to 15 s); an LF starting the next chunk is then skipped;
- the last event id follows the spec: it is updated on every blank line, also by blocks
  that are not dispatched, and an empty `id:` resets it.

The stream is decoded as UTF-8 whatever the `charset` says (the spec requires it), with
invalid bytes replaced, so a bad byte costs one event at most, never the stream.
"""

from __future__ import annotations

import codecs
import json
from datetime import UTC, datetime
from typing import Any

from httpx_sse import ServerSentEvent
from httpx_sse._decoders import SSEDecoder

from .events import (
    ParticipantJoined,
    ParticipantLeft,
    StatusChanged,
    StreamClosed,
    Unparseable,
    UpstreamEvent,
)

_BOM = "\ufeff"


class LineSplitter:
    """Incremental split on LF, CRLF and CR; an unterminated tail waits for more text."""

    def __init__(self) -> None:
        self._tail = ""
        self._skip_lf = False

    def split(self, text: str) -> list[str]:
        if self._skip_lf and text:
            self._skip_lf = False
            if text[0] == "\n":
                text = text[1:]
        if not text:
            return []
        if "\r" in text:
            self._skip_lf = text[-1] == "\r"
            text = text.replace("\r\n", "\n").replace("\r", "\n")
        lines = text.split("\n")
        lines[0] = self._tail + lines[0]
        self._tail = lines.pop()
        return lines


class EventStreamDecoder:
    """Incremental `text/event-stream` decoder: `feed(bytes)` returns the complete events."""

    def __init__(self, last_event_id: str | None = None, retry_ms: int | None = None) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._lines = LineSplitter()
        self._sse = SSEDecoder()
        self._at_start = True
        self._pending_id: str | None = None
        self._has_data = False
        #: The spec's "last event ID string": send it as `Last-Event-ID` when non-empty.
        self.last_event_id = last_event_id or ""
        #: The last valid `retry:` value in milliseconds, if any.
        self.retry_ms = retry_ms

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        text = self._text.decode(chunk)
        if self._at_start:
            if not text:  # e.g. only the first bytes of a BOM so far
                return []
            self._at_start = False
            if text.startswith(_BOM):
                text = text[1:]
                if not text:
                    return []
        return self._decode_lines(self._lines.split(text)) if text else []

    def _decode_lines(self, lines: list[str]) -> list[ServerSentEvent]:
        events: list[ServerSentEvent] = []
        for line in lines:
            if not line:
                if self._pending_id is not None:
                    self.last_event_id = self._pending_id
                    self._pending_id = None
                sse = self._sse.decode(line)
                if sse is not None and self._has_data:
                    events.append(sse)
                self._has_data = False
                continue
            first = line[0]
            if first == "d":
                self._has_data = (
                    self._has_data or line.startswith("data") and (len(line) == 4 or line[4] == ":")
                )
            elif first == "r" and self._take_retry(line):
                continue
            elif first == "i":
                self._note_id(line)
            self._sse.decode(line)
        return events

    def _take_retry(self, line: str) -> bool:
        """Consume a `retry` field line (valid or not); False if the line is another field."""
        name, _, value = line.partition(":")
        if name != "retry":
            return False
        if value.startswith(" "):
            value = value[1:]
        if value.isascii() and value.isdigit():
            self.retry_ms = int(value)
        return True

    def _note_id(self, line: str) -> None:
        name, _, value = line.partition(":")
        if name != "id":
            return
        if value.startswith(" "):
            value = value[1:]
        if "\0" not in value:
            self._pending_id = value


def _optional_str(payload: dict[str, Any], key: str) -> str | None:
    value = payload.get(key)
    return value if isinstance(value, str) else None


def parse_timestamp(value: object) -> datetime | None:
    """ISO 8601 (with `Z` or an offset) as an aware datetime; naive = UTC; junk = None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def _parse_close(data: str, event_id: str | None) -> StreamClosed:
    """`close` always ends the stream; a reason we cannot read does not change that."""
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    reason = payload.get("reason") if isinstance(payload, dict) else None
    return StreamClosed(
        reason=reason if isinstance(reason, str) else "", raw=data, event_id=event_id
    )


def parse_status_payload(payload: object, raw: str, event_id: str | None) -> UpstreamEvent:
    """Both Part A shapes of a `status` event: a status change, or a join/leave."""
    name = "status"
    if not isinstance(payload, dict):
        return Unparseable(name, raw, "not_an_object", event_id)
    session_id = payload.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        return Unparseable(name, raw, "missing_field:session_id", event_id)
    timestamp = parse_timestamp(payload.get("timestamp"))
    change = payload.get("event")
    participant = payload.get("participant_name")
    if change is not None or participant is not None:
        if not isinstance(participant, str) or not participant:
            return Unparseable(name, raw, "missing_field:participant_name", event_id)
        if change == "joined":
            return ParticipantJoined(session_id, participant, timestamp, raw, event_id)
        if change == "left":
            return ParticipantLeft(session_id, participant, timestamp, raw, event_id)
        return Unparseable(name, raw, "unknown_participant_event", event_id)
    status = payload.get("status")
    if not isinstance(status, str) or not status:
        return Unparseable(name, raw, "missing_field:status", event_id)
    return StatusChanged(
        session_id=session_id,
        status=status,
        previous_status=_optional_str(payload, "previous_status"),
        timestamp=timestamp,
        error_code=_optional_str(payload, "error_code"),
        error_message=_optional_str(payload, "error_message"),
        raw=raw,
        event_id=event_id,
    )


def parse_event(sse: ServerSentEvent) -> UpstreamEvent:
    """One server-sent event → one typed event. Never raises: bad input is `Unparseable`."""
    event_id = sse.id or None
    if sse.event == "close":
        return _parse_close(sse.data, event_id)
    if sse.event != "status":
        return Unparseable(sse.event, sse.data, "unknown_event", event_id)
    try:
        payload = json.loads(sse.data)
    except ValueError:
        return Unparseable(sse.event, sse.data, "invalid_json", event_id)
    return parse_status_payload(payload, sse.data, event_id)


_TYPE_LABELS: dict[type, str] = {
    StatusChanged: "status",
    ParticipantJoined: "participant_joined",
    ParticipantLeft: "participant_left",
    StreamClosed: "close",
    Unparseable: "unparseable",
}


def event_type(event: UpstreamEvent) -> str:
    """A stable metric label for an event."""
    return _TYPE_LABELS[type(event)]


def event_session_id(event: UpstreamEvent) -> str | None:
    return getattr(event, "session_id", None)
