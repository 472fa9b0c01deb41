"""follow_status over real sockets against the simulator's fault knobs.

Each test asserts the exact sequence of events and link states. Backoff and stall windows
are small so the suite stays fast; every wait is bounded by `asyncio.timeout`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from typing import Any

import httpx
import pytest

from sessions_monitor.simulator.control import AsyncSimulatorControl
from sessions_monitor.upstream import (
    BackoffPolicy,
    Forbidden,
    InvalidSessionId,
    LinkState,
    LinkStateName,
    MeetingBuddyClient,
    ParticipantJoined,
    ParticipantLeft,
    SessionNotFound,
    StatusChanged,
    StreamClosed,
    Unauthorized,
    Unparseable,
    UpstreamEvent,
    make_http_client,
)
from tests.support import eventually

FAST = BackoffPolicy(initial=0.05, cap=0.2, reset_after_healthy=60.0)
Item = UpstreamEvent | LinkState


def describe(item: Item) -> tuple[Any, ...]:
    """A compact, exact picture of an item for sequence assertions."""
    match item:
        case LinkState(state=LinkStateName.RETRYING, reason=reason):
            return ("retrying", reason)
        case LinkState(state=LinkStateName.FAILED, reason=reason, error_code=code):
            return ("failed", reason, code)
        case LinkState(state=LinkStateName.ENDED, reason=reason):
            return ("ended", reason)
        case LinkState(state=state):
            return (str(state),)
        case StatusChanged(status=status):
            return ("status", status)
        case ParticipantJoined(participant_name=name):
            return ("joined", name)
        case ParticipantLeft(participant_name=name):
            return ("left", name)
        case StreamClosed(reason=reason):
            return ("close", reason)
        case Unparseable(event_name=name, reason=reason):
            return ("unparseable", name, reason)
    raise AssertionError(item)


Hook = Callable[[Item, list[Item]], Any]


async def run_follow(
    client: MeetingBuddyClient,
    session_id: str,
    *,
    on_item: Hook | None = None,
    stall_seconds: float = 5.0,
    backoff: BackoffPolicy = FAST,
    deadline: float = 15.0,
    stop: Callable[[list[Item]], bool] | None = None,
) -> list[Item]:
    """Run follow_status to its end (or `stop`), calling `on_item` after each item."""
    items: list[Item] = []
    async with asyncio.timeout(deadline):
        stream = client.follow_status(session_id, stall_seconds=stall_seconds, backoff=backoff)
        async with aclosing(stream) as follow:
            async for item in follow:
                items.append(item)
                if on_item is not None:
                    result = on_item(item, items)
                    if asyncio.iscoroutine(result):
                        await result
                if stop is not None and stop(items):
                    break
    return items


def is_status(item: Item, status: str) -> bool:
    return isinstance(item, StatusChanged) and item.status == status


def once(predicate: Callable[[Item], bool], action: Callable[[], Any]) -> Hook:
    """A hook running `action` the first time an item matches."""
    done = False

    async def hook(item: Item, items: list[Item]) -> None:
        nonlocal done
        if not done and predicate(item):
            done = True
            result = action()
            if asyncio.iscoroutine(result):
                await result

    return hook


def chain(*hooks: Hook) -> Hook:
    async def hook(item: Item, items: list[Item]) -> None:
        for each in hooks:
            result = each(item, items)
            if asyncio.iscoroutine(result):
                await result

    return hook


@pytest.fixture
async def control(simulator_server_module: Any) -> AsyncIterator[AsyncSimulatorControl]:
    async with AsyncSimulatorControl(simulator_server_module.base_url) as ctl:
        yield ctl


@pytest.fixture
async def client(simulator_server_module: Any) -> AsyncIterator[MeetingBuddyClient]:
    async with MeetingBuddyClient(simulator_server_module.base_url) as upstream:
        yield upstream


async def new_session(control: AsyncSimulatorControl, name: str) -> str:
    session = await control.create_session(session_id=f"mbsess_{name}", manual=True)
    return str(session["session_id"])


async def test_it_follows_a_session_to_its_close(
    client: MeetingBuddyClient, control: AsyncSimulatorControl
) -> None:
    sid = await new_session(control, "happy")

    async def script() -> None:
        await control.emit(sid, status="joining")
        await control.emit(sid, join="Alice")
        await control.emit(sid, leave="Alice")
        await control.emit(sid, status="completed")

    items = await run_follow(
        client, sid, on_item=once(lambda i: is_status(i, "initializing"), script)
    )
    assert [describe(i) for i in items] == [
        ("connecting",),
        ("live",),
        ("status", "initializing"),
        ("status", "joining"),
        ("joined", "Alice"),
        ("left", "Alice"),
        ("status", "completed"),
        ("close", "session_ended"),
        ("ended", "closed"),
    ]
    assert client.metrics.connects == 1
    assert client.metrics.events["status"] == 3
    assert client.metrics.open_streams == 0


async def test_it_reconnects_after_a_disconnect_mid_stream(
    client: MeetingBuddyClient, control: AsyncSimulatorControl
) -> None:
    sid = await new_session(control, "drop")
    await control.set_faults(sid, drop_after_events=2, drop_times=1)
    hook = chain(
        once(lambda i: is_status(i, "initializing"), lambda: control.emit(sid, status="joining")),
        once(
            lambda i: isinstance(i, LinkState) and i.state is LinkStateName.RETRYING,
            lambda: control.emit(sid, status="active"),
        ),
        once(lambda i: is_status(i, "active"), lambda: control.emit(sid, status="completed")),
    )
    items = await run_follow(client, sid, on_item=hook)
    assert [describe(i) for i in items] == [
        ("connecting",),
        ("live",),
        ("status", "initializing"),
        ("status", "joining"),
        ("retrying", "disconnected"),  # EOF without close is not the end of the session
        ("connecting",),
        ("live",),
        ("status", "active"),  # the upstream's snapshot of the current status
        ("status", "completed"),
        ("close", "session_ended"),
        ("ended", "closed"),
    ]
    [retrying] = [i for i in items if isinstance(i, LinkState) and i.retry_in is not None]
    assert retrying.retry_in is not None and 0 <= retrying.retry_in <= FAST.initial
    assert client.metrics.reconnects == {"disconnected": 1}


async def test_it_resumes_with_last_event_id_when_the_upstream_sends_ids(
    client: MeetingBuddyClient, control: AsyncSimulatorControl
) -> None:
    sid = await new_session(control, "ids")
    await control.set_faults(sid, send_ids=True, drop_after_events=2, drop_times=1)

    async def record(item: Item, items: list[Item]) -> None:
        if is_status(item, "initializing"):
            await control.emit(sid, status="joining")
        lives = [i for i in items if isinstance(i, LinkState) and i.state is LinkStateName.LIVE]
        if len(lives) == 2 and item is lives[-1]:
            await control.emit(sid, status="completed")

    items = await run_follow(client, sid, on_item=record)
    # Resumed after the last id: no snapshot replayed, nothing lost.
    assert [describe(i) for i in items] == [
        ("connecting",),
        ("live",),
        ("status", "initializing"),
        ("status", "joining"),
        ("retrying", "disconnected"),
        ("connecting",),
        ("live",),
        ("status", "completed"),
        ("close", "session_ended"),
        ("ended", "closed"),
    ]
    ids = [i.event_id for i in items if isinstance(i, StatusChanged)]
    assert all(ids) and [int(x) for x in ids if x] == sorted(int(x) for x in ids if x)


async def test_a_stall_without_keepalives_reconnects_within_the_window(
    client: MeetingBuddyClient, control: AsyncSimulatorControl
) -> None:
    sid = await new_session(control, "stall")
    stall_seconds = 0.6
    seen: dict[str, float] = {}

    async def start_stall() -> None:
        await control.set_faults(sid, stall={"seconds": 30, "keepalives": False})

    async def end_stall() -> None:
        seen["retrying_at"] = time.time()
        seen["last_byte_at"] = client.metrics.last_byte_at or 0.0
        await control.reset_faults(sid)

    hook = chain(
        once(lambda i: is_status(i, "initializing"), start_stall),
        once(lambda i: isinstance(i, LinkState) and i.state is LinkStateName.RETRYING, end_stall),
        once(
            lambda i: (
                isinstance(i, LinkState) and i.state is LinkStateName.LIVE and "retrying_at" in seen
            ),
            lambda: control.emit(sid, status="completed"),
        ),
    )
    items = await run_follow(client, sid, on_item=hook, stall_seconds=stall_seconds)
    assert [describe(i) for i in items] == [
        ("connecting",),
        ("live",),
        ("status", "initializing"),
        ("retrying", "stall"),
        ("connecting",),
        ("live",),
        ("status", "initializing"),  # the snapshot again: this upstream sent no ids
        ("status", "completed"),
        ("close", "session_ended"),
        ("ended", "closed"),
    ]
    silence = seen["retrying_at"] - seen["last_byte_at"]
    assert stall_seconds <= silence < stall_seconds + 0.75, silence


async def test_a_stall_with_keepalives_flowing_is_not_a_stall(
    client: MeetingBuddyClient, control: AsyncSimulatorControl
) -> None:
    """Events are held back for 2.5 s but keepalives (every 1 s) keep the 1.5 s window open."""
    sid = await new_session(control, "quiet")

    async def hold_events() -> None:
        await control.set_faults(sid, stall={"seconds": 2.5, "keepalives": True})
        await control.emit(sid, status="completed")

    started = time.monotonic()
    items = await run_follow(
        client,
        sid,
        on_item=once(lambda i: is_status(i, "initializing"), hold_events),
        stall_seconds=1.5,
    )
    assert [describe(i) for i in items] == [
        ("connecting",),
        ("live",),
        ("status", "initializing"),
        ("status", "completed"),
        ("close", "session_ended"),
        ("ended", "closed"),
    ]
    assert time.monotonic() - started >= 2.0
    assert client.metrics.reconnects == {}


async def test_a_silence_longer_than_httpx_default_read_timeout_is_survived(
    simulator_server_module: Any, client: MeetingBuddyClient, control: AsyncSimulatorControl
) -> None:
    """The trap: httpx's default 5 s read timeout kills a stream whose upstream only writes
    a keepalive every 15 s. Here 7 s of total silence: a default client dies, ours does not."""
    sid = await new_session(control, "silent")
    url = f"{simulator_server_module.base_url}/v1/meeting-buddy/sessions/{sid}/stream"

    async def default_client_read() -> type[BaseException] | None:
        async with httpx.AsyncClient() as plain, plain.stream("GET", url) as response:
            try:
                async for _ in response.aiter_bytes():
                    pass
            except httpx.ReadTimeout as exc:
                return type(exc)
        return None

    plain_task: asyncio.Task[type[BaseException] | None] | None = None
    finish_task: asyncio.Task[None] | None = None

    async def stall_over() -> bool:
        return (await control.faults())["sessions"][sid]["stall"] is None

    async def both_connected() -> bool:
        return (await control.stats())["open_streams"].get(sid) == 2

    async def finish_after_the_silence() -> None:
        await eventually(stall_over, 15, "the stall to end")
        await control.emit(sid, status="completed")

    async def go_silent() -> None:
        nonlocal plain_task, finish_task
        plain_task = asyncio.create_task(default_client_read())
        await eventually(both_connected, what="both clients to be connected")
        await control.set_faults(sid, stall={"seconds": 7, "keepalives": False})
        finish_task = asyncio.create_task(finish_after_the_silence())

    items = await run_follow(
        client,
        sid,
        on_item=once(lambda i: is_status(i, "initializing"), go_silent),
        stall_seconds=8.0,
        deadline=20,
    )
    assert [describe(i) for i in items] == [
        ("connecting",),
        ("live",),
        ("status", "initializing"),
        ("status", "completed"),
        ("close", "session_ended"),
        ("ended", "closed"),
    ]
    assert plain_task is not None and finish_task is not None
    assert await plain_task is httpx.ReadTimeout
    await finish_task
    assert client.metrics.reconnects == {}


@pytest.mark.parametrize(
    ("status", "envelope", "reason"),
    [(503, True, "unavailable"), (503, False, "unavailable"), (429, True, "rate_limited")],
)
async def test_it_backs_off_for_retry_after_then_connects(
    client: MeetingBuddyClient,
    control: AsyncSimulatorControl,
    status: int,
    envelope: bool,
    reason: str,
) -> None:
    sid = await new_session(control, f"busy{status}{int(envelope)}")
    await control.set_faults(
        sid, fail_next={"count": 1, "status": status, "retry_after": 1, "envelope": envelope}
    )
    started = time.monotonic()
    items = await run_follow(
        client,
        sid,
        on_item=once(
            lambda i: is_status(i, "initializing"), lambda: control.emit(sid, status="completed")
        ),
    )
    assert [describe(i) for i in items] == [
        ("connecting",),
        ("retrying", reason),
        ("connecting",),
        ("live",),
        ("status", "initializing"),
        ("status", "completed"),
        ("close", "session_ended"),
        ("ended", "closed"),
    ]
    retry_in = items[1].retry_in  # type: ignore[union-attr]
    assert retry_in is not None and 1.0 <= retry_in <= 1.0 + FAST.initial
    assert time.monotonic() - started >= 1.0


async def test_backoff_grows_and_is_capped_across_repeated_failures(
    client: MeetingBuddyClient, control: AsyncSimulatorControl
) -> None:
    sid = await new_session(control, "flaky")
    await control.set_faults(sid, fail_next={"count": 4, "status": 502, "retry_after": None})
    items = await run_follow(
        client, sid, stop=lambda items: any(is_status(i, "initializing") for i in items)
    )
    waits = [i.retry_in for i in items if isinstance(i, LinkState) and i.retry_in is not None]
    assert len(waits) == 4
    for attempt, wait in enumerate(waits):
        assert wait is not None and 0 <= wait <= FAST.ceiling(attempt)
    assert [FAST.ceiling(a) for a in range(4)] == [0.05, 0.1, 0.2, 0.2]


async def test_an_unknown_session_fails_with_session_not_found(
    client: MeetingBuddyClient, control: AsyncSimulatorControl
) -> None:
    items: list[Item] = []
    with pytest.raises(SessionNotFound) as raised:
        async with aclosing(
            client.follow_status("mbsess_missing", stall_seconds=5, backoff=FAST)
        ) as follow:
            async for item in follow:
                items.append(item)
    assert [describe(i) for i in items] == [
        ("connecting",),
        ("failed", "not_found", "SESSION_NOT_FOUND"),
    ]
    assert raised.value.status == 404
    stats = await control.stats()
    assert stats["stream_connections_total"]["mbsess_missing"] == 1  # no retry loop


async def test_an_invalid_id_fails_without_touching_the_network(
    client: MeetingBuddyClient, control: AsyncSimulatorControl
) -> None:
    before = (await control.stats())["requests_total"]
    items: list[Item] = []
    with pytest.raises(InvalidSessionId):
        async for item in client.follow_status("mbsess_../../admin", stall_seconds=5):
            items.append(item)
    assert [describe(i) for i in items] == [
        ("failed", "invalid_session_id", "INVALID_SESSION_ID_FORMAT")
    ]
    assert (await control.stats())["requests_total"] == before
    assert client.metrics.connects == 0


@pytest.mark.parametrize(
    ("status", "error", "reason"),
    [
        (422, InvalidSessionId, "invalid_session_id"),
        (403, Forbidden, "forbidden"),
        (404, SessionNotFound, "not_found"),
    ],
)
async def test_a_permanent_status_from_the_upstream_fails_at_once(
    client: MeetingBuddyClient,
    control: AsyncSimulatorControl,
    status: int,
    error: type[Exception],
    reason: str,
) -> None:
    sid = await new_session(control, f"perm{status}")
    await control.set_faults(sid, fail_next={"count": 5, "status": status, "retry_after": None})
    items: list[Item] = []
    with pytest.raises(error):
        async for item in client.follow_status(sid, stall_seconds=5, backoff=FAST):
            items.append(item)
    assert [describe(i)[:2] for i in items] == [("connecting",), ("failed", reason)]
    assert (await control.stats())["stream_connections_total"][sid] == 1


async def test_a_wrong_content_type_is_retried(
    client: MeetingBuddyClient, control: AsyncSimulatorControl
) -> None:
    sid = await new_session(control, "html")
    await control.set_faults(sid, wrong_content_type_next=1)
    items = await run_follow(
        client,
        sid,
        on_item=once(
            lambda i: is_status(i, "initializing"),
            lambda: control.emit(
                sid, status="failed", error_code="BOT_KICKED", error_message="Removed"
            ),
        ),
    )
    assert [describe(i) for i in items] == [
        ("connecting",),
        ("retrying", "wrong_content_type"),
        ("connecting",),
        ("live",),
        ("status", "initializing"),
        ("status", "failed"),
        ("close", "session_ended"),
        ("ended", "closed"),
    ]
    failed = items[5]
    assert isinstance(failed, StatusChanged) and failed.error_code == "BOT_KICKED"


async def test_bad_and_unknown_events_are_delivered_as_unparseable_and_the_stream_goes_on(
    client: MeetingBuddyClient, control: AsyncSimulatorControl
) -> None:
    sid = await new_session(control, "noisy")
    await control.set_faults(
        sid, malformed_next=1, unknown_event_next=1, line_ending="cr", chunk_size=7
    )
    items = await run_follow(
        client,
        sid,
        on_item=once(
            lambda i: is_status(i, "initializing"), lambda: control.emit(sid, status="completed")
        ),
    )
    assert [describe(i) for i in items] == [
        ("connecting",),
        ("live",),
        ("unparseable", "status", "invalid_json"),
        ("unparseable", "bot_metrics", "unknown_event"),
        ("status", "initializing"),
        ("status", "completed"),
        ("close", "session_ended"),
        ("ended", "closed"),
    ]
    assert client.metrics.unparseable == 2


async def test_a_terminal_session_ends_at_once(
    client: MeetingBuddyClient, control: AsyncSimulatorControl
) -> None:
    sid = await new_session(control, "done")
    await control.emit(sid, status="completed")
    items = await run_follow(client, sid)
    assert [describe(i) for i in items] == [
        ("connecting",),
        ("live",),
        ("status", "completed"),
        ("close", "session_ended"),
        ("ended", "closed"),
    ]


async def test_unauthorized_fails_and_never_leaks_the_token(
    simulator_server_with_token: Any,
) -> None:
    base = simulator_server_with_token.base_url
    async with AsyncSimulatorControl(base) as ctl:
        sid = await new_session(ctl, "auth")
    for token, code in (("", "AUTHENTICATION_REQUIRED"), ("wrong-secret-token", "TOKEN_INVALID")):
        async with MeetingBuddyClient(base, token) as upstream:
            items: list[Item] = []
            with pytest.raises(Unauthorized) as raised:
                async for item in upstream.follow_status(sid, stall_seconds=5, backoff=FAST):
                    items.append(item)
        assert [describe(i) for i in items] == [("connecting",), ("failed", "unauthorized", code)]
        if token:
            error = raised.value
            assert token not in f"{error} {error!r} {error.message} {error.args} {error.details}"
    async with MeetingBuddyClient(base, "test-token") as upstream:
        items = await run_follow(
            upstream, sid, stop=lambda items: any(is_status(i, "initializing") for i in items)
        )
    assert [describe(i) for i in items] == [("connecting",), ("live",), ("status", "initializing")]


async def test_one_client_holds_more_streams_than_httpx_default_pool(
    simulator_server_module: Any, control: AsyncSimulatorControl
) -> None:
    """The trap: httpx's default pool has 100 connections, so stream 101 waits and then
    fails with PoolTimeout. Our shared client is sized for thousands."""
    streams = 130
    sid = await new_session(control, "crowd")
    url = f"{simulator_server_module.base_url}/v1/meeting-buddy/sessions/{sid}/stream"

    async with MeetingBuddyClient(
        simulator_server_module.base_url, http_client=make_http_client()
    ) as upstream:
        live = 0
        all_live = asyncio.Event()

        async def follower() -> list[Item]:
            nonlocal live

            def first_event(items: list[Item]) -> bool:
                return any(isinstance(i, StatusChanged) for i in items)

            async def count(item: Item, items: list[Item]) -> None:
                nonlocal live
                if isinstance(item, StatusChanged):
                    live += 1
                    if live == streams:
                        all_live.set()
                    await all_live.wait()  # hold the connection until everyone is in

            return await run_follow(upstream, sid, on_item=count, stop=first_event, deadline=25)

        results = await asyncio.gather(*(follower() for _ in range(streams)))
    assert all(
        [describe(i) for i in items] == [("connecting",), ("live",), ("status", "initializing")]
        for items in results
    )
    assert upstream.metrics.connects == streams

    # The same load on a default-sized pool: the 101st stream cannot get a connection.
    async with httpx.AsyncClient(timeout=httpx.Timeout(5.0, pool=0.5)) as plain:
        opened: list[Any] = []
        try:
            for _ in range(100):
                opened.append(await plain.send(plain.build_request("GET", url), stream=True))
            with pytest.raises(httpx.PoolTimeout):
                await plain.send(plain.build_request("GET", url), stream=True)
        finally:
            for response in opened:
                await response.aclose()


async def test_the_upstreams_retry_field_is_the_reconnect_floor(
    client: MeetingBuddyClient, control: AsyncSimulatorControl
) -> None:
    sid = await new_session(control, "retryfield")
    await control.set_faults(sid, retry_ms=800, drop_after_events=1, drop_times=1)
    hook = once(
        lambda i: isinstance(i, LinkState) and i.state is LinkStateName.RETRYING,
        lambda: control.emit(sid, status="completed"),
    )
    started = time.monotonic()
    items = await run_follow(client, sid, on_item=hook)
    assert [describe(i) for i in items] == [
        ("connecting",),
        ("live",),
        ("status", "initializing"),
        ("retrying", "disconnected"),
        ("connecting",),
        ("live",),
        ("status", "completed"),
        ("close", "session_ended"),
        ("ended", "closed"),
    ]
    retry_in = items[3].retry_in  # type: ignore[union-attr]
    assert retry_in is not None and 0.8 <= retry_in <= 0.8 + FAST.initial
    assert time.monotonic() - started >= 0.8
