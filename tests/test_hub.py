from __future__ import annotations

import asyncio
import functools
import uuid
from typing import Any

import pytest
from channels.layers import InMemoryChannelLayer

from sessions_monitor import messages
from sessions_monitor.hub import Hub, get_hub
from sessions_monitor.messages import SESSIONS_GROUP, HubMessage, session_group
from tests.support import eventually


def new_session_id() -> str:
    return f"mbsess_hub{uuid.uuid4().hex[:12]}"


def event_message(session_id: str, seq: int) -> messages.EventMessage:
    return messages.event_message(
        session_id=session_id, seq=seq, event={"seq": seq, "kind": "status", "status": f"s{seq}"}
    )


def summary_message(session_id: str, **fields: Any) -> dict[str, Any]:
    return messages.summary_message({"session_id": session_id, **fields})


async def group_members(layer: Any, group: str) -> set[str]:
    if hasattr(layer, "groups"):  # InMemoryChannelLayer
        return set(layer.groups.get(group, {}))
    connection = layer.connection(layer.consistent_hash(group))
    members = await connection.zrange(layer._group_key(group), 0, -1)
    return {m.decode() for m in members}


async def test_it_delivers_every_event_to_1000_local_subscribers(fresh_channel_layer) -> None:
    hub = Hub(fresh_channel_layer)
    session_id = new_session_id()
    subscriptions = [await hub.subscribe(session_id) for _ in range(1000)]
    assert len(await group_members(fresh_channel_layer, session_group(session_id))) == 1

    for seq in range(1, 21):
        await fresh_channel_layer.group_send(
            session_group(session_id), event_message(session_id, seq)
        )

    async def read_all(subscription) -> list[int]:
        return [(await subscription.get()).seq for _ in range(20)]

    received = await asyncio.wait_for(
        asyncio.gather(*(read_all(sub) for sub in subscriptions)), timeout=20
    )
    assert all(seqs == list(range(1, 21)) for seqs in received)
    for subscription in subscriptions:
        subscription.close()
    await hub.wait_released()


async def test_it_resyncs_a_stalled_subscriber_without_delaying_the_others(
    fresh_channel_layer,
) -> None:
    hub = Hub(fresh_channel_layer)
    session_id = new_session_id()
    stalled = await hub.subscribe(session_id, maxsize=5)
    reader = await hub.subscribe(session_id, maxsize=5)
    received: list[int | None] = []

    async def read() -> None:
        async for message in reader:
            received.append(message.seq)
            if message.seq == 30:
                return

    def has_read(seq: int) -> bool:
        return received[-1:] == [seq]

    reading = asyncio.create_task(read())
    for seq in range(1, 31):
        await fresh_channel_layer.group_send(
            session_group(session_id), event_message(session_id, seq)
        )
        # A live reader keeps up (it has read each event before the next is sent); the
        # stalled one never reads.
        await eventually(functools.partial(has_read, seq), what=f"the reader to read {seq}")
    await asyncio.wait_for(reading, timeout=5)

    assert received == list(range(1, 31))
    assert reader.resyncs == 0
    first = await stalled.get()
    assert first.kind == "resync"
    assert stalled.qsize() == 0  # nothing piled up behind the resync marker
    assert stalled.resyncs == 1

    # After reading the resync it receives live events again.
    await fresh_channel_layer.group_send(session_group(session_id), event_message(session_id, 31))
    message = await asyncio.wait_for(stalled.get(), timeout=5)
    assert message.seq == 31
    stalled.close()
    reader.close()
    await hub.wait_released()


