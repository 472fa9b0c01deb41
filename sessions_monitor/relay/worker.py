"""The relay: one task per watched session turning `follow_status` items into stored,
broadcast events. The loops are trivial; the steps (`handle_item`, `handle_watch_message`,
`rescan_once`, `discover_once`) are what tests call directly.

Embedded (`serve` without REDIS_URL): runs inside daphne's event loop, `LocalLeases`.
Scaled (`runrelay`, REDIS_URL): several processes, `RedisLeases` decide who streams what.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from typing import Any, TypeVar

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings

from sessions_monitor import selectors, services
from sessions_monitor.relay.discovery import discover_sessions
from sessions_monitor.relay.leases import Leases, LocalLeases
from sessions_monitor.upstream import (
    TERMINAL_STATUSES,
    BackoffPolicy,
    LinkState,
    LinkStateName,
    MeetingBuddyClient,
    StreamClosed,
    UpstreamError,
    UpstreamEvent,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")
PRESENCE_SNAPSHOT_SECONDS = 5.0

_current: Relay | None = None


def current_relay() -> Relay | None:
    return _current


class Relay:
    name = "relay"

    def __init__(
        self,
        *,
        upstream_url: str,
        token: str = "",
        leases: Leases | None = None,
        discovery_seconds: float | None = None,
        stall_seconds: float | None = None,
        rescan_seconds: float | None = None,
        backoff: BackoffPolicy | None = None,
        client: MeetingBuddyClient | None = None,
        mode: str = "embedded",
    ) -> None:
        self.upstream_url = upstream_url
        self.token = token
        self.leases: Leases = leases or LocalLeases()
        self.discovery_seconds = (
            settings.MEETINGDASH_DISCOVERY_SECONDS
            if discovery_seconds is None
            else discovery_seconds
        )
        self.stall_seconds = (
            settings.MEETINGDASH_UPSTREAM_STALL_SECONDS if stall_seconds is None else stall_seconds
        )
        self.rescan_seconds = (
            settings.MEETINGDASH_RELAY_RESCAN_SECONDS if rescan_seconds is None else rescan_seconds
        )
        self.backoff = backoff or BackoffPolicy(initial=0.5, cap=30.0)
        self.mode = mode
        self._client = client
        self._owns_client = client is None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._writes: set[asyncio.Future[Any]] = set()
        self.running = False
        self.started_at: float | None = None
        self.counts: Counter[str] = Counter()

    @property
    def client(self) -> MeetingBuddyClient:
        if self._client is None:
            self._client = MeetingBuddyClient(
                self.upstream_url,
                self.token,
                stall_seconds=self.stall_seconds,
                backoff=self.backoff,
            )
        return self._client

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        global _current
        _current = self
        self.running = True
        self.started_at = time.time()
        self._loops = [
            asyncio.create_task(self._listen(), name="relay:listen"),
            asyncio.create_task(
                self._every(self.rescan_seconds, self.rescan_once), name="relay:rescan"
            ),
            asyncio.create_task(
                self._every(self.leases.ttl_seconds / 3, self.renew_leases), name="relay:leases"
            ),
        ]
        if self.discovery_seconds > 0:
            self._loops.append(
                asyncio.create_task(
                    self._every(self.discovery_seconds, self.discover_once), name="relay:discover"
                )
            )
        logger.info("relay started (%s) following %s", self.mode, self.upstream_url)

    async def stop(self) -> None:
        """Cancel every task; in-flight writes finish (they are shielded), then leases go."""
        global _current
        self.running = False
        for task in [*self._loops, *self._tasks.values()]:
            task.cancel()
        # Follow tasks end at once; the loops may sit in a channels-redis BZPOPMIN that
        # only notices the cancellation when it returns (up to 5 s): do not wait for them.
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await asyncio.wait(self._loops, timeout=1)
        if self._writes:
            await asyncio.wait(self._writes, timeout=5)
        for session_id in list(self._tasks):
            with contextlib.suppress(Exception):
                await self.leases.release(session_id)
        self._tasks.clear()
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
        with contextlib.suppress(Exception):
            await self.leases.close()
        if _current is self:
            _current = None
        logger.info("relay stopped")

    async def _every(self, seconds: float, step: Callable[[], Awaitable[Any]]) -> None:
        while True:
            try:
                await step()
            except asyncio.CancelledError:
                raise
            except Exception:
                if not self.running:
                    return
                logger.exception("relay: %s failed", getattr(step, "__name__", step))
            await asyncio.sleep(seconds)

    async def _listen(self) -> None:
        layer = get_channel_layer()
        assert layer is not None
        while True:
            try:
                message = await layer.receive(services.RELAY_CHANNEL)
            except asyncio.CancelledError:
                raise
            except Exception:
                if not self.running:  # redis-py may turn our cancellation into an error
                    return
                logger.warning("relay: receiving watch requests failed", exc_info=True)
                await asyncio.sleep(1)
                continue
            try:
                await self.handle_watch_message(message)
            except Exception:
                logger.exception("relay: watch request %r failed", message)

    # -- steps --------------------------------------------------------------------------------

    async def handle_watch_message(self, message: dict[str, Any]) -> bool:
        session_id = message.get("session_id")
        if not isinstance(session_id, str):
            return False
        if message.get("type") == "session.watch":
            return await self.watch(session_id)
        if message.get("type") == "session.unwatch":
            return await self.unwatch(session_id)
        return False

    def is_following(self, session_id: str) -> bool:
        task = self._tasks.get(session_id)
        return task is not None and not task.done()

    def following(self) -> list[str]:
        return [sid for sid, task in self._tasks.items() if not task.done()]

    async def watch(self, session_id: str) -> bool:
        """Start following a session if no relay does yet. True when this call started it."""
        if not self.running or self.is_following(session_id):
            return False
        try:
            services.validate_session_id(session_id)
        except services.InvalidSessionId:
            return False
        if not await self.leases.acquire(session_id):
            return False
        if self.is_following(session_id):  # another watch won while we awaited the lease
            return False
        self._tasks[session_id] = asyncio.create_task(
            self._follow(session_id), name=f"relay:{session_id}"
        )
        self.counts["watches"] += 1
        return True

    async def unwatch(self, session_id: str) -> bool:
        task = self._tasks.pop(session_id, None)
        if task is None:
            return False
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self.leases.release(session_id)
        return True

    async def rescan_once(self) -> list[str]:
        """Follow every watched session that should be live and is not (resume on start,
        `watch_session` from another process, take-over after another relay died)."""
        session_ids = await database_sync_to_async(selectors.watched_sessions_to_follow)()
        return [sid for sid in session_ids if await self.watch(sid)]

    async def discover_once(self) -> list[str]:
        """Watch every non-terminal upstream session; returns those this call started."""
        session_ids = await discover_sessions(self.client, skip=set(self.following()))
        self.counts["discoveries"] += 1
        return [sid for sid in session_ids if await self.watch(sid)]

    async def renew_leases(self) -> None:
        await self.leases.heartbeat(self.describe())
        for session_id in self.following():
            if not await self.leases.renew(session_id):
                logger.warning("relay: lost the lease of %s; another relay takes over", session_id)
                task = self._tasks.pop(session_id, None)
                if task is not None:
                    task.cancel()

    async def handle_item(self, session_id: str, item: UpstreamEvent | LinkState) -> bool:
        """Store (then broadcast) one item from `follow_status`. False = stop following."""
        if isinstance(item, LinkState):
            if item.state is LinkStateName.ENDED:
                # The session ended; store the `close` the upstream may not have sent.
                await self._write(
                    services.arecord_event(
                        session_id=session_id, event=StreamClosed("session_ended")
                    )
                )
            await self._write(services.arecord_link_state(session_id=session_id, state=item))
            self.counts[f"link_{item.state.value}"] += 1
            return item.state not in (LinkStateName.ENDED, LinkStateName.FAILED)
        recorded = await self._write(services.arecord_event(session_id=session_id, event=item))
        self.counts["events_stored" if recorded is not None else "events_deduplicated"] += 1
        return True

    async def seed_presence(self, session_id: str) -> int:
        """Who is in the meeting before our stream starts? The stream only tells joins from
        its start on, so ask the session object first: a snapshot taken before connecting
        precedes every streamed event, and so keeps our history in upstream order."""
        try:
            async with asyncio.timeout(PRESENCE_SNAPSHOT_SECONDS):
                session = await self.client.get_session(session_id)
        except Exception as exc:  # best effort: the stream stays authoritative
            logger.info("relay: no participant snapshot for %s: %s", session_id, exc)
            return 0
        names = session.present_participant_names
        if not names or session.status in TERMINAL_STATUSES:
            return 0
        raw = json.dumps({"current_participants": list(names)}, ensure_ascii=False)
        seeded = await self._write(
            services.aseed_presence(session_id=session_id, names=names, raw=raw)
        )
        self.counts["participants_seeded"] += seeded
        return seeded

    async def _write(self, coro: Awaitable[T]) -> T:
        """Run a DB write so that cancelling the caller (shutdown) cannot cut it in half."""
        future = asyncio.ensure_future(coro)
        self._writes.add(future)
        future.add_done_callback(self._writes.discard)
        return await asyncio.shield(future)

    async def _follow(self, session_id: str) -> None:
        attempt = 0
        try:
            await self.seed_presence(session_id)
            while True:
                try:
                    async with aclosing(
                        self.client.follow_status(
                            session_id, stall_seconds=self.stall_seconds, backoff=self.backoff
                        )
                    ) as items:
                        async for item in items:
                            if not await self.handle_item(session_id, item):
                                return
                    return
                except UpstreamError as exc:
                    # follow_status only raises permanent errors; FAILED is already stored.
                    logger.warning("relay: %s failed permanently: %s", session_id, exc)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = self.backoff.delay(attempt)
                    attempt += 1
                    logger.exception(
                        "relay: following %s broke; retrying in %.1fs", session_id, delay
                    )
                    with contextlib.suppress(Exception):
                        await self._write(
                            services.arecord_link_state(
                                session_id=session_id,
                                state=LinkState(
                                    LinkStateName.RETRYING,
                                    reason=f"relay error: {type(exc).__name__}",
                                    retry_in=delay,
                                ),
                            )
                        )
                    await asyncio.sleep(delay)
        finally:
            if self._tasks.get(session_id) is asyncio.current_task():
                del self._tasks[session_id]
                with contextlib.suppress(Exception):
                    await self.leases.release(session_id)

    def loops_alive(self) -> bool:
        return all(not task.done() for task in self._loops)

    def describe(self) -> dict[str, Any]:
        return {
            "owner": self.leases.owner,
            "mode": self.mode,
            "running": self.running,
            "following": len(self.following()),
            "started_at": self.started_at,
        }


def channel_prefix() -> str:
    layers: Any = settings.CHANNEL_LAYERS
    return str(layers["default"].get("CONFIG", {}).get("prefix", "meetingdash"))


def build_embedded_relay(*, upstream_url: str, token: str) -> Relay:
    """The relay `serve` runs in its own event loop when there is no REDIS_URL."""
    return Relay(upstream_url=upstream_url, token=token, mode="embedded")


def build_scaled_relay(*, upstream_url: str, redis_url: str) -> Relay:
    from sessions_monitor.relay.leases import RedisLeases

    return Relay(
        upstream_url=upstream_url,
        token=settings.MEETINGBUDDY_API_TOKEN,
        leases=RedisLeases(
            redis_url,
            prefix=channel_prefix(),
            ttl_seconds=settings.MEETINGDASH_RELAY_LEASE_SECONDS,
        ),
        mode="scaled",
    )
