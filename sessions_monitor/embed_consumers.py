"""The widget's live channel: one badge per message, from the per-process hub.

The token is checked before the handshake is accepted (refused = HTTP 403 to the browser,
which then shows the badge it has, and the page the refused-link view gives on reload).
While open, the socket closes itself when the token expires, and when it is revoked (checked
every `access.check_interval()`), each time after saying so in the badge. A widget token may
hold MEETINGDASH_MAX_WIDGETS_PER_TOKEN sockets at once. Each `sessions.summary` of the session
is rendered to badge HTML once per process (`HubMessage.render`), so a thousand widgets on
the same session cost one render, not a thousand.

Badges need the session's state after each change, which `sessions.summary` carries (event
messages do not). The hub hands every summary to every subscriber of that key, so the widgets
of a process share ONE summaries subscription (`BadgeFeed`) that routes each summary to the
widgets of its session only: a summary of session A never wakes the widgets of session B.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string

from sessions_monitor import access, embed, limits, selectors
from sessions_monitor.consumers import CLOSE_FEED_LOST, CLOSE_TRY_AGAIN, HUB_ONLY, KEEPALIVE
from sessions_monitor.embed_views import render_badge
from sessions_monitor.hub import Hub, HubMessage, HubUnavailable, Subscription, get_hub

logger = logging.getLogger(__name__)

BADGE_KEY = "embed-badge"
EXPIRED_TEMPLATE = "sessions_monitor/embed.html#expired"
REVOKED_TEMPLATE = "sessions_monitor/embed.html#revoked"
BUSY_TEMPLATE = "sessions_monitor/embed.html#busy"
# Close codes; the ws extension does not reconnect on 4xxx codes.
CLOSE_EXPIRED = 4001
CLOSE_REVOKED = 4403
CLOSE_TOO_MANY = 4429


def badge_of(message: HubMessage) -> str:
    return render_badge(message.data, message.data.get("session_id") or message.session_id or "")


class LatestOnly:
    """A one-slot mailbox: a newer state replaces one not yet sent. A badge shows only the
    latest state, so a slow socket skips intermediate ones instead of queueing them."""

    def __init__(self) -> None:
        self._message: HubMessage | None = None
        self._ready = asyncio.Event()

    def put(self, message: HubMessage) -> None:
        self._message = message
        self._ready.set()

    async def get(self) -> HubMessage:
        while self._message is None:
            self._ready.clear()
            await self._ready.wait()
        message, self._message = self._message, None
        return message


class BadgeFeed:
    """The widgets of one process (event loop): one hub subscription, routed by session id."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.boxes: dict[str, set[LatestOnly]] = {}
        self.subscription: Subscription | None = None
        self.task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    async def join(self, session_id: str) -> LatestOnly:
        """Returns once this process receives the summaries: later changes reach the box."""
        box = LatestOnly()
        self.boxes.setdefault(session_id, set()).add(box)
        try:
            async with self._starting:
                if self.subscription is None:
                    self.subscription = await self.hub.subscribe(None, kind="widgets")
                    self.task = asyncio.create_task(
                        self._route(self.subscription), name="embed-feed"
                    )
        except BaseException:
            self.leave(session_id, box)
            raise
        return box

    def leave(self, session_id: str, box: LatestOnly) -> None:
        boxes = self.boxes.get(session_id, set())
        boxes.discard(box)
        if not boxes:
            self.boxes.pop(session_id, None)
        if not self.boxes and self.subscription is not None:
            self.subscription.close()
            if self.task is not None:
                self.task.cancel()
            self.subscription = self.task = None

    def widget_count(self) -> int:
        return sum(len(boxes) for boxes in self.boxes.values())

    async def _route(self, subscription: Subscription) -> None:
        async for message in subscription:
            if message.kind in ("resync", "lost"):
                targets = [box for boxes in self.boxes.values() for box in boxes]
            else:
                targets = list(self.boxes.get(message.session_id or "", ()))
            for box in targets:
                box.put(message)
            if message.kind == "lost":
                # The next widget to join subscribes afresh (waiting for the feed to be back).
                if self.subscription is subscription:
                    self.subscription = self.task = None
                return


_feeds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, BadgeFeed] = (
    weakref.WeakKeyDictionary()
)


