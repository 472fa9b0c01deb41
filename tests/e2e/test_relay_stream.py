"""Simulator → relay → database → our stream, through real `serve` and simulator processes."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import requests
from httpx_sse import aconnect_sse, connect_sse

from tests.e2e.relay_stack import (
    STAFF_HEALTH,
    RelayStack,
    manage,
    parse_sse,
    relay_stack,
    stream_events,
)

STEPS: list[dict[str, str]] = [
    {"status": "joining"},
    {"status": "active"},
    {"join": "Alice"},
    {"join": "Zoë Müller"},
    {"leave": "Alice"},
    {"join": "Alice"},
    {"status": "completed"},
]
# What a subscriber that connected before the first step receives: (event, key fields).
EXPECTED: list[tuple[str, dict[str, Any]]] = [
    ("status", {"status": "initializing", "previous_status": None}),
    ("status", {"status": "joining", "previous_status": "initializing"}),
    ("status", {"status": "active", "previous_status": "joining"}),
    ("status", {"participant_name": "Alice", "event": "joined"}),
    ("status", {"participant_name": "Zoë Müller", "event": "joined"}),
    ("status", {"participant_name": "Alice", "event": "left"}),
    ("status", {"participant_name": "Alice", "event": "joined"}),
    ("status", {"status": "completed", "previous_status": "active"}),
    ("close", {"reason": "session_ended"}),
]


@pytest.fixture(scope="module", params=["daphne", "uvicorn"])
def stack(request, simulator_server_module, tmp_path_factory) -> Iterator[RelayStack]:
    """Every test here runs on both servers `serve` offers: the contract is the same."""
    with relay_stack(
        simulator_server_module,
        tmp_path_factory.mktemp("relay-e2e"),
        MEETINGDASH_SERVER=request.param,
    ) as running:
        served_by = httpx.get(f"{running.base_url}/healthz", timeout=10).headers.get("server", "")
        assert ("daphne" in served_by) == (request.param == "daphne"), served_by
        yield running


def shape(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(event, data restricted to the keys EXPECTED checks), and checks the contract shape."""
    shaped = []
    for (name, expected), event in zip(EXPECTED, events, strict=False):
        data = event["data"]
        if name == "status" and "event" not in expected:
            assert set(data) == {
                "session_id",
                "status",
                "previous_status",
                "timestamp",
                "error_message",
                "error_code",
            }
        elif name == "status":
            assert set(data) == {"session_id", "participant_name", "event", "timestamp"}
        shaped.append((event["event"], {key: data.get(key) for key in expected}))
    return shaped


def play(stack: RelayStack, session_id: str, steps: list[dict[str, str]] = STEPS) -> None:
    for step in steps:
        stack.simulator.control.emit(session_id, **step)


def assert_ids_increase(events: list[dict[str, Any]]) -> None:
    ids = [int(event["id"]) for event in events]
    assert ids == sorted(set(ids)), ids


class Reader(threading.Thread):
    """Reads our stream with httpx-sse in a thread, recording every event until close."""

    def __init__(self, stack: RelayStack, session_id: str, headers: dict[str, str] | None = None):
        super().__init__(daemon=True)
        self.url = stack.stream_url(session_id)
        self.headers = {**stack.auth, **(headers or {})}
        self.events: list[dict[str, Any]] = []
        self.first = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(20)) as client,
                connect_sse(client, "GET", self.url, headers=self.headers) as source,
            ):
                for sse in source.iter_sse():
                    if not sse.data:
                        continue
                    self.events.append(
                        {"id": sse.id, "event": sse.event, "data": json.loads(sse.data)}
                    )
                    self.first.set()
                    if sse.event == "close":
                        return
        except BaseException as exc:
            self.error = exc
            self.first.set()