async def test_it_releases_the_group_when_the_last_local_subscriber_leaves(
    fresh_channel_layer,
) -> None:
    hub = Hub(fresh_channel_layer)
    session_id = new_session_id()
    group = session_group(session_id)
    first = await hub.subscribe(session_id)
    second = await hub.subscribe(session_id)
    channel = hub.group_channel(session_id)
    assert await group_members(fresh_channel_layer, group) == {channel}

    first.close()
    first.close()  # idempotent
    await hub.wait_released()
    assert await group_members(fresh_channel_layer, group) == {channel}

    second.close()
    await hub.wait_released()
    assert await group_members(fresh_channel_layer, group) == set()
    stats = hub.stats()
    assert (stats["feeds"], stats["feeds_down"], stats["subscribers"]) == (0, 0, 0)


async def test_it_ends_iteration_when_closed(fresh_channel_layer) -> None:
    hub = Hub(fresh_channel_layer)
    subscription = await hub.subscribe(new_session_id())

    reading = asyncio.Event()

    async def drain() -> list[HubMessage]:
        reading.set()  # then, without yielding, into the iteration until it waits
        return [message async for message in subscription]

    task = asyncio.create_task(drain())
    await reading.wait()
    subscription.close()
    assert await asyncio.wait_for(task, timeout=2) == []
    await hub.wait_released()


async def test_it_renders_each_message_once_for_all_subscribers(fresh_channel_layer) -> None:
    hub = Hub(fresh_channel_layer)
    session_id = new_session_id()
    subscriptions = [await hub.subscribe(session_id) for _ in range(10)]
    await fresh_channel_layer.group_send(session_group(session_id), event_message(session_id, 1))
    calls = 0

    def render(message: HubMessage) -> bytes:
        nonlocal calls
        calls += 1
        return f"id: {message.seq}".encode()

    outputs = [(await sub.get()).render("sse", render) for sub in subscriptions]
    assert calls == 1
    assert outputs == [b"id: 1"] * 10
    assert len({id(output) for output in outputs}) == 1
    for subscription in subscriptions:
        subscription.close()
    await hub.wait_released()


async def test_it_carries_session_summaries_on_the_sessions_feed(fresh_channel_layer) -> None:
    hub = Hub(fresh_channel_layer)
    subscription = await hub.subscribe(None)
    await fresh_channel_layer.group_send(
        SESSIONS_GROUP, summary_message("mbsess_x", status="active")
    )
    message = await asyncio.wait_for(subscription.get(), timeout=5)
    assert message.kind == "summary"
    assert message.session_id == "mbsess_x"
    assert message.data["status"] == "active"
    subscription.close()
    await hub.wait_released()


async def test_a_session_summaries_subscriber_gets_only_its_sessions_summaries(
    fresh_channel_layer,
) -> None:
    hub = Hub(fresh_channel_layer)
    mine, theirs = new_session_id(), new_session_id()
    everything = await hub.subscribe(None, kind="page")
    subscriptions = [await hub.subscribe_summaries(mine, kind="widget") for _ in range(2)]
    other = await hub.subscribe_summaries(theirs, kind="widget")
    # One membership for all four (the group itself is shared with other processes).
    channel = hub.group_channel(None)
    assert hub.stats()["feeds"] == 1
    assert channel in await group_members(fresh_channel_layer, SESSIONS_GROUP)
    assert hub.subscriber_kinds() == {"page": 1, "widget": 3}
    assert hub.subscriber_count(None) == 4

    # Theirs first, then mine: had theirs reached my subscribers, it would come first.
    await fresh_channel_layer.group_send(SESSIONS_GROUP, summary_message(theirs, status="ended"))
    await fresh_channel_layer.group_send(SESSIONS_GROUP, summary_message(mine, status="active"))
    received = [await asyncio.wait_for(sub.get(), 5) for sub in subscriptions]
    assert [(m.kind, m.session_id, m.data["status"]) for m in received] == [
        ("summary", mine, "active")
    ] * 2
    assert received[0] is received[1], "one message shared by every subscriber"
    assert (await asyncio.wait_for(other.get(), 5)).session_id == theirs
    got = [(await asyncio.wait_for(everything.get(), 5)).session_id for _ in range(2)]
    assert got == [theirs, mine]

    for subscription in (*subscriptions, other):
        subscription.close()
    assert hub.subscriber_count(None) == 1, "the list page keeps the feed"
    everything.close()
    await hub.wait_released()
    assert channel not in await group_members(fresh_channel_layer, SESSIONS_GROUP)
    assert hub.stats()["feeds"] == 0