def get_badge_feed() -> BadgeFeed:
    loop = asyncio.get_running_loop()
    feed = _feeds.get(loop)
    if feed is None:
        feed = _feeds[loop] = BadgeFeed(get_hub())
    return feed


class EmbedBadgeConsumer(AsyncWebsocketConsumer):
    channel_layer_alias = HUB_ONLY
    session_id: str
    grant: embed.EmbedGrant
    credential: access.Credential
    box: LatestOnly | None = None
    pump: asyncio.Task[None] | None = None
    guard: asyncio.Task[None] | None = None
    occupancy: limits.Occupancy | None = None
    # The newest state shown: summaries that arrived while the snapshot was read may be older.
    shown_seq = 0

    async def connect(self) -> None:
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = query.get("token", [""])[0]
        try:
            self.grant = await database_sync_to_async(embed.valid_grant)(token, self.session_id)
        except embed.InvalidEmbedToken:
            await self.close()
            return
        self.credential = access.credential_for_widget(token, self.session_id)
        self.occupancy = limits.Occupancy(
            [
                (
                    f"widgets:{embed.token_fingerprint(token)}",
                    settings.MEETINGDASH_MAX_WIDGETS_PER_TOKEN,
                )
            ]
        )
        if not await self.occupancy.acquire():
            self.occupancy = None
            await self.accept()
            await self.send(text_data=render_to_string(BUSY_TEMPLATE))
            await self.close(code=CLOSE_TOO_MANY)
            return
        # Join before reading the snapshot: whatever changes after the read arrives.
        try:
            self.box = await get_badge_feed().join(self.session_id)
        except HubUnavailable:
            await self.accept()
            await self.close(code=CLOSE_TRY_AGAIN)
            return
        await self.accept()
        await self.send_snapshot()
        self.pump = asyncio.create_task(self.forward(), name=f"embed:{self.session_id}")
        self.guard = asyncio.create_task(self.recheck(), name=f"embed-access:{self.session_id}")

    async def disconnect(self, code: int) -> None:
        for task in (self.pump, self.guard):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.box is not None:
            get_badge_feed().leave(self.session_id, self.box)
            self.box = None
        if self.occupancy is not None:
            await self.occupancy.release()
            self.occupancy = None

    async def recheck(self) -> None:
        """Close (saying so) once the link is revoked; keep the slot alive meanwhile; and a
        keepalive each time, so the widget can tell a quiet socket from a dead one."""
        assert self.occupancy is not None
        while True:
            await asyncio.sleep(access.check_interval())
            await self.send(text_data=KEEPALIVE)
            if not await access.still_valid(self.credential):
                if self.pump is not None:
                    self.pump.cancel()
                await self.send(text_data=render_to_string(REVOKED_TEMPLATE))
                await self.close(code=CLOSE_REVOKED)
                return
            await self.occupancy.refresh()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Read-only: anything the browser sends is ignored."""

    async def send_snapshot(self) -> None:
        snapshot = await database_sync_to_async(selectors.session_snapshot)(self.session_id)
        self.shown_seq = int((snapshot or {}).get("last_seq") or 0)
        await self.send(text_data=render_badge(snapshot, self.session_id))

    async def forward(self) -> None:
        assert self.box is not None
        expires_in = self.grant.expires_at.timestamp() - time.time()
        try:
            async with asyncio.timeout(max(expires_in, 0)):
                while True:
                    await self.forward_one(await self.box.get())
        except TimeoutError:
            # Say so before closing: the ws extension does not reconnect on 4xxx codes, and
            # the last badge would otherwise stay up as if it were live.
            await self.send(text_data=render_to_string(EXPIRED_TEMPLATE))
            await self.close(code=CLOSE_EXPIRED)

    async def forward_one(self, message: HubMessage) -> None:
        if message.kind == "lost":
            await self.close(code=CLOSE_FEED_LOST)
            return
        if message.kind == "resync":
            await self.send_snapshot()
        elif message.kind == "summary" and message.session_id == self.session_id:
            seq = int(message.data.get("last_seq") or 0)
            if seq < self.shown_seq:
                return
            self.shown_seq = seq
            await self.send(text_data=str(message.render(BADGE_KEY, badge_of)))
