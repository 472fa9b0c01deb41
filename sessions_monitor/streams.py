"""Our re-served status stream: `GET /v1/meeting-buddy/sessions/<id>/stream`.

The upstream's contract (upstream-api.md Part A) plus `id: <seq>` on every event and
`Last-Event-ID` resume from stored history. One hub subscription per viewer; the relay keeps
one upstream connection per session however many viewers there are.

A plain ASGI app rather than an `AsyncHttpConsumer`: the consumer ends the response when
`handle()` returns (channels#1249), opens a channel-layer channel per connection and hops
to a thread (`aclose_old_connections`) for every dispatched message. Here a connection is
two small tasks (writer, disconnect watcher) and a hub queue; each event is serialised once
per process (`HubMessage.render("sse", ...)`) and the same bytes go to every viewer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from sessions_monitor import access, limits, lookups, selectors, services
from sessions_monitor.hub import HubUnavailable, Subscription, get_hub
from sessions_monitor.messages import HubMessage
from sessions_monitor.models import EventKind
from sessions_monitor.security import data_headers, header, https_required
from sessions_monitor.selectors import STREAMED_KINDS, StreamStart, isoformat
from sessions_monitor.upstream.ids import SESSION_ID_RULE, is_valid_session_id

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

KEEPALIVE = b": keepalive\n\n"
ACCESS_ENDED = b": access ended (token revoked, signed out or user deactivated)\n\n"
FEED_LOST = b": live feed lost on this server; reconnect with Last-Event-ID\n\n"
# Queued events written to one client at once, at most (a burst, a slow client catching up).
MAX_FRAMES_PER_WRITE = 500
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
# json.dumps(ensure_ascii=False) leaves these raw, and clients that split lines like
# str.splitlines() would read them as line breaks inside `data:`: escape them as JSON does.
_LINE_SEPARATORS = str.maketrans({"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


# --- rendering -----------------------------------------------------------------------------


def sse_payload(session_id: str, event: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """(event name, data) in the upstream's shapes, or None for kinds it does not have."""
    kind = event["kind"]
    timestamp = event.get("timestamp") or event.get("received_at")
    if kind == EventKind.STATUS:
        return "status", {
            "session_id": session_id,
            "status": event["status"],
            "previous_status": event["previous_status"] or None,
            "timestamp": timestamp,
            "error_message": event["error_message"] or None,
            "error_code": event["error_code"] or None,
        }
    if kind in (EventKind.JOINED, EventKind.LEFT):
        return "status", {
            "session_id": session_id,
            "participant_name": event["participant_name"],
            "event": "joined" if kind == EventKind.JOINED else "left",
            "timestamp": timestamp,
        }
    if kind == EventKind.CLOSE:
        return "close", {"reason": event.get("note") or "session_ended"}
    if kind == EventKind.GAP:
        # Ours, beside the upstream's `status` and `close`: no upstream stream was connected
        # from `from` (null: unknown) to `to`, so events in between may be missing.
        return "gap", {
            "session_id": session_id,
            "from": event.get("gap_started_at"),
            "to": event.get("received_at"),
            "reason": event.get("note") or "",
        }
    return None


def sse_frame(session_id: str, event: dict[str, Any]) -> bytes:
    """One SSE block with `id:`; b"" for stored kinds the upstream contract does not carry."""
    payload = sse_payload(session_id, event)
    if payload is None:
        return b""
    name, data = payload
    return f"id: {event['seq']}\nevent: {name}\ndata: {sse_data(data)}\n\n".encode()