def test_every_subscriber_receives_each_stored_event_exactly_once_then_close(stack) -> None:
    session_id = stack.new_session()
    readers = [Reader(stack, session_id) for _ in range(5)]
    for reader in readers:
        reader.start()
    for reader in readers:
        assert reader.first.wait(10), "no current status"
        assert reader.error is None
    stack.wait_upstream_streams(session_id)

    play(stack, session_id)
    for reader in readers:
        reader.join(20)
        assert not reader.is_alive() and reader.error is None

    stored = stack.history(session_id)
    assert [(kind, status or name) for _, kind, status, _, name in stored] == [
        ("status", "initializing"),
        ("status", "joining"),
        ("status", "active"),
        ("joined", "Alice"),
        ("joined", "Zoë Müller"),
        ("left", "Alice"),
        ("joined", "Alice"),
        ("status", "completed"),
        ("close", ""),
    ]
    for reader in readers:
        assert shape(reader.events) == EXPECTED
        assert len(reader.events) == len(EXPECTED)
        assert [int(e["id"]) for e in reader.events] == [row[0] for row in stored]
    assert stack.simulator.control.stats()["stream_connections_total"][session_id] == 1


async def test_fifty_concurrent_subscribers_make_one_upstream_connection(stack) -> None:
    session_id = stack.new_session()

    async def subscriber(client: httpx.AsyncClient, ready: asyncio.Event) -> list[str]:
        names = []
        async with aconnect_sse(
            client, "GET", stack.stream_url(session_id), headers=stack.auth
        ) as source:
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue
                names.append(sse.event + ":" + json.loads(sse.data).get("status", ""))
                ready.set()
                if sse.event == "close":
                    return names
        return names

    limits = httpx.Limits(max_connections=100)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        readies = [asyncio.Event() for _ in range(50)]
        tasks = [asyncio.create_task(subscriber(client, ready)) for ready in readies]
        await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 20)
        await asyncio.to_thread(
            play, stack, session_id, [{"status": "active"}, {"status": "completed"}]
        )
        results = await asyncio.wait_for(asyncio.gather(*tasks), 20)

    expected = ["status:initializing", "status:active", "status:completed", "close:"]
    assert all(result == expected for result in results)
    stats = stack.simulator.control.stats()
    assert stats["stream_connections_total"][session_id] == 1


