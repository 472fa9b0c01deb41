"""MeetingBuddyClient: REST against the real simulator, error mapping, ids, backoff, and the
stream behaviours the simulator cannot produce (204, `retry:`, Last-Event-ID header), which
use httpx.MockTransport at the byte level."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from sessions_monitor.simulator.control import AsyncSimulatorControl
from sessions_monitor.upstream import (
    ActiveSession,
    BackoffPolicy,
    ClientError,
    Forbidden,
    InvalidSessionId,
    LinkState,
    LinkStateName,
    MalformedResponse,
    MeetingBuddyClient,
    RateLimited,
    SessionNotFound,
    StatusChanged,
    StreamClosed,
    StreamDisconnected,
    StreamStalled,
    Unauthorized,
    UpstreamError,
    UpstreamEvent,
    UpstreamSession,
    UpstreamUnavailable,
    WrongContentType,
    is_valid_session_id,
    validate_session_id,
)
from sessions_monitor.upstream.errors import error_from_response, parse_retry_after
from tests.support import free_port

SID = "mbsess_abc123def456"
TOKEN = "s3cret-token-value"
FAST = BackoffPolicy(initial=0.01, cap=0.05, reset_after_healthy=60.0)


def status_line(status: str, *, event_id: str | None = None) -> bytes:
    data = json.dumps({"session_id": SID, "status": status, "previous_status": None})
    id_line = f"id: {event_id}\n" if event_id else ""
    return f"event: status\n{id_line}data: {data}\n\n".encode()


CLOSE = b'event: close\ndata: {"reason":"session_ended"}\n\n'


def sse(body: bytes, status: int = 200, content_type: str = "text/event-stream") -> httpx.Response:
    return httpx.Response(status, headers={"content-type": content_type}, content=body)


def envelope(status: int, code: str, message: str = "nope", **details: Any) -> bytes:
    return json.dumps(
        {
            "success": False,
            "error": {
                "code": code,
                "message": message,
                "type": "client_error" if status < 500 else "server_error",
                "status": status,
                "details": details,
                "trace_id": "7f1c",
                "timestamp": "2025-12-11T10:00:00Z",
            },
        }
    ).encode()


class Script:
    """A MockTransport handler answering from a list, recording every request."""

    def __init__(
        self, *responses: httpx.Response | Callable[[httpx.Request], httpx.Response]
    ) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.responses.pop(0) if len(self.responses) > 1 else self.responses[0]
        return answer(request) if callable(answer) else answer


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], token: str = TOKEN
) -> MeetingBuddyClient:
    transport = httpx.MockTransport(handler)
    return MeetingBuddyClient(
        "http://upstream.test/",
        token,
        http_client=httpx.AsyncClient(transport=transport),
        rng=random.Random(1),
    )


async def follow_all(client: MeetingBuddyClient, **kwargs: Any) -> list[UpstreamEvent | LinkState]:
    items: list[UpstreamEvent | LinkState] = []
    async with asyncio.timeout(10):
        stream = client.follow_status(
            SID, stall_seconds=kwargs.pop("stall_seconds", 2.0), backoff=FAST, **kwargs
        )
        async with aclosing(stream) as follow:
            async for item in follow:
                items.append(item)
    return items


def states(items: list[UpstreamEvent | LinkState]) -> list[str]:
    return [
        f"{item.state}:{item.reason}" if item.reason else str(item.state)
        for item in items
        if isinstance(item, LinkState)
    ]


# -- session ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["mbsess_a", "mbsess_abc123def456", "mbsess_A-b_9", "mbsess_" + "x" * 64]
)
def test_valid_session_ids_pass_unchanged(value: str) -> None:
    assert validate_session_id(value) == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "mbsess_",
        "abc123",
        "MBSESS_abc",
        "mbsess_../admin",
        "mbsess_a/b",
        "mbsess_a?x=1",
        "mbsess_a#f",
        "mbsess_a%2F",
        "mbsess_a b",
        "mbsess_abc\n",
        " mbsess_abc",
        "mbsess_é",
        "mbsess_\u0661",
        "mbsess_" + "x" * 65,
        None,
        42,
    ],
)
async def test_invalid_session_ids_raise_before_any_request(value: Any) -> None:
    script = Script(lambda request: pytest.fail("no request may be sent"))
    assert not is_valid_session_id(value)
    with pytest.raises(InvalidSessionId) as raised:
        validate_session_id(value)
    assert raised.value.code == "INVALID_SESSION_ID_FORMAT"
    async with mock_client(script) as client:
        with pytest.raises(InvalidSessionId):
            await client.get_session(value)
        with pytest.raises(InvalidSessionId):
            await client.stop_session(value)
        with pytest.raises(InvalidSessionId):
            async for _ in client.stream_status(value):
                pass
    assert script.requests == []


# -- error mapping ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls", "code"),
    [
        (404, SessionNotFound, "SESSION_NOT_FOUND"),
        (422, InvalidSessionId, "INVALID_SESSION_ID_FORMAT"),
        (401, Unauthorized, "TOKEN_EXPIRED"),
        (403, Forbidden, "ORGANIZATION_ACCESS_DENIED"),
        (429, RateLimited, "RATE_LIMIT_EXCEEDED"),
        (503, UpstreamUnavailable, "SERVICE_UNAVAILABLE"),
        (409, ClientError, "CONFLICT"),
    ],
)
def test_the_error_envelope_maps_to_typed_errors(
    status: int, cls: type[UpstreamError], code: str
) -> None:
    error = error_from_response(
        status, {"retry-after": "7"}, envelope(status, code, "Readable", session_id=SID)
    )
    assert type(error) is cls and isinstance(error, UpstreamError)
    assert (error.code, error.status, error.message) == (code, status, "Readable")
    assert error.details == {"session_id": SID} and error.trace_id == "7f1c"
    assert error.retry_after == 7.0


@pytest.mark.parametrize(
    ("status", "cls", "code", "permanent"),
    [
        (404, SessionNotFound, "SESSION_NOT_FOUND", True),
        (422, InvalidSessionId, "INVALID_SESSION_ID_FORMAT", True),
        (401, Unauthorized, "AUTHENTICATION_REQUIRED", True),
        (403, Forbidden, "ACCESS_DENIED", True),
        (429, RateLimited, "RATE_LIMITED", False),
        (500, UpstreamUnavailable, "UPSTREAM_UNAVAILABLE", False),
        (502, UpstreamUnavailable, "UPSTREAM_UNAVAILABLE", False),
        (504, UpstreamUnavailable, "UPSTREAM_UNAVAILABLE", False),
        (400, ClientError, "CLIENT_ERROR", True),
    ],
)
@pytest.mark.parametrize(
    "body", [b"", b"<html>Bad Gateway</html>", b'{"unexpected": true}', b"[1]"]
)
def test_bare_status_codes_map_without_an_envelope(
    status: int, cls: type[UpstreamError], code: str, permanent: bool, body: bytes
) -> None:
    error = error_from_response(status, {}, body)
    assert type(error) is cls
    assert (error.code, error.status, error.retry_after, error.permanent) == (
        code,
        status,
        None,
        permanent,
    )
    assert error.message


def test_the_older_detail_shape_gives_a_message() -> None:
    error = error_from_response(404, {}, b'{"detail": "Not here", "status_code": 404}')
    assert isinstance(error, SessionNotFound) and error.message == "Not here"


def test_retry_after_accepts_seconds_and_http_dates_and_is_clamped() -> None:
    now = datetime(2025, 12, 11, 10, 0, tzinfo=UTC)
    later = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after(later, now=now.timestamp()) == pytest.approx(30.0)
    assert (
        parse_retry_after(
            format_datetime(now - timedelta(hours=1), usegmt=True), now=now.timestamp()
        )
        == 0.0
    )
    assert parse_retry_after("999999") == 3600.0
    assert parse_retry_after("-5") is None and parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_the_token_never_appears_in_an_error() -> None:
    body = envelope(401, "TOKEN_INVALID", f"Token {TOKEN} is invalid", header=f"Bearer {TOKEN}")
    error = error_from_response(401, {}, body, secret=TOKEN)
    text = f"{error} {error!r} {error.message} {error.args} {error.details}"
    assert TOKEN not in text and "[redacted]" in error.message


async def test_rest_errors_arrive_typed_and_without_the_token() -> None:
    script = Script(
        httpx.Response(401, content=envelope(401, "TOKEN_INVALID", f"bad {TOKEN}")),
        httpx.Response(429, headers={"retry-after": "3"}, text="slow down"),
        httpx.Response(503, text="<html>down</html>"),
        httpx.Response(200, text="not json"),
    )
    async with mock_client(script) as client:
        with pytest.raises(Unauthorized) as unauthorized:
            await client.get_session(SID)
        with pytest.raises(RateLimited) as limited:
            await client.get_session(SID)
        with pytest.raises(UpstreamUnavailable):
            await client.get_session(SID)
        with pytest.raises(MalformedResponse):
            await client.get_session(SID)
    assert TOKEN not in str(unauthorized.value) and limited.value.retry_after == 3.0
    assert script.requests[0].headers["authorization"] == f"Bearer {TOKEN}"


async def test_a_refused_connection_is_upstream_unavailable() -> None:
    async with MeetingBuddyClient(f"http://127.0.0.1:{free_port()}", TOKEN) as client:
        with pytest.raises(UpstreamUnavailable) as raised:
            await client.list_sessions()
    assert raised.value.code == "CONNECT_FAILED" and raised.value.status is None
    assert TOKEN not in repr(raised.value) and TOKEN not in repr(client)


# -- REST against the real simulator ---------------------------------------------------------


@pytest.fixture
async def sim(
    simulator_server_module: Any,
) -> AsyncIterator[tuple[MeetingBuddyClient, AsyncSimulatorControl]]:
    async with (
        MeetingBuddyClient(simulator_server_module.base_url) as client,
        AsyncSimulatorControl(simulator_server_module.base_url) as control,
    ):
        yield client, control


async def test_rest_calls_against_the_simulator(
    sim: tuple[MeetingBuddyClient, AsyncSimulatorControl],
) -> None:
    client, control = sim
    started = await client.start_session("https://zoom.us/j/123456789", bot_name="Note Taker")
    assert isinstance(started, UpstreamSession)
    assert started.session_id.startswith("mbsess_") and started.status == "initializing"
    assert started.bot_name == "Note Taker" and started.platform == "zoom"
    assert started.created_at is not None and started.created_at.tzinfo is not None
    assert "debug_mode" in started.extra and "session_id" not in started.extra

    fetched = await client.get_session(started.session_id)
    assert fetched.session_id == started.session_id

    await control.emit(started.session_id, status="active")
    active = await client.active_sessions()
    assert started.session_id in {a.session_id for a in active}
    assert all(isinstance(a, ActiveSession) for a in active)

    stopped = await client.stop_session(started.session_id)
    assert stopped.status == "completed"
    assert (await client.stop_session(started.session_id)).status == "completed"  # idempotent

    with pytest.raises(SessionNotFound) as missing:
        await client.get_session("mbsess_nothere")
    assert missing.value.status == 404 and missing.value.code == "SESSION_NOT_FOUND"


async def test_list_sessions_reads_every_page(
    sim: tuple[MeetingBuddyClient, AsyncSimulatorControl],
) -> None:
    client, control = sim
    created = {
        (await control.create_session(session_id=f"mbsess_page{n}", manual=True))["session_id"]
        for n in range(7)
    }
    listed = await client.list_sessions(page_size=3)
    ids = [s.session_id for s in listed]
    assert created <= set(ids) and len(ids) == len(set(ids))
    assert len(listed) == len(await client.list_sessions())  # same with the default page size
    await control.emit("mbsess_page0", status="completed")
    completed = {s.session_id for s in await client.list_sessions(status="completed")}
    assert "mbsess_page0" in completed and "mbsess_page1" not in completed


async def test_rest_needs_the_token(simulator_server_with_token: Any) -> None:
    base = simulator_server_with_token.base_url
    async with MeetingBuddyClient(base, "wrong-token-xyz") as client:
        with pytest.raises(Unauthorized) as raised:
            await client.list_sessions()
    assert raised.value.code == "TOKEN_INVALID" and "wrong-token-xyz" not in str(raised.value)
    async with MeetingBuddyClient(base, "test-token") as client:
        assert await client.list_sessions() == []


async def test_list_sessions_follows_total_pages_and_deduplicates() -> None:
    def page(request: httpx.Request) -> httpx.Response:
        number = int(request.url.params["page"])
        sessions = {
            1: [{"session_id": "mbsess_a", "status": "active", "brand_new_field": 1}],
            2: [
                {"session_id": "mbsess_a", "status": "active"},
                {"session_id": "mbsess_b", "status": "waiting"},
            ],
            3: [],
        }[number]
        return httpx.Response(
            200,
            json={
                "sessions": sessions,
                "total": 2,
                "page": number,
                "page_size": 1,
                "total_pages": 2,
            },
        )

    script = Script(page)
    async with mock_client(script) as client:
        listed = await client.list_sessions(status="active", page_size=1)
    assert [(s.session_id, s.status) for s in listed] == [
        ("mbsess_a", "active"),
        ("mbsess_b", "waiting"),
    ]
    assert listed[0].extra == {"brand_new_field": 1}
    assert [r.url.params["page"] for r in script.requests] == ["1", "2"]
    assert all(r.url.params["status"] == "active" for r in script.requests)


async def test_a_session_object_without_an_id_is_malformed() -> None:
    async with mock_client(Script(httpx.Response(200, json={"status": "active"}))) as client:
        with pytest.raises(MalformedResponse):
            await client.get_session(SID)


# -- backoff ---------------------------------------------------------------------------------


def test_backoff_is_full_jitter_capped_and_floored() -> None:
    policy = BackoffPolicy(initial=1.0, cap=8.0, reset_after_healthy=30.0)
    assert [policy.ceiling(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert policy.ceiling(10_000) == 8.0
    rng = random.Random(7)
    draws = [policy.delay(3, rng=rng) for _ in range(2000)]
    assert 0 <= min(draws) < 0.5 and 7.5 < max(draws) <= 8.0  # the whole [0, cap] range
    assert all(5.0 <= policy.delay(3, floor=5.0, rng=rng) <= 13.0 for _ in range(100))
    with pytest.raises(ValueError):
        BackoffPolicy(initial=2.0, cap=1.0)


# -- stream behaviours at the byte level -----------------------------------------------------


async def test_stream_requests_carry_auth_accept_and_identity_encoding() -> None:
    script = Script(sse(status_line("active") + CLOSE))
    async with mock_client(script) as client:
        events = [e async for e in client.stream_status(SID)]
    assert [type(e) for e in events] == [StatusChanged, StreamClosed]
    [request] = script.requests
    assert request.url.path == f"/v1/meeting-buddy/sessions/{SID}/stream"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.headers["accept"] == "text/event-stream"
    assert request.headers["accept-encoding"] == "identity"
    assert "last-event-id" not in request.headers


async def test_a_204_means_stop_not_wrong_content_type() -> None:
    script = Script(lambda request: httpx.Response(204))
    async with mock_client(script) as client:
        assert [e async for e in client.stream_status(SID)] == []
        items = await follow_all(client)
    assert states(items) == ["connecting", "ended:no_content"]
    assert len(script.requests) == 2


async def test_stream_status_raises_typed_errors() -> None:
    script = Script(
        httpx.Response(404, content=envelope(404, "SESSION_NOT_FOUND")),
        sse(b"<html/>", content_type="text/html"),
        sse(status_line("active")),
        httpx.Response(503, headers={"retry-after": "2"}),
    )
    async with mock_client(script) as client:
        with pytest.raises(SessionNotFound):
            [e async for e in client.stream_status(SID)]
        with pytest.raises(WrongContentType) as wrong:
            [e async for e in client.stream_status(SID)]
        with pytest.raises(StreamDisconnected):
            [e async for e in client.stream_status(SID)]
        with pytest.raises(UpstreamUnavailable) as unavailable:
            [e async for e in client.stream_status(SID)]
    assert wrong.value.status == 200 and "text/html" in wrong.value.message
    assert unavailable.value.retry_after == 2.0


async def test_retry_field_sets_the_reconnect_floor() -> None:
    script = Script(
        sse(b"retry: 700\n\n" + status_line("active")),
        sse(b"retry: -5\nretry: 1_000\n\n" + status_line("active")),
        sse(status_line("completed") + CLOSE),
    )
    async with mock_client(script) as client:
        items = await follow_all(client)
    waits = [i.retry_in for i in items if isinstance(i, LinkState) and i.retry_in is not None]
    assert len(waits) == 2
    # The invalid values were ignored: the 700 ms floor still holds.
    assert all(w is not None and 0.7 <= w <= 0.7 + FAST.cap for w in waits)
    assert states(items)[-1] == "ended:closed"


async def test_last_event_id_is_sent_once_ids_were_seen_and_an_empty_id_resets_it() -> None:
    script = Script(
        sse(status_line("joining", event_id="41") + b"id: 42\n\n"),  # id-only block moves the id
        sse(status_line("active", event_id="43")),
        sse(b"id\n\n" + status_line("active")),  # an empty id resets it
        sse(status_line("completed") + CLOSE),
    )
    async with mock_client(script) as client:
        items = await follow_all(client)
    sent = [r.headers.get("last-event-id") for r in script.requests]
    assert sent == [None, "42", "43", None]
    assert [i.event_id for i in items if isinstance(i, StatusChanged)] == ["41", "43", None, None]


async def test_resume_from_a_given_last_event_id() -> None:
    script = Script(lambda request: sse(status_line("completed") + CLOSE))
    async with mock_client(script) as client:
        await follow_all(client, last_event_id="17")
        [e async for e in client.stream_status(SID, last_event_id="18")]
    assert [r.headers["last-event-id"] for r in script.requests] == ["17", "18"]


async def test_a_terminal_status_without_close_ends_the_follow() -> None:
    script = Script(lambda request: sse(status_line("failed")))
    async with mock_client(script) as client:
        items = await follow_all(client)
        events = [e async for e in client.stream_status(SID)]
    assert states(items) == ["connecting", "live", "ended:terminal_status"]
    assert [e.status for e in events if isinstance(e, StatusChanged)] == ["failed"]
    assert len(script.requests) == 2


class Silence(httpx.AsyncByteStream):
    """Sends `head`, then nothing: a stall on a transport that ignores read timeouts."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        await asyncio.Event().wait()