async def test_session_summaries_subscribers_are_resynced_and_lost_with_their_feed() -> None:
    """The feed's state changes driven by hand (tests/test_faults.py restarts a real Redis).
    In memory: a feed marked down is released by cancelling its reader, which a pending
    channels-redis receive does not survive cleanly."""
    hub = Hub(InMemoryChannelLayer())
    session_id = new_session_id()
    subscription = await hub.subscribe_summaries(session_id)
    feed = hub._feeds[None]
    hub._came_up(feed)  # not down before: nothing to reload
    hub._went_down(feed, ConnectionError("test"))
    hub._came_up(feed)
    message = await asyncio.wait_for(subscription.get(), 5)
    assert (message.kind, message.session_id) == ("resync", session_id)

    hub._went_down(feed, ConnectionError("test"))
    assert feed.abandon is not None
    feed.abandon.cancel()
    hub._abandon(feed)
    message = await asyncio.wait_for(subscription.get(), 5)
    assert (message.kind, message.session_id) == ("lost", session_id)
    assert hub.subscriber_count(None) == 0, "a lost subscriber has left the feed"
    await hub.wait_released()


async def test_after_a_resync_changes_of_compares_with_nothing_seen_before(
    fresh_channel_layer,
) -> None:
    """The subscriber reloads after a resync: a summary equal to the last one let through
    before it is news again (the reload may have shown something else)."""
    hub = Hub(fresh_channel_layer)
    session_id = new_session_id()
    shown = ("test.status", lambda message: message.data["status"])
    subscription = await hub.subscribe_summaries(session_id, changes_of=shown)
    await fresh_channel_layer.group_send(SESSIONS_GROUP, summary_message(session_id, status="a"))
    assert (await asyncio.wait_for(subscription.get(), 5)).data["status"] == "a"
    subscription._resync("test")
    assert (await asyncio.wait_for(subscription.get(), 5)).kind == "resync"

    for status in ("a", "b"):
        await fresh_channel_layer.group_send(
            SESSIONS_GROUP, summary_message(session_id, status=status)
        )
    received = [await asyncio.wait_for(subscription.get(), 5) for _ in range(2)]
    assert [m.data["status"] for m in received] == ["a", "b"]
    subscription.close()
    await hub.wait_released()


async def test_changes_of_drops_repeats_without_queueing_them(fresh_channel_layer) -> None:
    hub = Hub(fresh_channel_layer)
    session_id = new_session_id()
    shown = ("test.status", lambda message: message.data["status"])
    subscription = await hub.subscribe_summaries(session_id, changes_of=shown)
    for status in ("active", "active", "active", "recording"):
        await fresh_channel_layer.group_send(
            SESSIONS_GROUP, summary_message(session_id, status=status)
        )
    first = await asyncio.wait_for(subscription.get(), 5)
    second = await asyncio.wait_for(subscription.get(), 5)
    assert [first.data["status"], second.data["status"]] == ["active", "recording"]
    assert subscription.qsize() == 0, "the repeated 'active' never reached the queue"
    subscription.close()
    await hub.wait_released()


async def test_a_bad_message_is_dropped_and_the_feed_keeps_going(fresh_channel_layer) -> None:
    hub = Hub(fresh_channel_layer)
    session_id = new_session_id()
    subscription = await hub.subscribe(session_id)
    group = session_group(session_id)
    await fresh_channel_layer.group_send(group, {"type": "session.event", "seq": 1})
    await fresh_channel_layer.group_send(group, {"type": "something.else"})
    await fresh_channel_layer.group_send(group, event_message(session_id, 1))
    message = await asyncio.wait_for(subscription.get(), 5)
    assert (message.kind, message.seq) == ("event", 1)
    assert hub.stats()["feed_failures"] == 0
    subscription.close()
    await hub.wait_released()


