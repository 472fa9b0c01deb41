"""A client that stops reading costs `serve` a bounded buffer, never an unbounded one: its
writes wait (its events are reloaded from history once it reads again) and, past the stall
limit, it is disconnected and resumes with Last-Event-ID. Everyone else is unaffected.

Real `serve` and simulator processes; the stalled client is a raw socket with a tiny
receive buffer that stops calling recv() while a burst of large events goes out."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.relay_stack import STAFF_HEALTH, RelayStack, relay_stack, stream_events

SERVERS = ["daphne", "uvicorn"]
BUFFER_BYTES = 4096
# The kernel would otherwise take ~2 MB per stalled socket before `serve` buffers anything.
SOCKET_BUFFER_BYTES = 8192
BURST = 800
NAME_PADDING = "x" * 180  # ~0.3 KB frames (names fit their column): ~250 KB in all
ID_LINE = re.compile(rb"^id: (\d+)$", re.MULTILINE)


@pytest.fixture(scope="module", params=SERVERS)
def waiting_stack(
    request: Any, simulator_server_module: Any, tmp_path_factory: Any
) -> Iterator[RelayStack]:
    """A stall limit far longer than the test: a stalled client is only ever waited on."""
    with relay_stack(
        simulator_server_module,
        tmp_path_factory.mktemp("slow-wait"),
        MEETINGDASH_SERVER=request.param,
        MEETINGDASH_SEND_BUFFER_BYTES=str(BUFFER_BYTES),
        MEETINGDASH_SOCKET_SEND_BUFFER_BYTES=str(SOCKET_BUFFER_BYTES),
        MEETINGDASH_STALLED_CLIENT_SECONDS="600",
    ) as running:
        yield running


@pytest.fixture(scope="module", params=SERVERS)
def dropping_stack(
    request: Any, simulator_server_module: Any, tmp_path_factory: Any
) -> Iterator[RelayStack]:
    with relay_stack(
        simulator_server_module,
        tmp_path_factory.mktemp("slow-drop"),
        MEETINGDASH_SERVER=request.param,
        MEETINGDASH_SEND_BUFFER_BYTES=str(BUFFER_BYTES),
        MEETINGDASH_SOCKET_SEND_BUFFER_BYTES=str(SOCKET_BUFFER_BYTES),
        MEETINGDASH_STALLED_CLIENT_SECONDS="2",
    ) as running:
        yield running


def metric(stack: RelayStack, name: str) -> float:
    text = httpx.get(f"{stack.base_url}/metrics", headers=STAFF_HEALTH, timeout=10).text
    for line in text.splitlines():
        if line.startswith((f"{name} ", f"{name}_total ")):
            return float(line.split()[-1])
    raise AssertionError(f"{name} is not in /metrics")


def wait_for(condition: Any, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def open_stalled(stack: RelayStack, session_id: str) -> socket.socket:
    """Our stream on a socket that reads the response head and first keepalive, then
    stops reading (HTTP/1.0: no chunked framing, the server closes at the end)."""
    url = urlsplit(stack.base_url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((url.hostname, url.port))
    sock.sendall(
        f"GET /v1/meeting-buddy/sessions/{session_id}/stream HTTP/1.0\r\n"
        f"Host: {url.netloc}\r\nAuthorization: Bearer {stack.token}\r\n"
        "Accept: text/event-stream\r\n\r\n".encode()
    )
    received = b""
    while b": keepalive" not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    assert received.startswith(b"HTTP/1.1 200") or received.startswith(b"HTTP/1.0 200")
    return sock


def read_until_closed(sock: socket.socket, seconds: float = 30) -> tuple[bytes, bool]:
    """Everything until the server ends the connection; (body, True if it was reset)."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        return received, True
    finally:
        sock.close()
    return received, False


def complete_ids(body: bytes) -> list[int]:
    """Ids of the events received whole (a dropped connection may cut the last one)."""
    whole = body[: body.rfind(b"\n\n") + 2]
    return [int(value) for value in ID_LINE.findall(whole)]


def burst_then_end(stack: RelayStack, session_id: str) -> list[int]:
    stack.wait_upstream_streams(session_id)  # the upstream replays nothing sent before
    for index in range(BURST):
        stack.simulator.control.emit(session_id, join=f"p{index}-{NAME_PADDING}")
    stack.simulator.control.emit(session_id, status="completed")
    stack.wait_stored(session_id, BURST + 3, seconds=60)  # initializing, joins, completed, close
    return [row[0] for row in stack.history(session_id)]


class Reader(threading.Thread):
    """A client that reads normally, beside the stalled one."""

    def __init__(self, stack: RelayStack, session_id: str) -> None:
        super().__init__(daemon=True)
        self.stack, self.session_id = stack, session_id
        self.ids: list[int] = []

    def run(self) -> None:
        self.ids = [int(event["id"]) for event in stream_events(self.stack, self.session_id)]


def test_a_client_that_pauses_during_a_burst_gets_every_event_once_it_reads(
    waiting_stack: RelayStack,
) -> None:
    stack = waiting_stack
    session_id = stack.new_session()
    waits_before = metric(stack, "meetingdash_send_waits")
    stalled = open_stalled(stack, session_id)
    reader = Reader(stack, session_id)
    reader.start()
    stored = burst_then_end(stack, session_id)
    wait_for(
        lambda: metric(stack, "meetingdash_send_waits") > waits_before,
        "the server to wait on the stalled client",
    )

    body, reset = read_until_closed(stalled)
    reader.join(30)

    assert not reset
    assert complete_ids(body) == stored, "every event, in order, once (part of it reloaded)"
    assert reader.ids == stored, "the client that kept reading was not held up"
    assert metric(stack, "meetingdash_stalled_clients_dropped") == 0


def test_a_client_that_stops_reading_is_dropped_and_resumes_without_a_gap(
    dropping_stack: RelayStack,
) -> None:
    stack = dropping_stack
    session_id = stack.new_session()
    dropped_before = metric(stack, "meetingdash_stalled_clients_dropped")
    stalled = open_stalled(stack, session_id)
    reader = Reader(stack, session_id)
    reader.start()
    stored = burst_then_end(stack, session_id)
    wait_for(
        lambda: metric(stack, "meetingdash_stalled_clients_dropped") > dropped_before,
        "the stalled client to be dropped",
    )

    body, _ = read_until_closed(stalled)
    got = complete_ids(body)
    assert got == stored[: len(got)], "what it got before the drop is in order"
    assert len(got) < len(stored), "it was dropped before the end"
    resumed = stream_events(stack, session_id, headers={"Last-Event-ID": str(got[-1])})
    assert got + [int(event["id"]) for event in resumed] == stored, "no gap, no duplicate"
    reader.join(30)
    assert reader.ids == stored
