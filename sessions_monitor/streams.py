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
import weakref
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.utils import timezone

from sessions_monitor import selectors, services, tokens
from sessions_monitor.hub import HubMessage, Subscription, get_hub
from sessions_monitor.models import EventKind
from sessions_monitor.selectors import STREAMED_KINDS, StreamStart, isoformat
from sessions_monitor.upstream import MeetingBuddyClient, SessionNotFound, UpstreamError

logger = logging.getLogger(__name__)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

KEEPALIVE = b": keepalive\n\n"
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


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
    return None


def sse_frame(session_id: str, event: dict[str, Any]) -> bytes:
    """One SSE block with `id:`; b"" for stored kinds the upstream contract does not carry."""
    payload = sse_payload(session_id, event)
    if payload is None:
        return b""
    name, data = payload
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event['seq']}\nevent: {name}\ndata: {body}\n\n".encode()


def render_hub_message(message: HubMessage) -> bytes:
    assert message.session_id is not None
    return sse_frame(message.session_id, message.data)


def is_close(event: dict[str, Any]) -> bool:
    return bool(event["kind"] == EventKind.CLOSE)


SYNTHETIC_CLOSE = b'event: close\ndata: {"reason":"session_ended"}\n\n'


# --- errors --------------------------------------------------------------------------------


def error_envelope(status: int, code: str, message: str, session_id: str | None) -> bytes:
    kind = {401: "authentication_error", 404: "not_found_error", 422: "validation_error"}.get(
        status, "client_error" if status < 500 else "server_error"
    )
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
    send: Send, status: int, code: str, message: str, session_id: str | None = None
) -> None:
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="meetingdash"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send(
        {"type": "http.response.body", "body": error_envelope(status, code, message, session_id)}
    )


# --- request helpers -----------------------------------------------------------------------


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def parse_last_event_id(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() and len(value) < 19 else None


async def authenticated(scope: Scope) -> bool:
    authorization = header(scope, b"authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            return False
        owner = await database_sync_to_async(tokens.authenticate)(credentials.strip())
        return owner is not None
    user = scope.get("user")
    return bool(user is not None and user.is_authenticated)


_lookups: dict[str, asyncio.Future[bool | None]] = {}
_lookup_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MeetingBuddyClient] = (
    weakref.WeakKeyDictionary()
)


def _lookup_client() -> MeetingBuddyClient | None:
    """The relay's client when it runs here, else one per event loop (never one per
    request: each httpx client builds its own TLS context, megabytes apiece)."""
    from sessions_monitor.relay.worker import current_relay, upstream_url

    relay = current_relay()
    if relay is not None and relay.running:
        return relay.client
    loop = asyncio.get_running_loop()
    client = _lookup_clients.get(loop)
    if client is None:
        url = upstream_url()
        if not url:
            return None
        client = _lookup_clients[loop] = MeetingBuddyClient(url, settings.MEETINGBUDDY_API_TOKEN)
    return client


async def known_upstream(session_id: str) -> bool | None:
    """Ask the upstream whether it knows a session: True/False, or None when it cannot tell.
    Concurrent first subscribers of one session share a single request."""
    pending = _lookups.get(session_id)
    if pending is None:
        pending = _lookups[session_id] = asyncio.ensure_future(_ask_upstream(session_id))
        pending.add_done_callback(lambda _: _lookups.pop(session_id, None))
    return await asyncio.shield(pending)


async def _ask_upstream(session_id: str) -> bool | None:
    client = _lookup_client()
    if client is None:
        return False
    try:
        upstream = await client.get_session(session_id)
    except SessionNotFound:
        return False
    except UpstreamError as exc:
        if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403):
            return False
        logger.warning("stream: cannot ask the upstream about %s: %s", session_id, exc)
        return None
    await database_sync_to_async(services.upsert_session_metadata)(
        session_id,
        bot_name=upstream.bot_name,
        meeting_link=upstream.meeting_link,
        platform=upstream.platform,
        created_at=upstream.created_at,
    )
    return True


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
        while True:
            try:
                message = await subscription.get()
            except StopAsyncIteration:
                return
            if message.kind == "resync":
                # We fell behind; the events we missed are stored (stored before broadcast).
                events = await database_sync_to_async(selectors.events_after)(
                    self.session_id, self.last_seq, 100_000
                )
                if await self.history(events):
                    return
                continue
            if message.kind != "event" or message.seq is None or message.seq <= self.last_seq:
                continue
            self.last_seq = message.seq
            frame = message.render("sse", render_hub_message)
            if frame:
                assert isinstance(frame, bytes)
                await self.write(frame)
            if is_close(message.data):
                return


