"""The per-process fan-out hub.

One channel-layer membership per session per process (plus one for `sessions`), however
many local subscribers: a reader task receives each message once, wraps it in a
`HubMessage` (rendered at most once per key) and puts it in every subscriber's bounded
queue. A subscriber whose queue is full gets one `resync` message and nothing more until
it has read it; it then reloads from stored history, so nobody is silently dropped and a
slow reader never slows the others. The last local subscriber to leave releases the group.

Every summary travels on the one `sessions` group. A subscriber of all of them (the list
page) gets each; a subscriber of one session's (`subscribe_summaries`: the detail page's
badge, the widget) gets only that session's, routed here by session id, so a thousand
widgets on a thousand sessions do not each wake for every change of every session.

Alerts (`session.alert`, for followers' toasts) have one group of their own, `alerts`, joined
once per process like the summaries (`subscribe_alerts`): every live page gets every alert
and keeps those of what its user follows.

Why not one group membership per subscriber: measured ~6x the CPU and latency at 1,000
subscribers, and the in-memory layer degrades quadratically (shared/relay-performance.md).

A feed survives any channel-layer error (a Redis restart): its reader retries with backoff,
rejoins the group, and then gives every local subscriber a `resync`, so what was stored
meanwhile is read from history. While a feed is down nobody new is handed it (`subscribe`
waits for it, then raises `HubUnavailable`), `/healthz` fails, and a feed down for longer
than DOWN_GRACE_SECONDS gives its subscribers `lost`: they end their stream or socket, and
their clients reconnect (elsewhere, or here once the feed is back) and resume by seq. Nothing
keeps looking live while it is not.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from itertools import chain
from typing import Any

from channels.layers import BaseChannelLayer, get_channel_layer

from sessions_monitor import telemetry
from sessions_monitor.messages import (
    ALERTS_GROUP,
    SESSIONS_GROUP,
    HubMessage,
    is_stop,
    parse_hub_message,
    session_group,
    stop_message,
)

logger = logging.getLogger(__name__)

# Channel-layer group memberships expire (group_expiry, 1 day by default): re-add hourly.
GROUP_REFRESH_SECONDS = 3600.0
# How long `subscribe` waits for a feed that is (re)joining its group.
JOIN_TIMEOUT_SECONDS = 10.0
# A feed down this long makes its subscribers reconnect rather than wait.
DOWN_GRACE_SECONDS = 5.0
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
# The key of the alerts feed among the feeds (keyed by session id): no session id looks so.
ALERTS_FEED = ":alerts"


class HubUnavailable(RuntimeError):
    """The channel layer cannot be reached: this process cannot deliver live events now."""


class Subscription:
    """A bounded queue of HubMessages for one local subscriber.

    `key` names its feed (a session id, or None for the summaries); `only` restricts a
    summaries subscription to one session's summaries (its feed's resync and lost still
    reach it); `changes_of` (a render key and function, see `HubMessage.render`) lets
    through only summaries whose rendering differs from the last one let through: what a
    subscriber would compare and drop is dropped without waking it."""

    def __init__(
        self,
        hub: Hub,
        key: str | None,
        maxsize: int,
        kind: str = "other",
        only: str | None = None,
        changes_of: tuple[str, Callable[[HubMessage], Any]] | None = None,
    ) -> None:
        self._hub = hub
        self.key = key
        self.only = only
        self.changes_of = changes_of
        self._last_change: Any = None
        self.kind = kind
        self.maxsize = max(1, maxsize)
        self._queue: deque[HubMessage] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._resync_pending = False
        self.closed = False
        self.resyncs = 0

    def qsize(self) -> int:
        return len(self._queue)

    def _deliver(self, message: HubMessage) -> None:
        if self.closed or self._resync_pending:
            return
        if self.changes_of is not None and message.kind == "summary":
            change = message.render(*self.changes_of)
            if change == self._last_change:
                return
            self._last_change = change
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
        self._queue.append(HubMessage("resync", self.only or self.key, {"reason": reason}))
        self._resync_pending = True
        self._last_change = None  # the subscriber reloads: compare with nothing it has not seen
        self.resyncs += 1
        self._hub.resyncs += 1
        self._wake()

    def _lose(self, reason: str) -> None:
        """The feed is gone for now: one last `lost`, then nothing (the reader reconnects)."""
        if self.closed:
            return
        self._queue.clear()
        self._queue.append(HubMessage("lost", self.only or self.key, {"reason": reason}))
        self._resync_pending = True
        self._wake()
        self._hub._unsubscribe(self)

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
        # The summaries feed: subscribers of one session's summaries, by session id.
        self.routes: dict[str, set[Subscription]] = {}
        self.channel: str | None = None
        self.task: asyncio.Task[None] | None = None
        self.alive = asyncio.Event()  # a member of the group, receiving
        self.down_since: float | None = None
        self.abandon: asyncio.TimerHandle | None = None
        self.messages = 0
        self.last_seq = 0
        self.gaps = 0
        self.failures = 0
        self.released = False

    def everyone(self) -> Iterator[Subscription]:
        """Every subscriber, routed or not (a snapshot: callers may unsubscribe them)."""
        routed = [subscription for group in self.routes.values() for subscription in group]
        return chain(tuple(self.subscribers), routed)

    def recipients(self, message: HubMessage) -> Iterator[Subscription]:
        """Who gets `message`: the unrouted subscribers and those routed to its session."""
        routed = self.routes.get(message.session_id or "", ())
        return chain(tuple(self.subscribers), tuple(routed))

    def empty(self) -> bool:
        return not self.subscribers and not self.routes

    def size(self) -> int:
        return len(self.subscribers) + sum(len(routed) for routed in self.routes.values())


class Hub:
    def __init__(self, layer: BaseChannelLayer | None = None) -> None:
        self._layer = layer
        self._feeds: dict[str | None, _Feed] = {}
        self._releases: set[asyncio.Task[None]] = set()
        self.resyncs = 0
        self.feed_failures = 0

    @property
    def layer(self) -> BaseChannelLayer:
        if self._layer is None:
            self._layer = get_channel_layer()
            assert self._layer is not None, "no channel layer configured"
        return self._layer

    async def subscribe(
        self, session_id: str | None, *, maxsize: int = 1000, kind: str = "other"
    ) -> Subscription:
        """Subscribe to one session's stored events (or, with None, to all summaries).

        Returns once this process is a member of the group: anything stored after that
        reaches the subscription, so reading history afterwards leaves no gap.
        """
        feed = self._feed(session_id)
        subscription = Subscription(self, session_id, maxsize, kind)
        feed.subscribers.add(subscription)
        return await self._joined(feed, subscription)

    async def subscribe_summaries(
        self,
        session_id: str,
        *,
        maxsize: int = 1000,
        kind: str = "other",
        changes_of: tuple[str, Callable[[HubMessage], Any]] | None = None,
    ) -> Subscription:
        """Subscribe to the summaries of one session only, like `subscribe` otherwise.

        All summaries arrive on one group, which this process joins once: the hub routes
        each to the subscribers of its session, so a summary of session A never wakes the
        subscribers of session B (a detail page, a widget).
        """
        feed = self._feed(None)
        subscription = Subscription(
            self, None, maxsize, kind, only=session_id, changes_of=changes_of
        )
        feed.routes.setdefault(session_id, set()).add(subscription)
        return await self._joined(feed, subscription)

    async def subscribe_alerts(self, *, maxsize: int = 100, kind: str = "other") -> Subscription:
        """Subscribe to every `session.alert` (`messages.ALERTS_GROUP`), like `subscribe`."""
        feed = self._feed(ALERTS_FEED)
        subscription = Subscription(self, ALERTS_FEED, maxsize, kind)
        feed.subscribers.add(subscription)
        return await self._joined(feed, subscription)

    def _feed(self, session_id: str | None) -> _Feed:
        feed = self._feeds.get(session_id)
        if feed is None:
            if session_id == ALERTS_FEED:
                group = ALERTS_GROUP
            else:
                group = SESSIONS_GROUP if session_id is None else session_group(session_id)
            feed = self._feeds[session_id] = _Feed(group)
            feed.task = asyncio.create_task(self._read(feed), name=f"hub:{group}")
        return feed

    async def _joined(self, feed: _Feed, subscription: Subscription) -> Subscription:
        try:
            async with asyncio.timeout(JOIN_TIMEOUT_SECONDS):
                await feed.alive.wait()
        except TimeoutError:
            subscription.close()
            raise HubUnavailable(f"hub: cannot join {feed.group}") from None
        except BaseException:
            subscription.close()
            raise
        return subscription

    def _unsubscribe(self, subscription: Subscription) -> None:
        feed = self._feeds.get(subscription.key)
        if feed is None:
            return
        if subscription.only is None:
            if subscription not in feed.subscribers:
                return
            feed.subscribers.discard(subscription)
        else:
            routed = feed.routes.get(subscription.only, set())
            if subscription not in routed:
                return
            routed.discard(subscription)
            if not routed:
                del feed.routes[subscription.only]
        if feed.empty():
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
        if feed.abandon is not None:
            feed.abandon.cancel()
        if feed.channel is None or not feed.alive.is_set():
            if feed.task is not None:
                feed.task.cancel()  # retrying a join, not inside a receive
            return
        try:
            await self.layer.group_discard(feed.group, feed.channel)
            await self.layer.send(feed.channel, stop_message())
            if feed.task is not None:
                await asyncio.wait({feed.task}, timeout=2)
        except Exception:
            logger.warning("hub: could not leave %s", feed.group, exc_info=True)
            if feed.task is not None:
                feed.task.cancel()

    async def _read(self, feed: _Feed) -> None:
        """Join, receive until told to stop; on any layer error go down, retry, rejoin."""
        attempt = 0
        while not feed.released:
            try:
                await self._join(feed)
            except Exception as exc:
                if feed.released or _cancelling():
                    return
                self._went_down(feed, exc)
                await asyncio.sleep(RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)])
                attempt += 1
                continue
            attempt = 0
            self._came_up(feed)
            try:
                await self._receive(feed)
                return
            except Exception as exc:
                if feed.released or _cancelling():
                    # redis-py may turn our cancellation into a ConnectionError: we are done.
                    return
                self._went_down(feed, exc)
                await asyncio.sleep(RETRY_DELAYS[0])

    async def _join(self, feed: _Feed) -> None:
        layer = self.layer
        if feed.channel is None:
            # The default prefix, always: channels-redis receives every process-local channel
            # of a layer through one loop that pops only the lock holder's "<prefix>.<id>!"
            # list, so a second prefix in the same process starves one side or the other.
            feed.channel = await layer.new_channel()
        await layer.group_add(feed.group, feed.channel)

    async def _receive(self, feed: _Feed) -> None:
        layer = self.layer
        assert feed.channel is not None
        loop = asyncio.get_running_loop()
        refresh_at = loop.time() + GROUP_REFRESH_SECONDS
        while True:
            raw = await layer.receive(feed.channel)
            if is_stop(raw):
                return
            if loop.time() >= refresh_at:
                await layer.group_add(feed.group, feed.channel)
                refresh_at = loop.time() + GROUP_REFRESH_SECONDS
            message = parse_hub_message(raw)
            if message is None:
                continue
            feed.messages += 1
            _observe_fanout(message)
            if message.seq is not None and not self._in_order(feed, message.seq):
                continue
            self.publish_local(feed, message)

    def _went_down(self, feed: _Feed, exc: BaseException) -> None:
        feed.failures += 1
        self.feed_failures += 1
        if feed.down_since is not None:
            logger.debug("hub: %s still down: %s", feed.group, type(exc).__name__)
            return
        logger.warning("hub: lost the feed of %s (%s); retrying", feed.group, type(exc).__name__)
        feed.alive.clear()
        loop = asyncio.get_running_loop()
        feed.down_since = loop.time()
        feed.abandon = loop.call_later(DOWN_GRACE_SECONDS, self._abandon, feed)

    def _came_up(self, feed: _Feed) -> None:
        was_down = feed.down_since is not None
        feed.down_since = None
        if feed.abandon is not None:
            feed.abandon.cancel()
            feed.abandon = None
        feed.alive.set()
        if was_down:
            # Whatever was broadcast meanwhile never reached us: reload it from history.
            logger.info("hub: the feed of %s is back", feed.group)
            feed.last_seq = 0
            for subscription in feed.everyone():
                subscription._resync("the message bus was unreachable")

    def _abandon(self, feed: _Feed) -> None:
        feed.abandon = None
        for subscription in feed.everyone():
            subscription._lose("the message bus is unreachable")

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
            for subscription in feed.everyone():
                subscription._resync(f"missed events {last + 1}..{seq - 1}")
        return True

    @staticmethod
    def publish_local(feed: _Feed, message: HubMessage) -> None:
        for subscription in feed.recipients(message):
            subscription._deliver(message)

    async def wait_released(self) -> None:
        """Wait until every pending group release has finished (tests, shutdown)."""
        while self._releases:
            await asyncio.gather(*tuple(self._releases), return_exceptions=True)

    def stats(self) -> dict[str, Any]:
        return {
            "feeds": len(self._feeds),
            "feeds_down": self.feeds_down(),
            "subscribers": sum(feed.size() for feed in self._feeds.values()),
            "resyncs": self.resyncs,
            "feed_failures": self.feed_failures,
        }

    def subscriber_kinds(self) -> dict[str, int]:
        """Local subscribers by kind ("stream", "page", "widget", …)."""
        kinds: dict[str, int] = {}
        for feed in self._feeds.values():
            for subscription in feed.everyone():
                kinds[subscription.kind] = kinds.get(subscription.kind, 0) + 1
        return kinds

    def feeds_down(self) -> int:
        """Feeds that are retrying their group (and not just starting for the first time)."""
        return sum(1 for feed in self._feeds.values() if feed.down_since is not None)

    def subscriber_count(self, session_id: str | None) -> int:
        feed = self._feeds.get(session_id)
        return 0 if feed is None else feed.size()

    def group_channel(self, session_id: str | None) -> str | None:
        feed = self._feeds.get(session_id)
        return None if feed is None else feed.channel

    async def close(self) -> None:
        for feed in list(self._feeds.values()):
            for subscription in feed.everyone():
                subscription.close()
        await self.wait_released()


def _observe_fanout(message: HubMessage) -> None:
    """Stored → handed to this process's subscribers, once per message (not per viewer)."""
    received = message.data.get("received_at") if message.kind == "event" else None
    if not isinstance(received, str):
        return
    try:
        stored = datetime.fromisoformat(received.replace("Z", "+00:00"))
    except ValueError:
        return
    telemetry.stored_to_fanout.observe(max(0.0, (datetime.now(UTC) - stored).total_seconds()))


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