async def test_the_watchdog_detects_a_stall_on_any_transport() -> None:
    stalled = httpx.Response(
        200, headers={"content-type": "text/event-stream"}, stream=Silence(status_line("active"))
    )
    script = Script(stalled, sse(status_line("completed") + CLOSE))
    async with mock_client(script) as client:
        items = await follow_all(client, stall_seconds=0.2)
        script.responses = [
            httpx.Response(
                200, headers={"content-type": "text/event-stream"}, stream=Silence(b": hi\n\n")
            )
        ]
        with pytest.raises(StreamStalled):
            [e async for e in client.stream_status(SID, stall_seconds=0.2)]
    assert states(items) == [
        "connecting",
        "live",
        "retrying:stall",
        "connecting",
        "live",
        "ended:closed",
    ]
    assert client.metrics.reconnects == {"stall": 1}


async def test_after_a_terminal_status_a_missing_close_is_not_waited_for_long() -> None:
    script = Script(
        httpx.Response(
            200,
            headers={"content-type": "text/event-stream"},
            stream=Silence(status_line("completed")),
        )
    )
    async with mock_client(script) as client:
        items = await follow_all(client, stall_seconds=0.3)
    assert states(items) == ["connecting", "live", "ended:terminal_status"]


async def test_stopping_early_closes_the_connection() -> None:
    closed = asyncio.Event()

    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield status_line("active")
            await asyncio.Event().wait()

        async def aclose(self) -> None:
            closed.set()

    script = Script(
        httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Endless())
    )
    async with mock_client(script) as client:
        async with aclosing(client.follow_status(SID, stall_seconds=5)) as follow:
            async for item in follow:
                if isinstance(item, StatusChanged):
                    break
        assert client.metrics.open_streams == 0
    assert closed.is_set()


