"""Faults without silent loss (issue 10), in process against real servers: a Redis of the
test's own that it restarts, the simulator, the relay and hub as `serve` runs them. The
whole deployment under every fault is tests/e2e/test_drill.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.db import DataError, OperationalError
from django.utils import timezone

from sessions_monitor import health, selectors, services, streams
from sessions_monitor.hub import Hub
from sessions_monitor.messages import session_group
from sessions_monitor.models import EventKind, Presence, SessionEvent
from sessions_monitor.relay.leases import RedisLeases
from sessions_monitor.relay.worker import Relay
from sessions_monitor.relay.writes import OrderedWrites, Write
from sessions_monitor.upstream import BackoffPolicy, ParticipantLeft
from tests.support import eventually, fast_relay

pytestmark = [pytest.mark.redis, pytest.mark.slow]


def sid() -> str:
    return f"mbsess_flt{uuid.uuid4().hex[:10]}"


# Faults take their time to heal (a Redis restart, a reconnect's backoff): waits are longer.
WITHIN = 15.0


def redis_layer(url: str) -> Any:
    from channels_redis.core import RedisChannelLayer

    from sessions_monitor.redis_client import channel_layer_hosts

    return RedisChannelLayer(hosts=channel_layer_hosts(url), capacity=100, expiry=60)


def event(session_id: str, seq: int) -> dict[str, Any]:
    return {
        "type": "session.event",
        "session_id": session_id,
        "seq": seq,
        "event": {"seq": seq, "kind": "status", "status": f"s{seq}"},
    }


async def send_until_it_goes_through(layer: Any, group: str, message: dict[str, Any]) -> None:
    async def sent() -> bool:
        try:
            await layer.group_send(group, message)
        except Exception:
            return False
        return True

    await eventually(sent, WITHIN)


# --- the hub across a Redis restart --------------------------------------------------------------


async def test_a_hub_feed_survives_a_redis_restart_and_resyncs_its_subscribers(
    private_redis: Any,
) -> None:
    layer = redis_layer(private_redis.url)
    hub = Hub(layer)
    session_id = sid()
    subscription = await hub.subscribe(session_id)
    late = None
    try:
        await layer.group_send(session_group(session_id), event(session_id, 1))
        assert (await asyncio.wait_for(subscription.get(), 5)).seq == 1

        await asyncio.to_thread(private_redis.restart, 1.0)
        # The reader notices (its receive fails), retries, rejoins the group and resyncs its
        # subscribers: whatever was broadcast meanwhile reached nobody, history has it.
        resync = await asyncio.wait_for(subscription.get(), 15)
        assert resync.kind == "resync"
        assert hub.stats()["feed_failures"] >= 1
        await eventually(lambda: hub.feeds_down() == 0, WITHIN, "every feed to be back")
        await send_until_it_goes_through(layer, session_group(session_id), event(session_id, 2))
        message = await asyncio.wait_for(subscription.get(), 10)
        while message.kind == "resync":  # the feed may have flapped once more meanwhile
            message = await asyncio.wait_for(subscription.get(), 10)
        assert message.seq == 2, "live again"
        # And a subscriber that arrives now is handed a working feed.
        late = await hub.subscribe(session_id)
        await layer.group_send(session_group(session_id), event(session_id, 3))
        assert (await asyncio.wait_for(late.get(), 5)).seq == 3
    finally:
        subscription.close()
        if late is not None:
            late.close()
        await hub.wait_released()


async def test_health_fails_and_new_subscribers_wait_while_a_feed_is_down(
    private_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sessions_monitor import hub as hub_module

    layer = redis_layer(private_redis.url)
    hub = Hub(layer)
    session_id = sid()
    subscription = await hub.subscribe(session_id)
    try:
        await asyncio.to_thread(private_redis.stop)
        await eventually(lambda: hub.feeds_down() == 1, WITHIN, "the feed to be down")
        monkeypatch.setattr(hub_module, "get_hub", lambda: hub)
        assert health.check_hub()["ok"] is False
        monkeypatch.setattr(hub_module, "JOIN_TIMEOUT_SECONDS", 0.5)
        with pytest.raises(hub_module.HubUnavailable):
            await hub.subscribe(session_id)
        # Past the grace period, the old subscriber is told to reconnect rather than wait.
        message = await asyncio.wait_for(subscription.get(), hub_module.DOWN_GRACE_SECONDS + 5)
        assert message.kind == "lost"
    finally:
        await asyncio.to_thread(private_redis.start)
        subscription.close()
        await hub.wait_released()


# --- leases across a Redis restart ---------------------------------------------------------------


async def test_a_lease_that_vanished_with_redis_is_taken_again_not_handed_over(
    private_redis: Any,
) -> None:
    leases = RedisLeases(private_redis.url, prefix=f"t{uuid.uuid4().hex[:6]}", ttl_seconds=30)
    other = RedisLeases(private_redis.url, prefix=leases.prefix, ttl_seconds=30)
    session_id = sid()
    assert await leases.acquire(session_id)
    assert not await other.acquire(session_id)

    await asyncio.to_thread(private_redis.restart, 0.5)  # Redis keeps nothing: leases are gone
    assert await eventually(lambda: _renewed(leases, session_id), WITHIN)
    assert leases.reacquired == 1
    assert await leases.holder(session_id) == leases.owner
    assert not await other.renew(session_id), "only a lease held by another is a hand-over"
    await leases.close()
    await other.close()


async def _renewed(leases: RedisLeases, session_id: str) -> bool:
    try:
        return await leases.renew(session_id)
    except Exception:
        return False


@pytest.mark.django_db(transaction=True)
async def test_a_redis_restart_cancels_no_upstream_stream(
    private_redis: Any, simulator_server: Any, fresh_channel_layer: Any
) -> None:
    leases = RedisLeases(private_redis.url, prefix=f"t{uuid.uuid4().hex[:6]}", ttl_seconds=3)
    relay = Relay(
        upstream_url=simulator_server.base_url,
        leases=leases,
        discovery_seconds=0,
        rescan_seconds=0.2,
        backoff=BackoffPolicy(initial=0.05, cap=0.2),
        mode="scaled",
    )
    session_id = sid()
    simulator_server.control.create_session(session_id=session_id, manual=True)
    await relay.start()
    try:
        await relay.watch(session_id)
        await eventually(lambda: _open_streams(simulator_server, session_id, 1), WITHIN)
        await asyncio.to_thread(private_redis.restart, 1.5)

        async def renewed_after_the_restart() -> bool:
            await relay.renew_leases()
            return await _holder_is(leases, session_id)

        await eventually(renewed_after_the_restart, WITHIN, "the lease to be held again")
        await relay.renew_leases()  # and a renewal round after that keeps it
        assert await _holder_is(leases, session_id)
        assert relay.is_following(session_id)
        stats = simulator_server.control.stats()
        assert stats["stream_connections_total"][session_id] == 1, "the stream was never cut"
    finally:
        await relay.stop()


@pytest.mark.django_db(transaction=True)
async def test_after_a_redis_restart_another_relay_does_not_take_a_streamed_session(
    private_redis: Any, simulator_server: Any, fresh_channel_layer: Any
) -> None:
    """Redis forgets every lease when it restarts; until the streaming relay renews its
    own, the database's claim keeps a second relay from opening a second upstream stream
    (two streams store every event twice)."""
    prefix = f"t{uuid.uuid4().hex[:6]}"
    relays = [
        Relay(
            upstream_url=simulator_server.base_url,
            # Renewed when the relay starts, then only when the test steps it.
            leases=RedisLeases(private_redis.url, prefix=prefix, ttl_seconds=300),
            discovery_seconds=0,
            rescan_seconds=300,
            backoff=BackoffPolicy(initial=0.05, cap=0.2),
            mode="scaled",
        )
        for _ in range(2)
    ]
    streaming, other = relays
    streaming_leases = streaming.leases
    assert isinstance(streaming_leases, RedisLeases)
    session_id = sid()
    simulator_server.control.create_session(session_id=session_id, manual=True)
    await database_sync_to_async(services.mark_watched)(session_id, True)
    for relay in relays:
        await relay.start()
    try:
        assert await streaming.watch(session_id)
        await eventually(lambda: _open_streams(simulator_server, session_id, 1), WITHIN)
        assert await other.rescan_once() == [], "the lease keeps the other relay off"

        await asyncio.to_thread(private_redis.restart, 0.5)
        assert await _key_gone(streaming_leases, session_id)
        assert await other.rescan_once() == [], "the claim keeps it off with the lease gone"
        assert not await other.watch(session_id)
        assert not other.is_following(session_id)

        async def renewed() -> bool:
            await streaming.renew_leases()
            return await _holder_is(streaming_leases, session_id)

        await eventually(renewed, WITHIN, "the streaming relay to hold its lease again")
        assert streaming.is_following(session_id)
        stats = simulator_server.control.stats()
        assert stats["stream_connections_total"][session_id] == 1, "one upstream stream, ever"
    finally:
        for relay in relays:
            await relay.stop()


async def _key_gone(leases: RedisLeases, session_id: str) -> bool:
    try:
        return await leases.holder(session_id) is None
    except Exception:
        return False


async def _open_streams(simulator: Any, session_id: str, count: int) -> bool:
    stats = await asyncio.to_thread(simulator.control.stats)
    return bool(stats["open_streams"].get(session_id) == count)


async def _holder_is(leases: RedisLeases, session_id: str) -> bool:
    try:
        return await leases.holder(session_id) == leases.owner
    except Exception:
        return False


# --- gaps ----------------------------------------------------------------------------------------


@pytest.fixture
async def relay(simulator_server: Any, fresh_channel_layer: Any) -> AsyncIterator[Relay]:
    relay = fast_relay(
        simulator_server.base_url,
        stall_seconds=3.0,  # the simulator's keepalive is 1 s
        rescan_seconds=60,  # only this test decides when a session is followed
    )
    await relay.start()
    yield relay
    await relay.stop()


@database_sync_to_async
def rows(session_id: str) -> list[Any]:
    return list(
        SessionEvent.objects.filter(session_id=session_id)
        .order_by("seq")
        .values(
            "seq", "kind", "status", "participant_name", "note", "gap_started_at", "received_at"
        )
    )


@database_sync_to_async
def present(session_id: str) -> list[str]:
    return sorted(
        Presence.objects.filter(session_id=session_id, left_at__isnull=True).values_list(
            "participant_name", flat=True
        )
    )


@pytest.mark.django_db(transaction=True)
async def test_a_take_over_stores_a_gap_sends_it_and_reconciles_presence_both_ways(
    relay: Relay, simulator_server: Any
) -> None:
    control = simulator_server.control
    session_id = sid()
    control.create_session(session_id=session_id, manual=True)
    control.emit(session_id, status="recording")
    await relay.watch(session_id)
    await eventually(lambda: _open_streams(simulator_server, session_id, 1), WITHIN)
    control.emit(session_id, join="Alice")
    control.emit(session_id, join="Bob")
    await eventually(lambda: _equal(present(session_id), ["Alice", "Bob"]), WITHIN)
    await relay.renew_leases()  # the relay says "live" (stream_alive_at)

    await relay.unwatch(session_id)  # as if it died: nobody streams the session now
    control.emit(session_id, join="Carol")
    control.emit(session_id, leave="Bob")
    await relay.watch(session_id)  # another relay takes it over
    await eventually(lambda: _equal(present(session_id), ["Alice", "Carol"]), WITHIN)

    stored = await rows(session_id)
    gap = next(row for row in stored if row["kind"] == EventKind.GAP)
    assert gap["gap_started_at"] is not None and gap["gap_started_at"] < gap["received_at"]
    after = [row for row in stored if row["seq"] > gap["seq"]]
    inferred = {(row["kind"], row["participant_name"], row["note"]) for row in after}
    assert (EventKind.JOINED, "Carol", services.GAP_JOIN_NOTE) in inferred
    assert (EventKind.LEFT, "Bob", services.GAP_LEAVE_NOTE) in inferred
    # Our stream sends it as a `gap` event with its id.
    history = await database_sync_to_async(selectors.events_after)(session_id, 0)
    frame = streams.sse_frame(session_id, next(e for e in history if e["kind"] == EventKind.GAP))
    assert frame.startswith(f"id: {gap['seq']}\nevent: gap\ndata: ".encode())
    assert b'"from":"' in frame and b'"to":"' in frame


async def _equal(value: Awaitable[Any], expected: Any) -> bool:
    return bool(await value == expected)


@pytest.mark.django_db(transaction=True)
async def test_a_dropped_stream_stores_a_gap_from_the_last_byte_seen(
    relay: Relay, simulator_server: Any
) -> None:
    control = simulator_server.control
    session_id = sid()
    control.create_session(session_id=session_id, manual=True)
    await relay.watch(session_id)
    await eventually(lambda: _open_streams(simulator_server, session_id, 1), WITHIN)
    control.set_faults(session_id=session_id, drop_after_events=1, drop_times=1)
    before_joining = timezone.now()
    control.emit(session_id, status="joining")  # written, then the connection drops
    await eventually(lambda: _has_gap(session_id), WITHIN)
    control.emit(session_id, status="active")
    await eventually(lambda: _has_status(session_id, "active"), WITHIN)

    stored = await rows(session_id)
    kinds = [row["kind"] for row in stored]
    gap = stored[kinds.index(EventKind.GAP)]
    assert any(row["kind"] == "status" and row["seq"] < gap["seq"] for row in stored)
    assert "disconnected" in gap["note"]
    # From the last byte (the "joining" frame, or a keepalive the simulator wrote before it
    # dropped the connection), not from when the link opened, to the new connection.
    assert before_joining <= gap["gap_started_at"] <= gap["received_at"]


async def _has_gap(session_id: str) -> bool:
    return any(row["kind"] == EventKind.GAP for row in await rows(session_id))


async def _has_status(session_id: str, status: str) -> bool:
    return any(
        row["kind"] == "status" and row["status"] == status for row in await rows(session_id)
    )


@pytest.mark.django_db(transaction=True)
def test_a_leave_of_someone_never_seen_joining_is_kept_as_an_anomaly() -> None:
    session_id = sid()
    recorded = services.record_event(
        session_id=session_id,
        event=ParticipantLeft(session_id, "Mallory", None, raw='{"event":"left"}'),
        broadcast=False,
    )
    assert recorded is not None and recorded.event["kind"] == EventKind.ANOMALY
    assert "join was probably missed in a gap" in recorded.event["note"]


# --- writes through a database outage -------------------------------------------------------------


async def test_ordered_writes_keep_order_and_retry_until_the_database_takes_them() -> None:
    stored: list[int] = []
    refusals: list[str] = []
    outage = {"left": 5}

    def job(n: int) -> Write:
        async def run() -> None:
            if outage["left"] > 0:
                outage["left"] -= 1
                raise OperationalError("server closed the connection unexpectedly")
            if n == 3:
                raise DataError("value too long for type character varying(300)")
            stored.append(n)

        async def refused(exc: BaseException) -> None:
            refusals.append(f"{n}: {type(exc).__name__}")

        return Write(run, f"event {n}", refused)

    writes = OrderedWrites("mbsess_writes")
    for n in range(1, 6):
        await writes.put(job(n))
    await asyncio.wait_for(writes.drained(), 30)
    assert stored == [1, 2, 4, 5], "nothing lost to the outage, order kept"
    assert refusals == ["3: DataError"], "a refused write becomes a note, the rest go on"
