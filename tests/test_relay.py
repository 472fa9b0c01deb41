"""The relay against the real simulator (a subprocess), in this test's event loop."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async

from sessions_monitor import services
from sessions_monitor.hub import Hub
from sessions_monitor.models import MeetingSession, SessionEvent, StreamState
from sessions_monitor.relay.worker import Relay
from sessions_monitor.upstream import LinkState, LinkStateName, StatusChanged
from tests.support import eventually, fast_relay

pytestmark = pytest.mark.django_db(transaction=True)


def sid() -> str:
    return f"mbsess_rly{uuid.uuid4().hex[:10]}"


@database_sync_to_async
def history(session_id: str) -> list[tuple[str, str, str, str]]:
    """(kind, status, previous_status, participant) of upstream-contract events, in seq order."""
    return list(
        SessionEvent.objects.filter(
            session_id=session_id, kind__in=["status", "joined", "left", "close"]
        )
        .order_by("seq")
        .values_list("kind", "status", "previous_status", "participant_name")
    )


@database_sync_to_async
def session_row(session_id: str) -> MeetingSession | None:
    return MeetingSession.objects.filter(pk=session_id).first()


@database_sync_to_async
def seqs(session_id: str) -> list[int]:
    return list(
        SessionEvent.objects.filter(session_id=session_id)
        .order_by("seq")
        .values_list("seq", flat=True)
    )


@pytest.fixture
async def relay(simulator_server, fresh_channel_layer) -> AsyncIterator[Relay]:
    relay = fast_relay(simulator_server.base_url)
    await relay.start()
    yield relay
    await relay.stop()


SCRIPT = [
    ("status", "joining"),
    ("status", "active"),
    ("join", "Alice"),
    ("join", "Bob"),
    ("leave", "Alice"),
    ("join", "Alice"),
    ("status", "completed"),
]
EXPECTED = [
    ("status", "initializing", "", ""),
    ("status", "joining", "initializing", ""),
    ("status", "active", "joining", ""),
    ("joined", "", "", "Alice"),
    ("joined", "", "", "Bob"),
    ("left", "", "", "Alice"),
    ("joined", "", "", "Alice"),
    ("status", "completed", "active", ""),
    ("close", "", "", ""),
]


async def play(simulator_server, session_id: str, steps, *, before_each=None) -> None:
    """Emit steps one at a time, each once the relay has an open stream and stored the last."""
    control = simulator_server.control
    for index, (key, value) in enumerate(steps):
        if before_each is not None:
            await before_each(index)
        await eventually(
            lambda: asyncio.to_thread(
                lambda: control.stats()["open_streams"].get(session_id, 0) == 1
            )
        )
        stored = len(await history(session_id))
        await asyncio.to_thread(control.emit, session_id, **{key: value})
        await eventually(functools.partial(_grew, session_id, stored))


async def _grew(session_id: str, before: int) -> bool:
    return len(await history(session_id)) > before


async def test_it_stores_a_session_exactly_once_in_upstream_order(relay, simulator_server) -> None:
    session_id = sid()
    simulator_server.control.create_session(session_id=session_id, manual=True)
    hub = Hub()
    subscription = await hub.subscribe(session_id)
    assert await relay.watch(session_id) is True
    assert await relay.watch(session_id) is False  # already followed

    await play(simulator_server, session_id, SCRIPT)
    await eventually(lambda: _ended(relay, session_id))

    assert await history(session_id) == EXPECTED
    all_seqs = await seqs(session_id)
    assert all_seqs == list(range(1, len(all_seqs) + 1))
    received = []
    while (message := subscription.get_nowait()) is not None:
        received.append(message.data)
    streamed = [
        (e["kind"], e["status"], e["previous_status"], e["participant_name"])
        for e in received
        if e["kind"] in ("status", "joined", "left", "close")
    ]
    assert streamed == EXPECTED
    row = await session_row(session_id)
    assert row.stream_state == StreamState.ENDED
    # The meeting ended: nobody is present any more, the peak stays.
    assert (row.participants_present, row.peak_participants) == (0, 2)
    assert simulator_server.control.stats()["stream_connections_total"][session_id] == 1
    subscription.close()


def drain(subscription) -> list[tuple[str, str, str, str]]:
    """What a hub subscriber received, restricted to the upstream-contract kinds."""
    received = []
    while (message := subscription.get_nowait()) is not None:
        assert message.kind == "event", message
        received.append(message.data)
    return [
        (e["kind"], e["status"], e["previous_status"], e["participant_name"])
        for e in received
        if e["kind"] in ("status", "joined", "left", "close")
    ]


async def _ended(relay: Relay, session_id: str) -> bool:
    row = await session_row(session_id)
    return not relay.is_following(session_id) and row is not None and row.stream_state == "ended"


async def test_it_reconnects_after_a_drop_without_loss_or_duplicates(
    relay, simulator_server
) -> None:
    session_id = sid()
    simulator_server.control.create_session(session_id=session_id, manual=True)
    simulator_server.control.set_faults(session_id, drop_after_events=3)
    subscriptions = [await Hub().subscribe(session_id) for _ in range(3)]
    await relay.watch(session_id)

    await play(simulator_server, session_id, SCRIPT)
    await eventually(lambda: _ended(relay, session_id))

    assert await history(session_id) == EXPECTED
    for subscription in subscriptions:
        assert drain(subscription) == EXPECTED
        subscription.close()
    stats = simulator_server.control.stats()
    assert stats["stream_connections_total"][session_id] >= 3
    notes = await database_sync_to_async(
        lambda: list(
            SessionEvent.objects.filter(session_id=session_id, kind="stream").values_list(
                "status", flat=True
            )
        )
    )()
    assert "retrying" in notes


async def test_it_replaces_a_silent_stall_within_the_stall_timeout(relay, simulator_server) -> None:
    session_id = sid()
    simulator_server.control.create_session(session_id=session_id, manual=True)
    subscription = await Hub().subscribe(session_id)
    await relay.watch(session_id)
    await play(simulator_server, session_id, SCRIPT[:2])

    simulator_server.control.set_faults(session_id, stall={"seconds": 1.5, "keepalives": False})
    # Held back by the stalled connection; the reconnect's snapshot carries it instead.
    simulator_server.control.emit(session_id, status="recording")
    await eventually(
        lambda: asyncio.to_thread(
            lambda: simulator_server.control.stats()["stream_connections_total"][session_id] >= 2
        ),
        what="a second upstream connection",
    )
    # Replaced because of the stall timeout (the stall lasts 1.5 s, the timeout is 1 s), not
    # because the upstream ended the stalled response.
    assert relay.client.metrics.reconnects["stall"] >= 1
    await eventually(lambda: _grew(session_id, 3))
    await play(simulator_server, session_id, SCRIPT[2:])
    await eventually(lambda: _ended(relay, session_id))

    expected = [*EXPECTED[:3], ("status", "recording", "active", ""), *EXPECTED[3:]]
    expected[-2] = ("status", "completed", "recording", "")
    assert await history(session_id) == expected
    assert drain(subscription) == expected
    subscription.close()


async def test_a_permanent_upstream_error_is_stored_and_not_retried(
    relay, simulator_server
) -> None:
    session_id = sid()
    await database_sync_to_async(services.mark_watched)(session_id)
    await relay.watch(session_id)
    await eventually(lambda: _state_is(session_id, StreamState.FAILED))
    # A session watched after it failed is followed by the next rescan; that rescan (and
    # one more) leaves the failed one alone.
    later = sid()
    simulator_server.control.create_session(session_id=later, manual=True)
    await database_sync_to_async(services.mark_watched)(later)
    await eventually(lambda: relay.is_following(later), what="a rescan to follow the later one")
    assert session_id not in await relay.rescan_once()

    assert not relay.is_following(session_id)
    row = await session_row(session_id)
    assert row.stream_error_code == "SESSION_NOT_FOUND"
    assert simulator_server.control.stats()["stream_connections_total"].get(session_id, 0) <= 1


async def _state_is(session_id: str, state: str) -> bool:
    row = await session_row(session_id)
    return row is not None and row.stream_state == state


async def test_it_follows_watch_requests_from_the_relay_channel(relay, simulator_server) -> None:
    session_id = sid()
    simulator_server.control.create_session(session_id=session_id, manual=True)
    await services.arequest_watch(session_id)
    await eventually(lambda: _state_is(session_id, StreamState.LIVE))
    assert relay.is_following(session_id)

    assert await relay.handle_watch_message({"type": "session.unwatch", "session_id": session_id})
    assert not relay.is_following(session_id)


async def test_it_resumes_watched_sessions_on_start(simulator_server, fresh_channel_layer) -> None:
    session_id = sid()
    simulator_server.control.create_session(session_id=session_id, manual=True)
    await database_sync_to_async(services.mark_watched)(session_id)
    relay = Relay(upstream_url=simulator_server.base_url, discovery_seconds=0, rescan_seconds=0.2)
    await relay.start()
    try:
        await eventually(lambda: _state_is(session_id, StreamState.LIVE))
    finally:
        await relay.stop()
    assert not relay.is_following(session_id)


async def test_discovery_watches_live_upstream_sessions_but_not_ended_ones(
    relay, simulator_server
) -> None:
    live_id, ended_id = sid(), sid()
    simulator_server.control.create_session(
        session_id=live_id, manual=True, bot_name="Notetaker", platform="zoom"
    )
    simulator_server.control.create_session(session_id=ended_id, manual=True)
    simulator_server.control.emit(ended_id, status="completed")

    started = await relay.discover_once()

    assert live_id in started and ended_id not in started
    row = await session_row(live_id)
    assert (row.watched, row.bot_name, row.platform) == (True, "Notetaker", "zoom")
    assert await session_row(ended_id) is None


async def test_handle_item_is_a_step_tests_can_call(relay) -> None:
    session_id = sid()
    assert await relay.handle_item(session_id, LinkState(LinkStateName.LIVE)) is True
    assert (
        await relay.handle_item(
            session_id, StatusChanged(session_id, "completed", "completed", None)
        )
        is True
    )
    assert await relay.handle_item(session_id, LinkState(LinkStateName.ENDED)) is False
    await relay.flush(session_id)
    assert [row[0] for row in await history(session_id)] == ["status", "close"]


async def test_stop_ends_every_task(relay, simulator_server) -> None:
    ids = [sid() for _ in range(3)]
    for session_id in ids:
        simulator_server.control.create_session(session_id=session_id, manual=True)
        await relay.watch(session_id)
    for session_id in ids:
        await eventually(functools.partial(_state_is, session_id, StreamState.LIVE))

    await relay.stop()

    assert relay.following() == []
    await eventually(
        lambda: asyncio.to_thread(
            lambda: sum(simulator_server.control.stats()["open_streams"].values()) == 0
        )
    )


async def staff_health(relay: Relay | None) -> Callable[[], Awaitable[Any]]:
    """GET /healthz as staff (the detail is for staff) from the application built with
    `relay`, as `serve` builds it; the report is cached for a second."""
    import httpx
    from django.contrib.auth.models import User

    from meetingdash.asgi import build_application
    from tests.support import login_cookie

    user = await User.objects.acreate(username=f"ops-{uuid.uuid4().hex[:6]}", is_staff=True)
    cookie = (await database_sync_to_async(login_cookie)(user)).decode()
    app = build_application(relay=relay)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get("/healthz", headers={"cookie": cookie})

    return get


async def test_healthz_reports_the_relay_and_fails_when_it_is_broken(
    relay, simulator_server
) -> None:
    healthz = await staff_health(relay)
    session_id = sid()
    simulator_server.control.create_session(session_id=session_id, manual=True)
    await relay.watch(session_id)
    await eventually(lambda: _state_is(session_id, StreamState.LIVE))

    async def following_one() -> Any:
        response = await healthz()
        return response if response.json()["relay"].get("following") == 1 else None

    response = await eventually(following_one)
    body = response.json()
    assert response.status_code == 200, body
    assert body["relay"]["running"] is True
    assert body["relay"]["mode"] == "embedded"
    assert body["relay"]["links"] == {"live": 1}

    relay._loops[0].cancel()  # the watch-request listener dies
    await asyncio.gather(relay._loops[0], return_exceptions=True)

    async def unhealthy() -> Any:
        response = await healthz()
        return response if response.status_code == 503 else None

    response = await eventually(unhealthy)
    assert response.json()["relay"]["ok"] is False


async def test_healthz_fails_when_watched_sessions_have_no_relay() -> None:
    healthz = await staff_health(None)
    ok = await healthz()
    assert ok.status_code == 200, ok.json()
    await database_sync_to_async(services.mark_watched)(sid())

    async def unhealthy() -> Any:
        response = await healthz()
        return response if response.status_code == 503 else None

    response = await eventually(unhealthy)
    relay = response.json()["relay"]
    assert (relay["ok"], relay["running"], relay["sessions_watched"]) == (False, False, 1)
    assert relay["links"] == {"idle": 1}
    assert relay["mode"] in ("none", "scaled")  # scaled when REDIS_URL is set (CI)
