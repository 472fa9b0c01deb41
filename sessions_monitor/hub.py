"""The per-process fan-out hub.

One channel-layer membership per session per process (plus one for `sessions`), however
many local subscribers: a reader task receives each message once, wraps it in a
`HubMessage` (rendered at most once per key) and puts it in every subscriber's bounded
queue. A subscriber whose queue is full gets one `resync` message and nothing more until
it has read it; it then reloads from stored history, so nobody is silently dropped and a
slow reader never slows the others. The last local subscriber to leave releases the group.

Why not one group membership per subscriber: measured ~6x the CPU and latency at 1,000
subscribers, and the in-memory layer degrades quadratically (shared/relay-performance.md).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from channels.layers import BaseChannelLayer, get_channel_layer

from sessions_monitor.services import SESSIONS_GROUP, session_group

logger = logging.getLogger(__name__)

Kind = Literal["event", "summary", "resync"]
Rendered = bytes | str
STOP = "hub.stop"
# Channel-layer group memberships expire (group_expiry, 1 day by default): re-add hourly.
GROUP_REFRESH_SECONDS = 3600.0


class HubMessage:
    """One layer message, shared (read-only) by every local subscriber."""

    __slots__ = ("kind", "session_id", "seq", "data", "session", "_rendered")

    def __init__(
        self,
        kind: Kind,
        session_id: str | None,
        data: dict[str, Any],
        seq: int | None = None,
        session: dict[str, Any] | None = None,
    ) -> None:
        self.kind = kind
        self.session_id = session_id
        self.seq = seq
        self.data = data
        # Events: the session summary after the event (same fields as `sessions.summary`).
        self.session = session
        self._rendered: dict[str, Rendered] = {}

    def render(self, key: str, fn: Callable[[HubMessage], Rendered]) -> Rendered:
        """`fn(self)`, computed once per process per message and key, then shared."""
        try:
            return self._rendered[key]
        except KeyError:
            value = self._rendered[key] = fn(self)
            return value

    def __repr__(self) -> str:
        return f"HubMessage({self.kind!r}, {self.session_id!r}, seq={self.seq})"

    @classmethod
    def from_layer(cls, message: dict[str, Any]) -> HubMessage | None:
        kind = message.get("type")
        if kind == "session.event":
            return cls(
                "event",
                message["session_id"],
                message["event"],
                seq=message["seq"],
                session=message.get("session"),
            )
        if kind == "sessions.summary":
            data = {k: v for k, v in message.items() if k != "type"}
            return cls("summary", data.get("session_id"), data)
        return None


class Subscription:
    """A bounded queue of HubMessages for one local subscriber."""

    def __init__(self, hub: Hub, key: str | None, maxsize: int) -> None:
        self._hub = hub
        self.key = key
        self.maxsize = max(1, maxsize)
        self._queue: deque[HubMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._resync_pending = False
        self.closed = False
        self.resyncs = 0

    @property
    def session_id(self) -> str | None:
        return self.key

    def qsize(self) -> int:
        return len(self._queue)

    def _deliver(self, message: HubMessage) -> None:
        if self.closed or self._resync_pending:
            return
        if len(self._queue) >= self.maxsize:
            self._resync("fell behind")
            return
        self._queue.append(message)
        self._wake()

    def _resync(self, reason: str) -> None:
        """Replace whatever is queued by one `resync`: it all gets reloaded from history."""
        if self.closed or self._resync_pending:
            return
        self._queue.clear()
        self._queue.append(HubMessage("resync", self.key, {"reason": reason}))
        self._resync_pending = True
        self.resyncs += 1
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def get_nowait(self) -> HubMessage | None:
        if not self._queue:
            return None
        message = self._queue.popleft()
        if message.kind == "resync":
            self._resync_pending = False
        return message

    async def get(self) -> HubMessage:
        while True:
            message = self.get_nowait()
            if message is not None:
                return message
            if self.closed:
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> HubMessage:
        return await self.get()

    def close(self) -> None:
        """Idempotent. Wakes a pending `get()`, which then ends the iteration."""
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self._hub._unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class _Feed:
    """One group membership of this process and the task reading it."""

    def __init__(self, group: str) -> None:
        self.group = group
        self.subscribers: set[Subscription] = set()
        self.channel: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.ready = asyncio.Event()
        self.error: BaseException | None = None
        self.messages = 0
        self.last_seq = 0
        self.gaps = 0
        self.released = False


class Hub:
    def __init__(self, layer: BaseChannelLayer | None = None) -> None:
        self._layer = layer
        self._feeds: dict[str | None, _Feed] = {}
        self._releases: set[asyncio.Task[None]] = set()

    @property
    def layer(self) -> BaseChannelLayer:
        if self._layer is None:
            self._layer = get_channel_layer()
            assert self._layer is not None, "no channel layer configured"
        return self._layer

    async def subscribe(self, session_id: str | None, *, maxsize: int = 1000) -> Subscription:
        """Subscribe to one session's stored events (or, with None, to all summaries).

        Returns once this process is a member of the group: anything stored after that
        reaches the subscription, so reading history afterwards leaves no gap.
        """
        feed = self._feeds.get(session_id)
        if feed is None:
            group = SESSIONS_GROUP if session_id is None else session_group(session_id)
            feed = self._feeds[session_id] = _Feed(group)
            feed.task = asyncio.create_task(self._read(feed), name=f"hub:{group}")
        subscription = Subscription(self, session_id, maxsize)
        feed.subscribers.add(subscription)
        await feed.ready.wait()
        if feed.error is not None:
            subscription.close()
            raise RuntimeError(f"hub: could not join {feed.group}") from feed.error
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        feed = self._feeds.get(subscription.key)
        if feed is None:
            return
        feed.subscribers.discard(subscription)
        if not feed.subscribers:
            del self._feeds[subscription.key]
            task = asyncio.get_event_loop().create_task(self._release(feed))
            self._releases.add(task)
            task.add_done_callback(self._releases.discard)

    async def _release(self, feed: _Feed) -> None:
        """Leave the group, then stop the reader with a message on its own channel.

        Not `task.cancel()`: cancelling a channels-redis receive that holds the shared
        receive lock can leave redis-py re-reading forever (seen in tests: the task stays
        "cancelling" and the loop cannot close). A stop message ends the loop cleanly.
        """
        feed.released = True
        await feed.ready.wait()
        if feed.channel is None or feed.error is not None:
            return
        try:
            await self.layer.group_discard(feed.group, feed.channel)
            await self.layer.send(feed.channel, {"type": STOP})
            if feed.task is not None:
                await asyncio.wait({feed.task}, timeout=2)
        except Exception:
            logger.warning("hub: could not leave %s", feed.group, exc_info=True)
            if feed.task is not None:
                feed.task.cancel()

    async def _read(self, feed: _Feed) -> None:
        layer = self.layer
        try:
            # The default prefix, always: channels-redis receives every process-local channel
            # of a layer through one loop that pops only the lock holder's "<prefix>.<id>!"
            # list, so a second prefix in the same process starves one side or the other.
            feed.channel = await layer.new_channel()
            await layer.group_add(feed.group, feed.channel)
        except Exception as exc:
            feed.error = exc
            raise
        finally:
            feed.ready.set()
        loop = asyncio.get_running_loop()
        refresh_at = loop.time() + GROUP_REFRESH_SECONDS
        while True:
            try:
                raw = await layer.receive(feed.channel)
            except asyncio.CancelledError:
                raise
            except Exception:
                if feed.released or _cancelling():
                    # redis-py may turn our cancellation into a ConnectionError: we are done.
                    return
                # e.g. a Redis restart: keep the membership and try again shortly.
                logger.warning("hub: receive on %s failed", feed.group, exc_info=True)
                await asyncio.sleep(0.5)
                await layer.group_add(feed.group, feed.channel)
                continue
            if raw.get("type") == STOP:
                return
            if loop.time() >= refresh_at:
                await layer.group_add(feed.group, feed.channel)
                refresh_at = loop.time() + GROUP_REFRESH_SECONDS
            message = HubMessage.from_layer(raw)
            if message is None:
                continue
            feed.messages += 1
            if message.seq is not None and not self._in_order(feed, message.seq):
                continue
            self.publish_local(feed, message)

    @staticmethod
    def _in_order(feed: _Feed, seq: int) -> bool:
        """Seqs of one session are gap-free and every stored event is broadcast, so a gap
        means a lost broadcast (failure, a full in-memory channel) or two relays' broadcasts
        crossing during a take-over: every subscriber resyncs from history, which has it
        all. A seq at or below the last one is a late duplicate of something history covers."""
        last, feed.last_seq = feed.last_seq, max(feed.last_seq, seq)
        if last and seq <= last:
            return False
        if last and seq > last + 1:
            feed.gaps += 1
            for subscription in tuple(feed.subscribers):
                subscription._resync(f"missed events {last + 1}..{seq - 1}")
        return True

    @staticmethod
    def publish_local(feed: _Feed, message: HubMessage) -> None:
        for subscription in tuple(feed.subscribers):
            subscription._deliver(message)

    async def wait_released(self) -> None:
        """Wait until every pending group release has finished (tests, shutdown)."""
        while self._releases:
            await asyncio.gather(*tuple(self._releases), return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        return {
            "feeds": len(self._feeds),
            "subscribers": sum(len(feed.subscribers) for feed in self._feeds.values()),
        }

    def subscriber_count(self, session_id: str | None) -> int:
        feed = self._feeds.get(session_id)
        return 0 if feed is None else len(feed.subscribers)

    def group_channel(self, session_id: str | None) -> str | None:
        feed = self._feeds.get(session_id)
        return None if feed is None else feed.channel

    async def close(self) -> None:
        for feed in list(self._feeds.values()):
            for subscription in tuple(feed.subscribers):
                subscription.close()
        await self.wait_released()


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def get_hub() -> Hub:
    """The hub of this process (of the running event loop: tests run one loop each)."""
    loop = asyncio.get_running_loop()
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = Hub()
    return hub