def test_curl_reads_our_stream_to_close(stack) -> None:
    session_id = stack.new_session()
    process = subprocess.Popen(
        [
            "curl",
            "-N",
            "-sS",
            "-H",
            f"Authorization: Bearer {stack.token}",
            stack.stream_url(session_id),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    chunks: list[str] = []
    got_bytes = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            chunks.append(line)
            got_bytes.set()

    pumping = threading.Thread(target=pump, daemon=True)
    pumping.start()
    assert got_bytes.wait(10)
    stack.wait_upstream_streams(session_id)
    play(stack, session_id)
    assert process.wait(20) == 0  # curl exits because our stream ends after close
    pumping.join(5)
    events = parse_sse("".join(chunks))
    assert shape(events) == EXPECTED
    assert_ids_increase(events)


def test_the_providers_requests_loop_reads_our_stream_to_close(stack) -> None:
    session_id = stack.new_session()
    received: list[tuple[str, dict[str, Any]]] = []
    connected = threading.Event()

    def provider_example() -> None:
        # The provider's example client, unchanged apart from host and token.
        response = requests.get(
            stack.stream_url(session_id),
            headers={"Authorization": f"Bearer {stack.token}"},
            stream=True,
            timeout=30,
        )
        event_type = None
        for line in response.iter_lines(decode_unicode=True):
            connected.set()
            if not line or line.startswith(":"):
                continue
            if line.startswith("event: "):
                event_type = line[len("event: ") :]
            elif line.startswith("data: "):
                data = json.loads(line[len("data: ") :])
                received.append((event_type or "message", data))
                if event_type == "close":
                    break

    thread = threading.Thread(target=provider_example, daemon=True)
    thread.start()
    assert connected.wait(10)
    stack.wait_upstream_streams(session_id)
    play(stack, session_id)
    thread.join(20)
    assert not thread.is_alive()
    assert shape([{"event": name, "data": data} for name, data in received]) == EXPECTED


@pytest.mark.browser
async def test_a_browser_eventsource_reads_our_stream_to_close(stack, chromium) -> None:
    session_id = stack.new_session()
    page = await chromium.new_page()
    try:
        await page.goto(stack.base_url + "/accounts/login/")
        await page.fill("input[name=username]", "bob")
        await page.fill("input[name=password]", "bob-password-123")
        await page.click("button[type=submit]")
        await page.wait_for_load_state()
        await page.evaluate(
            """(url) => {
                window.received = [];
                const source = new EventSource(url);
                source.addEventListener("status", (e) => window.received.push(
                    {event: "status", id: e.lastEventId, data: JSON.parse(e.data)}));
                source.addEventListener("close", (e) => {
                    window.received.push({event: "close", id: e.lastEventId, data: JSON.parse(e.data)});
                    source.close();
                });
            }""",
            f"/v1/meeting-buddy/sessions/{session_id}/stream",
        )
        await page.wait_for_function("() => window.received.length >= 1", timeout=10_000)
        await asyncio.to_thread(stack.wait_upstream_streams, session_id)
        play(stack, session_id)
        await page.wait_for_function(
            "() => window.received.length && window.received.at(-1).event === 'close'",
            timeout=20_000,
        )
        events = await page.evaluate("window.received")
    finally:
        await page.close()
    assert shape(events) == EXPECTED
    assert_ids_increase(events)


def test_last_event_id_resumes_with_exactly_the_missed_events_then_live(stack) -> None:
    session_id = stack.new_session()
    first = Reader(stack, session_id)
    first.start()
    assert first.first.wait(10)
    stack.wait_upstream_streams(session_id)
    play(stack, session_id, STEPS[:3])
    stack.wait_stored(session_id, 4)
    # A client that saw up to the first join reconnects while more happens.
    seen = stack.history(session_id)[3][0]
    play(stack, session_id, STEPS[3:5])
    stack.wait_stored(session_id, 6)
    resumed = Reader(stack, session_id, headers={"Last-Event-ID": str(seen)})
    resumed.start()
    assert resumed.first.wait(10)
    play(stack, session_id, STEPS[5:])
    resumed.join(20)
    first.join(20)

    assert shape(first.events) == EXPECTED
    tail = EXPECTED[4:]
    assert [
        (e["event"], {k: e["data"].get(k) for k in exp})
        for e, (_, exp) in zip(resumed.events, tail, strict=True)
    ] == tail
    assert [e["id"] for e in resumed.events] == [e["id"] for e in first.events[4:]]


def test_a_late_subscriber_to_an_ended_session_gets_its_history_then_close(stack) -> None:
    session_id = stack.new_session()
    reader = Reader(stack, session_id)
    reader.start()
    assert reader.first.wait(10)
    stack.wait_upstream_streams(session_id)
    play(stack, session_id)
    reader.join(20)

    late = stream_events(stack, session_id)
    assert shape(late) == EXPECTED
    assert len(late) == len(EXPECTED)
    assert [e["id"] for e in late] == [e["id"] for e in reader.events]
    after_last = stream_events(stack, session_id, headers={"Last-Event-ID": late[-2]["id"]})
    assert [e["event"] for e in after_last] == ["close"]
    # An id we never issued starts afresh instead of hiding everything up to it.
    unknown_id = stream_events(stack, session_id, headers={"Last-Event-ID": "999999"})
    assert [e["id"] for e in unknown_id] == [e["id"] for e in late]


def test_stream_headers_and_keepalive(stack) -> None:
    session_id = stack.new_session()
    with httpx.stream(
        "GET", stack.stream_url(session_id), headers=stack.auth, timeout=10
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        body = b""
        started = time.monotonic()
        for chunk in response.iter_bytes():
            body += chunk
            if body.count(b": keepalive") >= 2 or time.monotonic() - started > 5:
                break
    assert body.count(b": keepalive\n\n") >= 2
    assert re.search(rb"id: \d+\nevent: status\ndata: \{", body)
    stack.simulator.control.emit(session_id, status="completed")


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["success"] is False
    assert set(body["error"]) >= {
        "code",
        "message",
        "type",
        "status",
        "details",
        "trace_id",
        "timestamp",
    }
    assert body["error"]["status"] == response.status_code
    return body["error"]


def test_errors_use_the_upstream_envelope(stack) -> None:
    known = stack.new_session()
    url = stack.stream_url
    no_token = httpx.get(url(known), timeout=10)
    assert no_token.status_code == 401 and error_of(no_token)["code"] == "UNAUTHORIZED"
    wrong = httpx.get(url(known), headers={"Authorization": "Bearer mdk_wrong"}, timeout=10)
    assert wrong.status_code == 401 and error_of(wrong)["code"] == "UNAUTHORIZED"

    malformed = httpx.get(url("abc123"), headers=stack.auth, timeout=10)
    assert malformed.status_code == 422
    assert error_of(malformed)["code"] == "INVALID_SESSION_ID_FORMAT"
    assert error_of(malformed)["details"] == {"session_id": "abc123"}

    unknown = httpx.get(url("mbsess_doesnotexist1"), headers=stack.auth, timeout=10)
    assert unknown.status_code == 404 and error_of(unknown)["code"] == "SESSION_NOT_FOUND"
    stack.simulator.control.emit(known, status="completed")


def test_a_revoked_token_gets_401(stack) -> None:
    output = manage(["create_api_token", "bob", "--name", "to-revoke"], stack.env)
    token = output.strip().splitlines()[-1].split()[-1]
    session_id = stack.new_session()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.stream("GET", stack.stream_url(session_id), headers=headers, timeout=10) as ok:
        assert ok.status_code == 200
    manage(
        [
            "shell",
            "-c",
            "from sessions_monitor.models import ApiToken; from sessions_monitor.tokens import revoke;"
            " [revoke(t) for t in ApiToken.objects.filter(name='to-revoke')]",
        ],
        stack.env,
    )
    revoked = httpx.get(stack.stream_url(session_id), headers=headers, timeout=10)
    assert revoked.status_code == 401 and error_of(revoked)["code"] == "UNAUTHORIZED"
    stack.simulator.control.emit(session_id, status="completed")


def test_a_session_only_known_upstream_is_watched_on_first_subscription(stack) -> None:
    session_id = stack.new_session(bot_name="Notetaker")
    assert stack.query(
        "SELECT count(*) FROM sessions_monitor_meetingsession WHERE session_id = ?", session_id
    ) == [(0,)]
    reader = Reader(stack, session_id)
    reader.start()
    assert reader.first.wait(10) and reader.error is None
    stack.wait_upstream_streams(session_id)
    assert stack.query(
        "SELECT watched, bot_name FROM sessions_monitor_meetingsession WHERE session_id = ?",
        session_id,
    ) == [(1, "Notetaker")]
    stack.simulator.control.emit(session_id, status="completed")
    reader.join(20)
    assert [e["event"] for e in reader.events] == ["status", "status", "close"]


def test_discovery_watches_new_upstream_sessions_within_the_interval(
    simulator_server, tmp_path
) -> None:
    with relay_stack(simulator_server, tmp_path, MEETINGDASH_DISCOVERY_SECONDS="1") as stack:
        ended = stack.new_session()
        stack.simulator.control.emit(ended, status="completed")
        time.sleep(1.2)  # let a discovery pass see the ended one
        live = stack.new_session()
        created = time.monotonic()
        while not stack.query(
            "SELECT 1 FROM sessions_monitor_meetingsession WHERE session_id = ? AND watched", live
        ):
            assert time.monotonic() - created < 2.0, "not watched within DISCOVERY_SECONDS + 1 s"
            time.sleep(0.05)
        stack.wait_upstream_streams(live)
        assert stack.query(
            "SELECT count(*) FROM sessions_monitor_meetingsession WHERE session_id = ?", ended
        ) == [(0,)]
        health = httpx.get(stack.base_url + "/healthz", headers=STAFF_HEALTH, timeout=10).json()
        assert health["relay"]["running"] is True
        # SIGTERM: the relay stops its tasks and the process exits cleanly.
        assert stack.server.terminate() == 0
        assert "relay stopped" in stack.server.log()