async def test_get_hub_returns_one_hub_per_event_loop() -> None:
    assert get_hub() is get_hub()


@pytest.mark.redis
async def test_it_fans_out_over_redis_with_one_membership(redis_url, settings) -> None:
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(
        hosts=[{"address": redis_url, "max_connections": 500, "socket_timeout": 15}],
        prefix=f"test-hub-{uuid.uuid4().hex[:6]}",
    )
    hub = Hub(layer)
    session_id = new_session_id()
    subscriptions = [await hub.subscribe(session_id) for _ in range(200)]
    assert len(await group_members(layer, session_group(session_id))) == 1
    for seq in (1, 2, 3):
        await layer.group_send(session_group(session_id), event_message(session_id, seq))
    for subscription in subscriptions:
        assert [(await asyncio.wait_for(subscription.get(), 5)).seq for _ in range(3)] == [1, 2, 3]
        subscription.close()
    await hub.wait_released()
    assert await group_members(layer, session_group(session_id)) == set()
    await layer.flush()


async def test_a_gap_in_seqs_resyncs_every_subscriber_and_late_duplicates_are_dropped(
    fresh_channel_layer,
) -> None:
    hub = Hub(fresh_channel_layer)
    session_id = new_session_id()
    first = await hub.subscribe(session_id)
    second = await hub.subscribe(session_id)
    group = session_group(session_id)
    for seq in (1, 2, 2):  # 2 repeated
        await fresh_channel_layer.group_send(group, event_message(session_id, seq))
    for subscription in (first, second):
        got = [await asyncio.wait_for(subscription.get(), 5) for _ in range(2)]
        assert [m.seq for m in got] == [1, 2]
    for seq in (4, 3, 5):  # 3 lost, then arrives late
        await fresh_channel_layer.group_send(group, event_message(session_id, seq))
    feed = hub._feeds[session_id]
    # Until the hub has read all of them (Redis delivers later).
    await eventually(lambda: feed.messages >= 6, what="the hub to read 6 messages")
    for subscription in (first, second):
        message = await asyncio.wait_for(subscription.get(), 5)
        assert (message.kind, message.data["reason"]) == ("resync", "missed events 3..3")
        # Nothing is queued behind the resync: history has 4 and 5 too.
        assert subscription.qsize() == 0
    await fresh_channel_layer.group_send(group, event_message(session_id, 6))
    assert (await asyncio.wait_for(first.get(), 5)).seq == 6
    first.close()
    second.close()
    await hub.wait_released()


@pytest.mark.redis
async def test_the_hub_is_not_starved_by_other_receivers_in_the_process(redis_url) -> None:
    """channels-redis serves all process-local channels through one receive loop; a
    consumer blocked in receive() on its own channel must not hold up the hub."""
    from channels_redis.core import RedisChannelLayer

    layer = RedisChannelLayer(
        hosts=[{"address": redis_url, "max_connections": 50, "socket_timeout": 15}],
        prefix=f"test-hub-{uuid.uuid4().hex[:6]}",
    )
    consumer_channel = await layer.new_channel()
    consumer = asyncio.create_task(layer.receive(consumer_channel))  # like a page's consumer
    await eventually(
        lambda: layer.receive_lock is not None and layer.receive_lock.locked(),
        what="the consumer to hold the receive lock (blocked in BZPOPMIN)",
    )
    hub = Hub(layer)
    session_id = new_session_id()
    subscription = await hub.subscribe(session_id)
    for seq in (1, 2):
        await layer.group_send(session_group(session_id), event_message(session_id, seq))
        message = await asyncio.wait_for(subscription.get(), 2)
        assert message.seq == seq
    await layer.send(consumer_channel, {"type": "x"})
    assert (await asyncio.wait_for(consumer, 5))["type"] == "x"
    subscription.close()
    await hub.wait_released()
    await layer.flush()