async def test_metrics_count_connects_reconnects_events_and_bytes() -> None:
    first = b": keepalive\n\n" + status_line("active") + b"event: status\ndata: {oops\n\n"
    script = Script(sse(first), sse(status_line("completed") + CLOSE))
    async with mock_client(script) as client:
        await follow_all(client)
    snapshot = client.metrics.snapshot()
    assert snapshot["connects"] == 2
    assert snapshot["reconnects"] == {"disconnected": 1}
    assert snapshot["events"] == {"status": 2, "unparseable": 1, "close": 1}
    assert snapshot["unparseable"] == 1
    assert snapshot["bytes_received"] == len(first) + len(status_line("completed") + CLOSE)
    assert snapshot["last_byte_at"] is not None and snapshot["open_streams"] == 0


async def test_a_healthy_connection_resets_the_backoff() -> None:
    policy = BackoffPolicy(initial=0.01, cap=10.0, reset_after_healthy=0.0)
    script = Script(
        sse(status_line("active")),
        sse(status_line("active")),
        sse(status_line("active")),
        sse(status_line("completed") + CLOSE),
    )
    async with mock_client(script) as client:
        items: list[UpstreamEvent | LinkState] = []
        async with aclosing(client.follow_status(SID, stall_seconds=2, backoff=policy)) as follow:
            async for item in follow:
                items.append(item)
    waits = [
        i.retry_in for i in items if isinstance(i, LinkState) and i.state is LinkStateName.RETRYING
    ]
    assert len(waits) == 3 and all(w is not None and w <= 0.01 for w in waits)


async def test_a_tiny_retry_is_clamped_to_a_sane_floor() -> None:
    script = Script(
        sse(b"retry: 1\n\n" + status_line("active")), sse(status_line("completed") + CLOSE)
    )
    async with mock_client(script) as client:
        items = await follow_all(client)
    [wait] = [i.retry_in for i in items if isinstance(i, LinkState) and i.retry_in is not None]
    assert wait is not None and 0.5 <= wait <= 0.5 + FAST.cap
