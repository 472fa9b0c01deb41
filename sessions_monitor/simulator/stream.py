"""One status-stream connection: current status first, live events, keepalives, faults.

The connection is thin: what to send comes from `Simulator.subscribe`, how to encode it from
`sse`, and the fault knobs are read at every write (so tests can change them mid-stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import TYPE_CHECKING

from .faults import FailNext, FaultState
from .http import Receive, Response, Send, error_response
from .model import StreamEvent
from .scenarios import format_timestamp
from .sse import compact_json, encode_comment, encode_event, encode_retry, split_chunks

if TYPE_CHECKING:
    from .core import Simulator, Subscription

SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
WRONG_CONTENT_TYPE_BODY = (
    b"<!DOCTYPE html><html><head><title>Sign in</title></head>"
    b"<body><h1>Please sign in</h1></body></html>"
)


class StreamWriter:
    """Encodes and writes events of one connection, applying the session's fault knobs."""

    def __init__(self, simulator: Simulator, session_id: str, send: Send) -> None:
        self.simulator = simulator
        self.session_id = session_id
        self.send = send
        self.events_sent = 0

    @property
    def faults(self) -> FaultState:
        return self.simulator.faults.for_session(self.session_id)

    async def write(self, payload: bytes) -> None:
        faults = self.faults
        for index, chunk in enumerate(split_chunks(payload, faults.chunk_size)):
            if index and faults.chunk_delay:
                # Let the server flush each piece on its own instead of coalescing them.
                await asyncio.sleep(faults.chunk_delay)
            await self.send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def keepalive(self) -> None:
        await self.write(encode_comment(line_ending=self.faults.line_ending))

    async def event(self, event: StreamEvent) -> bool:
        """Write `event` (and any injected faulty event before it); False = drop now."""
        faults = self.faults
        ending = faults.line_ending
        data = compact_json(event.data)
        if faults.take_malformed():
            await self.write(
                encode_event(event.name, data[: max(1, len(data) // 2)], line_ending=ending)
            )
        if faults.take_unknown_event():
            noise = {
                "session_id": self.session_id,
                "cpu_percent": 12.5,
                "timestamp": format_timestamp(self.simulator.now()),
            }
            await self.write(encode_event("bot_metrics", compact_json(noise), line_ending=ending))
        event_id = str(event.seq) if faults.send_ids else None
        await self.write(encode_event(event.name, data, event_id=event_id, line_ending=ending))
        self.events_sent += 1
        self.simulator.stats.delivered[self.session_id].add(event.seq)
        return event.name == "close" or not faults.should_drop(self.events_sent)

    async def end(self) -> None:
        await self.send({"type": "http.response.body", "body": b"", "more_body": False})


async def serve_stream(
    simulator: Simulator,
    session_id: str,
    receive: Receive,
    send: Send,
    *,
    last_event_id: int | None,
) -> None:
    """Answer `GET .../sessions/{id}/stream` for an existing, valid session id."""
    faults = simulator.faults.for_session(session_id)
    failure = faults.take_fail()
    if failure is not None:
        await failure_response(failure).send(send)
        return
    if faults.take_wrong_content_type():
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/html; charset=utf-8")],
            }
        )
        await send({"type": "http.response.body", "body": WRONG_CONTENT_TYPE_BODY})
        return

    session = simulator.get(session_id)
    if session is not None and session.is_terminal and faults.ended_as_404:
        await error_response(404, "SESSION_NOT_FOUND", details={"session_id": session_id}).send(
            send
        )
        return

    subscription = simulator.subscribe(session_id, last_event_id=last_event_id)
    simulator.stats.open_streams[session_id] += 1
    disconnected = asyncio.Event()
    watcher = asyncio.get_running_loop().create_task(
        _watch_disconnect(receive, disconnected, subscription),
        name=f"simulator-stream-watch-{session_id}",
    )
    writer = StreamWriter(simulator, session_id, send)
    try:
        await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
        await _pump(simulator, writer, subscription, disconnected)
        if not disconnected.is_set():
            await writer.end()
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        simulator.unsubscribe(subscription)
        simulator.stats.open_streams[session_id] -= 1


async def _pump(
    simulator: Simulator,
    writer: StreamWriter,
    subscription: Subscription,
    disconnected: asyncio.Event,
) -> None:
    faults = writer.faults
    if faults.retry_ms is not None:
        await writer.write(encode_retry(faults.retry_ms, line_ending=faults.line_ending))
    for event in subscription.initial:
        if not await writer.event(event) or event.name == "close":
            return
    if not subscription.live:
        return
    interval = simulator.keepalive_seconds
    next_keepalive = time.monotonic() + interval
    held: deque[StreamEvent] = deque()  # received but not yet written (a stall holds them)
    while not disconnected.is_set():
        faults = writer.faults
        stall = faults.stall_remaining()
        if stall > 0:
            if faults.stall_keepalives:
                stall = min(stall, max(0.0, next_keepalive - time.monotonic()))
            await _wait(disconnected, stall)
            if faults.stall_keepalives and time.monotonic() >= next_keepalive:
                await writer.keepalive()
                next_keepalive = _advance(next_keepalive, interval)
            continue
        if held:
            event = held.popleft()
            if not await writer.event(event) or event.name == "close":
                return
            continue
        try:
            timeout = max(0.0, next_keepalive - time.monotonic())
            async with asyncio.timeout(timeout):
                item = await subscription.queue.get()
        except TimeoutError:
            await writer.keepalive()
            next_keepalive = _advance(next_keepalive, interval)
            continue
        if item is None:
            return
        held.append(item)


def _advance(deadline: float, interval: float) -> float:
    """The next keepalive deadline: a steady cadence, restarted if we fell behind."""
    now = time.monotonic()
    deadline += interval
    return deadline if deadline > now else now + interval


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


async def _watch_disconnect(
    receive: Receive, disconnected: asyncio.Event, subscription: Subscription
) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            disconnected.set()
            subscription.queue.put_nowait(None)
            return


def failure_response(failure: FailNext) -> Response:
    """The error a `fail_next`-style knob asks for: its status, Retry-After, envelope or not."""
    headers = []
    if failure.retry_after is not None:
        headers.append((b"retry-after", str(failure.retry_after).encode()))
    response = error_response(failure.status, headers=headers)
    if not failure.envelope:
        response.body = b""
        response.headers = headers
    return response
