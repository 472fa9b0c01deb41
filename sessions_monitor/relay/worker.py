"""The relay: one task per watched session turning `follow_status` items into stored,
broadcast events. The loops are trivial; the steps (`handle_item`, `handle_watch_message`,
`rescan_once`, `discover_once`, `renew_leases`, `check_alerts_once`, `send_alerts_once`) are
what tests call directly.

Embedded (`serve` without REDIS_URL): runs inside daphne's event loop, `LocalLeases`.
Scaled (`runrelay`, REDIS_URL): several processes, `RedisLeases` decide who follows what.
The entry point that builds a relay hands it to whatever reports on it (`build_application
(relay=...)`, `metrics.register_process_collector(relay)`); nothing looks it up.

What the upstream sends while nobody follows a session is gone (no event ids, no replay).
So every time a session's upstream link (re)starts after a drop, a stall, a relay restart or
a take-over, the relay stores a `gap` event from the last byte seen (or the last moment any
relay said the link was live) to the new connection, and reconciles who is present, both
ways, against the session object it reads just before connecting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.utils import timezone

from sessions_monitor import lookups, messages, selectors, services, telemetry
from sessions_monitor.alerts import sender
from sessions_monitor.alerts.watchdog import LEADER_ROLE, CheckReport, Watchdog
from sessions_monitor.relay.discovery import discover_sessions
from sessions_monitor.relay.leases import Leases, LocalLeases, RedisLeases
from sessions_monitor.relay.transcripts import TranscriptPollers
from sessions_monitor.relay.writes import OrderedWrites, Write
from sessions_monitor.upstream import (
    TERMINAL_STATUSES,
    BackoffPolicy,
    LinkState,
    LinkStateName,
    MeetingBuddyClient,
    StreamClosed,
    UpstreamError,
    UpstreamEvent,
    UpstreamSession,
    is_valid_session_id,
)

logger = logging.getLogger(__name__)
SNAPSHOT_SECONDS = 5.0
# stop(): how long in-flight and queued writes may take before they are given up.
STOP_WRITES_SECONDS = 4.0
# stop(): how long releasing leases may take (Redis may be the thing that is down).
STOP_LEASES_SECONDS = 2.0
# How often each relay looks for alerts due in the outbox.
ALERT_SEND_SECONDS = 1.0


@dataclass
class _Link:
    """What the relay knows of one session's upstream stream while it follows it."""

    session_id: str
    writes: OrderedWrites
    # Since when we may have missed events (None: we have not). `unknown_since`: we may
    # have, since a time nobody knows (no stored trace of the link).
    outage_since: datetime | None = None
    unknown_since: bool = False
    outage_reason: str = ""
    seed: bool = False  # first watch of this session: who is present was never seen
    snapshot: UpstreamSession | None = None
    want_snapshot: bool = True
    live: bool = False
    started_at: float = field(default_factory=time.monotonic)

    @property
    def after_gap(self) -> bool:
        return self.outage_since is not None or self.unknown_since


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
        # Several relays (scaled): each session is also claimed in the database, which
        # outlives a Redis restart that drops every lease.
        self.claims_in_db = not isinstance(self.leases, LocalLeases)
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
        self._links: dict[str, _Link] = {}
        self._loops: list[asyncio.Task[None]] = []
        self.watchdog = Watchdog(
            lead=lambda: self.leases.lead(LEADER_ROLE),
            probe_upstream=lambda: self.client.probe(),
        )
        self.alert_check_seconds = settings.MEETINGDASH_ALERT_CHECK_SECONDS
        self.transcripts = TranscriptPollers(
            lambda: self.client, settings.MEETINGDASH_TRANSCRIPT_POLL_SECONDS
        )
        self.running = False
        self.started_at: float | None = None

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
        if self.alert_check_seconds > 0:
            self._loops += [
                asyncio.create_task(
                    self._every(self.alert_check_seconds, self.check_alerts_once),
                    name="relay:watchdog",
                ),
                asyncio.create_task(
                    self._every(ALERT_SEND_SECONDS, self.send_alerts_once), name="relay:alerts"
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
        """Bounded whatever is broken: readers stop at once; queued writes get
        STOP_WRITES_SECONDS (what is left then is logged as lost); leases are released
        within STOP_LEASES_SECONDS (they expire on their own otherwise)."""
        self.running = False
        for task in [*self._loops, *self._tasks.values()]:
            task.cancel()
        # Follow tasks end at once; the loops may sit in a channels-redis BZPOPMIN that
        # only notices the cancellation when it returns (up to 5 s): do not wait for them.
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await asyncio.wait(self._loops, timeout=1)
        links = list(self._links.values())
        pending = [asyncio.ensure_future(link.writes.drained()) for link in links]
        if pending:
            await asyncio.wait(pending, timeout=STOP_WRITES_SECONDS)
        lost = sum(link.writes.cancel() for link in links)
        if lost:
            logger.error("relay stopped with %d writes not stored (database unreachable)", lost)
            telemetry.events_dropped.labels("shutdown").inc(lost)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_LEASES_SECONDS):
                await self.leases.resign(LEADER_ROLE)
                for session_id in list(self._tasks):
                    await self._release(session_id)
        self._tasks.clear()
        self._links.clear()
        if self._owns_client and self._client is not None:
            await self._client.aclose()
            self._client = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(STOP_LEASES_SECONDS):
                await self.leases.close()
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
                message = await layer.receive(messages.RELAY_CHANNEL)
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
        request = messages.parse_watch_message(message)
        if request is None:
            return False
        if request.watched:
            return await self.watch(request.session_id)
        return await self.unwatch(request.session_id)

    def is_following(self, session_id: str) -> bool:
        task = self._tasks.get(session_id)
        return task is not None and not task.done()

    def following(self) -> list[str]:
        return [sid for sid, task in self._tasks.items() if not task.done()]

    async def watch(self, session_id: str) -> bool:
        """Start following a session if no relay does yet. True when this call started it."""
        if not self.running or self.is_following(session_id) or not is_valid_session_id(session_id):
            return False
        if self.claims_in_db and not await database_sync_to_async(services.claim_stream)(
            session_id, self.leases.owner, self.leases.ttl_seconds
        ):
            return False  # another relay streams it (its Redis lease may have vanished)
        if not await self.leases.acquire(session_id):
            if self.claims_in_db:
                await database_sync_to_async(services.release_stream_claim)(
                    session_id, self.leases.owner
                )
            return False
        if self.is_following(session_id):  # another watch won while we awaited the lease
            return False
        self._tasks[session_id] = asyncio.create_task(
            self._follow(session_id), name=f"relay:{session_id}"
        )
        return True

    async def unwatch(self, session_id: str) -> bool:
        task = self._tasks.pop(session_id, None)
        if task is None:
            return False
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await self._release(session_id)
        return True

    async def _release(self, session_id: str) -> None:
        await self.leases.release(session_id)
        if self.claims_in_db:
            await database_sync_to_async(services.release_stream_claim)(
                session_id, self.leases.owner
            )

    async def rescan_once(self) -> list[str]:
        """Follow every watched session that should be live and is not (resume on start,
        `watch_session` from another process, take-over after another relay died)."""
        owner = self.leases.owner if self.claims_in_db else None
        session_ids = await database_sync_to_async(selectors.watched_sessions_to_follow)(owner)
        return [sid for sid in session_ids if await self.watch(sid)]

    async def discover_once(self) -> list[str]:
        """Watch every non-terminal upstream session; returns those this call started."""
        session_ids = await discover_sessions(self.client, skip=set(self.following()))
        return [sid for sid in session_ids if await self.watch(sid)]

    async def renew_leases(self) -> None:
        """Renew each lease; hand over only a session whose lease another relay holds. A
        Redis that cannot be reached is no reason to stop streaming (nobody else can take
        the lease meanwhile); a lease that vanished with a Redis restart is taken again.
        Then tell the database which links are live (one UPDATE), for gaps after a crash."""
        with contextlib.suppress(Exception):
            await self.leases.heartbeat(self.describe())
        for session_id in self.following():
            try:
                still_ours = await self.leases.renew(session_id)
            except Exception as exc:
                logger.warning("relay: cannot renew the lease of %s (%s)", session_id, exc)
                continue
            if not still_ours:
                logger.warning("relay: %s is streamed by another relay now", session_id)
                telemetry.leases_lost.inc()
                task = self._tasks.pop(session_id, None)
                if task is not None:
                    task.cancel()
        for session_id, link in list(self._links.items()):
            if not self.is_following(session_id) and not len(link.writes):
                del self._links[session_id]  # its writes finished after the follow ended
        if self.claims_in_db:
            try:
                await database_sync_to_async(services.renew_stream_claims)(
                    self.following(), self.leases.owner, self.leases.ttl_seconds
                )
            except Exception as exc:
                logger.warning("relay: cannot renew the claims in the database (%s)", exc)
        live = [sid for sid, link in self._links.items() if link.live and self.is_following(sid)]
        if live:
            with contextlib.suppress(Exception):
                await database_sync_to_async(services.mark_streams_alive)(live)

    async def check_alerts_once(self) -> CheckReport:
        """The watchdog (stuck sessions, the upstream down), if this relay leads it."""
        return await self.watchdog.check_once()

    async def send_alerts_once(self) -> int:
        """Send the outbox's due alerts (every relay: a claim makes each row one relay's)."""
        sent: int = await sender.send_due_once(self.leases.owner)
        return sent

    async def flush(self, session_id: str) -> None:
        """Until everything handled so far for the session is stored (tests, shutdown)."""
        link = self._links.get(session_id)
        if link is not None:
            await link.writes.drained()

    def _link(self, session_id: str) -> _Link:
        link = self._links.get(session_id)
        if link is None:
            link = self._links[session_id] = _Link(session_id, OrderedWrites(session_id))
        return link

    async def handle_item(self, session_id: str, item: UpstreamEvent | LinkState) -> bool:
        """Queue the storage (then broadcast) of one item from `follow_status`, in order.
        False = stop following."""
        link = self._link(session_id)
        if not isinstance(item, LinkState):
            await link.writes.put(_event_write(session_id, item))
            return True
        if item.state is LinkStateName.CONNECTING:
            if link.want_snapshot:
                # Before the connection opens: it precedes every event the stream sends.
                link.snapshot = await self.snapshot(session_id)
                if link.snapshot is not None:
                    await link.writes.put(_metadata_write(link.snapshot))
            await link.writes.put(_link_write(session_id, item))
            return True
        if item.state is LinkStateName.LIVE:
            await self._connected(link)
        elif item.state in (LinkStateName.RETRYING, LinkStateName.FAILED):
            # Not before the first connection ever: nothing was missed yet that the seeding
            # of who is present does not cover.
            if link.live or (not link.after_gap and not link.seed):
                link.outage_since = item.last_byte_at or timezone.now()
                link.outage_reason = item.reason or item.state.value
            link.live = False
            link.want_snapshot = True
        elif item.state is LinkStateName.ENDED:
            link.live = False
            # The session ended; store the `close` the upstream may not have sent.
            close = StreamClosed("session_ended")
            await link.writes.put(_event_write(session_id, close))
        await link.writes.put(_link_write(session_id, item))
        return item.state not in (LinkStateName.ENDED, LinkStateName.FAILED)

    async def _connected(self, link: _Link) -> None:
        """A stream is live: first what we may have missed (the gap), then who is present
        according to the snapshot read just before connecting, then the stream's events."""
        session_id = link.session_id
        if link.after_gap:
            since, reason = link.outage_since, link.outage_reason
            await link.writes.put(
                Write(
                    lambda: services.arecord_gap(
                        session_id=session_id, started_at=since, reason=reason
                    ),
                    "a gap note",
                )
            )
        snapshot = link.snapshot
        if snapshot is not None and snapshot.status not in TERMINAL_STATUSES:
            names = snapshot.present_participant_names
            raw = json.dumps({"current_participants": list(names)}, ensure_ascii=False)
            if link.after_gap:
                await link.writes.put(
                    Write(
                        lambda: services.areconcile_presence(
                            session_id=session_id, names=names, raw=raw
                        ),
                        "who was present after a gap",
                    )
                )
            elif link.seed and names:
                await link.writes.put(
                    Write(
                        lambda: services.aseed_presence(
                            session_id=session_id, names=names, raw=raw
                        ),
                        "who was present when watching began",
                    )
                )
        link.outage_since, link.unknown_since, link.outage_reason = None, False, ""
        link.seed = link.want_snapshot = False
        link.snapshot = None
        link.live = True

    async def snapshot(self, session_id: str) -> UpstreamSession | None:
        """The session object (who is present), best effort: the stream stays authoritative."""
        try:
            async with asyncio.timeout(SNAPSHOT_SECONDS):
                return await self.client.get_session(session_id)
        except Exception as exc:
            logger.info("relay: no snapshot of %s: %s", session_id, exc)
            return None

    async def _start_link(self, session_id: str) -> _Link:
        """Before the first connection: did anyone stream this session before (a gap since
        then), or is this the first watch (seed who is present)?"""
        # A fresh state; the write queue of an earlier follow (if still draining) is kept,
        # so this follow's writes come after its writes.
        previous = self._links.get(session_id)
        writes = previous.writes if previous is not None else OrderedWrites(session_id)
        link = self._links[session_id] = _Link(session_id, writes)
        try:
            start = await database_sync_to_async(selectors.follow_start)(session_id)
        except Exception as exc:  # cannot tell: assume the worst, a gap since unknown
            logger.warning("relay: cannot read %s before following it: %s", session_id, exc)
            start = selectors.FollowStart(True, None)
        if start.has_history:
            telemetry.lease_takeovers.inc()
            link.outage_since = start.last_known_at
            link.unknown_since = start.last_known_at is None
            link.outage_reason = "not streamed by any relay (restart or take-over)"
        else:
            link.seed = True
        return link

    async def _follow(self, session_id: str) -> None:
        attempt = 0
        try:
            await self._start_link(session_id)
            self.transcripts.start(session_id)
            while True:
                try:
                    async with aclosing(
                        self.client.follow_status(
                            session_id, stall_seconds=self.stall_seconds, backoff=self.backoff
                        )
                    ) as items:
                        async for item in items:
                            if not await self.handle_item(session_id, item):
                                await self.flush(session_id)
                                return
                    await self.flush(session_id)
                    return
                except UpstreamError as exc:
                    # follow_status only raises permanent errors; FAILED is already queued.
                    logger.warning("relay: %s failed permanently: %s", session_id, exc)
                    await self.flush(session_id)
                    return
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = self.backoff.delay(attempt)
                    attempt += 1
                    logger.exception(
                        "relay: following %s broke; retrying in %.1fs", session_id, delay
                    )
                    await self.handle_item(
                        session_id,
                        LinkState(
                            LinkStateName.RETRYING,
                            reason=f"relay error: {type(exc).__name__}",
                            retry_in=delay,
                        ),
                    )
                    await asyncio.sleep(delay)
        finally:
            await self.transcripts.stop(session_id)
            if self._tasks.get(session_id) is asyncio.current_task():
                del self._tasks[session_id]
                link = self._links.get(session_id)
                if link is not None and not len(link.writes):
                    self._links.pop(session_id, None)
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(STOP_LEASES_SECONDS):
                        await self._release(session_id)

    def write_queue(self) -> int:
        return sum(len(link.writes) for link in self._links.values())

    def loops_alive(self) -> bool:
        return all(not task.done() for task in self._loops)

    def describe(self) -> dict[str, Any]:
        return {
            "owner": self.leases.owner,
            "mode": self.mode,
            "running": self.running,
            "following": len(self.following()),
            "write_queue": self.write_queue(),
            "started_at": self.started_at,
        }


def _event_write(session_id: str, event: UpstreamEvent) -> Write:
    async def note_refused(exc: BaseException) -> None:
        raw = getattr(event, "raw", "") or repr(event)
        await services.arecord_anomaly(
            session_id=session_id,
            note=f"could not store a {type(event).__name__} event ({type(exc).__name__}); "
            f"its payload is kept here",
            raw=raw,
        )

    return Write(
        lambda: services.arecord_event(session_id=session_id, event=event),
        f"a {type(event).__name__} event",
        note_refused,
    )


def _metadata_write(snapshot: UpstreamSession) -> Write:
    """Bot name, platform and link of a session watched by id alone (alert rules and the
    list's filters match on them)."""
    return Write(
        lambda: database_sync_to_async(lookups.store_sessions)([snapshot]),
        "the session's bot name and platform",
    )


def _link_write(session_id: str, state: LinkState) -> Write:
    return Write(
        lambda: services.arecord_link_state(session_id=session_id, state=state),
        f"the link state {state.state.value}",
    )


def channel_prefix() -> str:
    layers: Any = settings.CHANNEL_LAYERS
    return str(layers["default"].get("CONFIG", {}).get("prefix", "meetingdash"))


def build_embedded_relay(
    *, upstream_url: str, token: str, client: MeetingBuddyClient | None = None
) -> Relay:
    """The relay `serve` runs in its own event loop when there is no REDIS_URL; `client`:
    the process's shared one (`lookups.shared_client`), so look-ups and the relay share it."""
    return Relay(upstream_url=upstream_url, token=token, client=client, mode="embedded")


def build_scaled_relay(*, upstream_url: str, redis_url: str) -> Relay:
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