def sse_data(data: dict[str, Any]) -> str:
    """Compact JSON on one line, whatever the strings in it hold."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).translate(_LINE_SEPARATORS)


def render_hub_message(message: HubMessage) -> bytes:
    assert message.session_id is not None
    return sse_frame(message.session_id, message.data)


def is_close(event: dict[str, Any]) -> bool:
    return bool(event["kind"] == EventKind.CLOSE)


SYNTHETIC_CLOSE = b'event: close\ndata: {"reason":"session_ended"}\n\n'


# --- errors --------------------------------------------------------------------------------


def error_envelope(status: int, code: str, message: str, session_id: str | None) -> bytes:
    kind = {
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        422: "validation_error",
        429: "rate_limit_error",
    }.get(status, "client_error" if status < 500 else "server_error")
    details = {"session_id": session_id} if session_id is not None else {}
    body = {
        "success": False,
        "error": {
            "code": code,
            "message": message,
            "type": kind,
            "status": status,
            "details": details,
            "trace_id": str(uuid.uuid4()),
            "timestamp": isoformat(timezone.now()),
        },
    }
    return json.dumps(body).encode()


async def send_error(
    scope: Scope,
    send: Send,
    status: int,
    code: str,
    message: str,
    session_id: str | None = None,
    *,
    retry_after: int | None = None,
) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"cache-control", b"no-store"),
        *data_headers(scope),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="meetingdash"'))
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, retry_after)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send(
        {"type": "http.response.body", "body": error_envelope(status, code, message, session_id)}
    )


# --- request helpers -----------------------------------------------------------------------


def parse_last_event_id(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() and len(value) < 19 else None


# --- the stream ----------------------------------------------------------------------------


class _Writer:
    def __init__(self, send: Send, session_id: str) -> None:
        self.send = send
        self.session_id = session_id
        self.last_seq = 0
        self.last_write = 0.0

    async def write(self, chunk: bytes) -> None:
        self.last_write = asyncio.get_running_loop().time()
        await self.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def history(self, events: Iterable[dict[str, Any]]) -> bool:
        """Send stored events after last_seq; True when `close` was among them."""
        frames: list[bytes] = []
        closed = False
        for event in events:
            if event["seq"] <= self.last_seq:
                continue
            self.last_seq = event["seq"]
            if event["kind"] in STREAMED_KINDS:
                frames.append(sse_frame(self.session_id, event))
            if is_close(event):
                closed = True
                break
        if frames:
            await self.write(b"".join(frames))
        return closed

    async def live(self, subscription: Subscription) -> None:
        """Until the session closes or the feed is lost. What queued up while this client
        was being written to goes out as one write (a burst costs one write per client per
        wake, not one per event)."""
        while True:
            try:
                first = await subscription.get()
            except StopAsyncIteration:
                return
            frames: list[bytes] = []
            message: HubMessage | None = first
            while message is not None:
                ended = await self._take(message, frames)
                if ended:
                    return
                message = subscription.get_nowait() if len(frames) < MAX_FRAMES_PER_WRITE else None
            if frames:
                await self.write(b"".join(frames))

    async def _take(self, message: HubMessage, frames: list[bytes]) -> bool:
        """Add what `message` means to `frames` (written first when the message needs its
        own write); True when the stream ends here."""
        if message.kind == "lost":
            # This process cannot deliver live events now: end the response, so the
            # client reconnects (with Last-Event-ID) rather than wait on a dead feed.
            await self.write(b"".join([*frames, FEED_LOST]))
            return True
        if message.kind == "resync":
            if frames:
                await self.write(b"".join(frames))
                frames.clear()
            # We fell behind; the events we missed are stored (stored before broadcast).
            events = await database_sync_to_async(selectors.events_after)(
                self.session_id, self.last_seq, 100_000
            )
            return await self.history(events)
        if message.kind != "event" or message.seq is None or message.seq <= self.last_seq:
            return False
        self.last_seq = message.seq
        frame = message.render("sse", render_hub_message)
        if frame:
            assert isinstance(frame, bytes)
            frames.append(frame)
        if is_close(message.data):
            await self.write(b"".join(frames))
            return True
        return False


INVALID_ID_MESSAGE = f"Session ids start with {SESSION_ID_RULE}."


async def session_stream(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app behind our stream route (routing.py)."""
    session_id = scope.get("url_route", {}).get("kwargs", {}).get("session_id", "")
    if scope["method"] != "GET":
        await send_error(scope, send, 405, "METHOD_NOT_ALLOWED", "Use GET.", session_id)
        return
    if https_required(scope):
        await send_error(scope, send, 403, "HTTPS_REQUIRED", "Use https:// for this stream.")
        return
    credential = await access.credential_for_stream(scope)
    if credential is None:
        await send_error(
            scope, send, 401, "UNAUTHORIZED", "Send Authorization: Bearer <API token>, or log in."
        )
        return
    if not is_valid_session_id(session_id):
        await send_error(
            scope, send, 422, "INVALID_SESSION_ID_FORMAT", INVALID_ID_MESSAGE, session_id[:100]
        )
        return
    occupancy = limits.Occupancy(stream_slots(credential))
    if not await occupancy.acquire():
        await send_error(
            scope,
            send,
            429,
            "TOO_MANY_STREAMS",
            "Too many open streams for this token or user; close one first.",
            session_id,
            retry_after=int(settings.MEETINGDASH_KEEPALIVE_SECONDS),
        )
        return
    try:
        await _open(scope, receive, send, session_id, credential, occupancy)
    finally:
        await occupancy.release()


def stream_slots(credential: access.Credential) -> list[tuple[str, int]]:
    slots = [(f"streams:user:{credential.user_id}", settings.MEETINGDASH_MAX_STREAMS_PER_USER)]
    if credential.kind == "token":
        slots.append(
            (f"streams:token:{credential.key}", settings.MEETINGDASH_MAX_STREAMS_PER_TOKEN)
        )
    return slots