async def session_stream(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI app behind our stream route (routing.py)."""
    session_id = scope.get("url_route", {}).get("kwargs", {}).get("session_id", "")
    if scope["method"] != "GET":
        await send_error(send, 405, "METHOD_NOT_ALLOWED", "Use GET.", session_id)
        return
    if not await authenticated(scope):
        await send_error(
            send, 401, "UNAUTHORIZED", "Send Authorization: Bearer <API token>, or log in."
        )
        return
    try:
        services.validate_session_id(session_id)
    except services.InvalidSessionId:
        await send_error(
            send,
            422,
            "INVALID_SESSION_ID_FORMAT",
            "Session ids start with 'mbsess_' followed by 1 to 64 letters, digits, '_' or '-'.",
            session_id,
        )
        return
    last_event_id = parse_last_event_id(header(scope, b"last-event-id"))
    # Register for live events BEFORE reading history: nothing stored in between is missed.
    subscription = await get_hub().subscribe(session_id)
    try:
        start = await database_sync_to_async(selectors.stream_start)(session_id, last_event_id)
        if not start.known:
            exists = await known_upstream(session_id)
            if exists is None:
                await send_error(
                    send, 503, "UPSTREAM_UNAVAILABLE", "The upstream cannot be asked.", session_id
                )
                return
            if not exists:
                await send_error(send, 404, "SESSION_NOT_FOUND", "Unknown session.", session_id)
                return
        if not start.watched and not start.terminal:
            await services.arequest_watch(session_id)
        await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
        await _serve(scope, receive, send, subscription, start)
    finally:
        subscription.close()


async def _serve(
    scope: Scope,
    receive: Receive,
    send: Send,
    subscription: Subscription,
    start: StreamStart,
) -> None:
    writer = _Writer(send, start_session_id(scope))
    writer.last_seq = start.resume_from or 0

    async def stream() -> None:
        if await writer.history(start.events):
            return
        if start.terminal:
            # Ended before any close was stored (should not happen once the relay ran).
            await writer.write(SYNTHETIC_CLOSE)
            return
        await writer.write(KEEPALIVE)  # flush headers at once for clients that wait on bytes
        await writer.live(subscription)

    async def disconnect_or_keepalive() -> None:
        """Wait for the client to go; write `: keepalive` whenever the stream was quiet
        for the interval. Here, not around each `subscription.get()`, so a delivery costs
        no timer."""
        keepalive = settings.MEETINGDASH_KEEPALIVE_SECONDS
        loop = asyncio.get_running_loop()
        while True:
            quiet_for = loop.time() - writer.last_write
            if quiet_for >= keepalive:
                await writer.write(KEEPALIVE)
                continue
            try:
                async with asyncio.timeout(keepalive - quiet_for):
                    message = await receive()
            except TimeoutError:
                continue
            if message["type"] == "http.disconnect":
                return

    writing = asyncio.create_task(stream())
    watching = asyncio.create_task(disconnect_or_keepalive())
    try:
        await asyncio.wait({writing, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (writing, watching):
            task.cancel()
        results = await asyncio.gather(writing, watching, return_exceptions=True)
    if writing.done() and not writing.cancelled() and results[0] is None:
        with contextlib.suppress(Exception):
            await send({"type": "http.response.body", "body": b"", "more_body": False})
    elif isinstance(results[0], Exception):
        logger.warning("stream writer failed: %r", results[0])


def start_session_id(scope: Scope) -> str:
    return str(scope["url_route"]["kwargs"]["session_id"])
