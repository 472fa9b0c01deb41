"""Our stream's writer, driven with a real hub and an ASGI `send` that records each write."""

from __future__ import annotations

from typing import Any

from channels.layers import InMemoryChannelLayer

from sessions_monitor import streams
from sessions_monitor.hub import Hub, Subscription
from sessions_monitor.messages import HubMessage

SESSION = "mbsess_writer0001"


def joined(seq: int) -> HubMessage:
    event = {"kind": "joined", "seq": seq, "participant_name": f"p{seq}", "timestamp": "t"}
    return HubMessage("event", SESSION, event, seq=seq)


def closed(seq: int) -> HubMessage:
    return HubMessage("event", SESSION, {"kind": "close", "seq": seq, "note": ""}, seq=seq)


async def writer_on_hub() -> tuple[Hub, Subscription, streams._Writer, list[bytes]]:
    """A hub subscription and a stream writer whose ASGI `send` records each body."""
    hub = Hub(InMemoryChannelLayer())
    subscription = await hub.subscribe(SESSION)
    writes: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        writes.append(message["body"])

    return hub, subscription, streams._Writer(send, SESSION), writes


async def test_what_queued_while_writing_goes_out_as_one_write_in_order() -> None:
    hub, subscription, writer, writes = await writer_on_hub()
    feed = hub._feeds[SESSION]
    for message in (joined(1), joined(2), joined(3)):
        hub.publish_local(feed, message)  # a burst: all queued before the writer wakes
    hub.publish_local(feed, closed(4))

    await writer.live(subscription)

    assert len(writes) == 1, "one write for the burst, the close included"
    ids = [line for line in writes[0].decode().splitlines() if line.startswith("id: ")]
    assert ids == ["id: 1", "id: 2", "id: 3", "id: 4"]
    assert writer.last_seq == 4
    subscription.close()
    await hub.wait_released()


async def test_a_lost_feed_ends_the_stream_saying_so() -> None:
    hub, subscription, writer, writes = await writer_on_hub()
    feed = hub._feeds[SESSION]
    hub.publish_local(feed, joined(1))
    subscription._lose("test")

    await writer.live(subscription)

    # `_lose` replaces what was queued with the one `lost`: nothing half-sent.
    assert writes == [streams.FEED_LOST]
    await hub.wait_released()