async def _open(
    scope: Scope,
    receive: Receive,
    send: Send,
    session_id: str,
    credential: access.Credential,
    occupancy: limits.Occupancy,
) -> None:
    last_event_id = parse_last_event_id(header(scope, b"last-event-id"))
    # Register for live events BEFORE reading history: nothing stored in between is missed.
    try:
        subscription = await get_hub().subscribe(session_id, kind="stream")
    except HubUnavailable:
        await send_error(
            scope,
            send,
            503,
            "LIVE_FEED_UNAVAILABLE",
            "This server cannot deliver live events right now; try again shortly.",
            session_id,
            retry_after=2,
        )
        return
    try:
        start = await database_sync_to_async(selectors.stream_start)(session_id, last_event_id)
        if not start.known and not await _ensure_known(scope, send, session_id, credential):
            return
        if not start.watched and not start.terminal:
            await services.arequest_watch(session_id)
        headers = [*STREAM_HEADERS, *data_headers(scope)]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await _serve(scope, receive, send, subscription, start, credential, occupancy)
    finally:
        subscription.close()


async def _ensure_known(
    scope: Scope, send: Send, session_id: str, credential: access.Credential
) -> bool:
    """True when the session is known (here, or upstream: it is then stored); otherwise
    the error is sent."""
    lookup = await lookups.ensure_known(session_id, credential=credential.label)
    if lookup.outcome is lookups.Outcome.KNOWN:
        return True
    if lookup.outcome is lookups.Outcome.UNKNOWN:
        await send_error(scope, send, 404, "SESSION_NOT_FOUND", "Unknown session.", session_id)
    elif lookup.outcome is lookups.Outcome.THROTTLED:
        await send_error(
            scope,
            send,
            429,
            "TOO_MANY_LOOKUPS",
            "Too many unknown session ids asked for; wait before asking for another.",
            session_id,
            retry_after=lookup.retry_after,
        )
    else:
        await send_error(
            scope, send, 503, "UPSTREAM_UNAVAILABLE", "The upstream cannot be asked.", session_id
        )
    return False


async def _serve(
    scope: Scope,
    receive: Receive,
    send: Send,
    subscription: Subscription,
    start: StreamStart,
    credential: access.Credential,
    occupancy: limits.Occupancy,
) -> None:
    writer = _Writer(send, start_session_id(scope))
    writer.last_seq = start.resume_from or 0
    writing = asyncio.create_task(_send_events(writer, start, subscription))
    watching = asyncio.create_task(_watch_client(receive, writer, credential, occupancy))
    try:
        await asyncio.wait({writing, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (writing, watching):
            task.cancel()
        results = await asyncio.gather(writing, watching, return_exceptions=True)
    access_ended = results[1] is True
    if access_ended:
        logger.info(
            "stream of %s closed: access ended for %s", start_session_id(scope), credential.label
        )
    if access_ended or (writing.done() and not writing.cancelled() and results[0] is None):
        with contextlib.suppress(Exception):
            await send(
                {
                    "type": "http.response.body",
                    "body": ACCESS_ENDED if access_ended else b"",
                    "more_body": False,
                }
            )
    elif isinstance(results[0], Exception):
        logger.warning("stream writer failed: %r", results[0])


async def _send_events(writer: _Writer, start: StreamStart, subscription: Subscription) -> None:
    if await writer.history(start.events):
        return
    if start.terminal:
        # Ended before any close was stored (should not happen once the relay ran).
        await writer.write(SYNTHETIC_CLOSE)
        return
    await writer.write(KEEPALIVE)  # flush headers at once for clients that wait on bytes
    await writer.live(subscription)


async def _watch_client(
    receive: Receive,
    writer: _Writer,
    credential: access.Credential,
    occupancy: limits.Occupancy,
) -> bool:
    """Until the client goes (False) or its access ends (True): write `: keepalive`
    whenever the stream was quiet for the interval, and re-check access every
    `access.check_interval()`. Here, not around each `subscription.get()`, so a
    delivery costs no timer."""
    keepalive = settings.MEETINGDASH_KEEPALIVE_SECONDS
    interval = access.check_interval()
    loop = asyncio.get_running_loop()
    check_at = loop.time() + interval
    while True:
        now = loop.time()
        if now >= check_at:
            if not await access.still_valid(credential):
                return True
            await occupancy.refresh()
            check_at = loop.time() + interval
            continue
        quiet_for = now - writer.last_write
        if quiet_for >= keepalive:
            await writer.write(KEEPALIVE)
            continue
        try:
            async with asyncio.timeout(min(keepalive - quiet_for, check_at - now)):
                message = await receive()
        except TimeoutError:
            continue
        if message["type"] == "http.disconnect":
            return False


def start_session_id(scope: Scope) -> str:
    return str(scope["url_route"]["kwargs"]["session_id"])
