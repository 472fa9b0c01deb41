"""The widget's live channel: one badge per message, from the per-process hub.

The token is checked before the handshake is accepted (refused = HTTP 403 to the browser,
which then shows the badge it has, and the page the refused-link view gives on reload).
While open, the socket closes itself when the token expires, and when it is revoked (checked
every `access.check_interval()`), each time after saying so in the badge. A widget token may
hold MEETINGDASH_MAX_WIDGETS_PER_TOKEN sockets at once. Each `sessions.summary` of the session
is rendered to badge HTML once per process (`HubMessage.render`), so a thousand widgets on
the same session cost one render, not a thousand.

Badges need the session's state after each change, which `sessions.summary` carries (event
messages do not). Each widget subscribes to its own session's summaries
(`Hub.subscribe_summaries`): the process joins the summaries group once, and a summary of
session A never wakes the widgets of session B. A badge shows only the latest state, so of
what queued up while a socket was busy only the newest summary is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string

from sessions_monitor import access, embed, limits, selectors
from sessions_monitor.consumers import (
    CLOSE_FEED_LOST,
    CLOSE_TRY_AGAIN,
    HUB_ONLY,
    KEEPALIVE,
    next_batch,
    single_flight,
)
from sessions_monitor.embed_views import render_widget_badge
from sessions_monitor.hub import HubUnavailable, Subscription, get_hub
from sessions_monitor.messages import HubMessage

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
    return render_widget_badge(message.data, message.session_id or "")


@dataclass(frozen=True)
class StoredBadge:
    """What a connecting widget reads: the badge as stored, and when the session's links were
    last revoked (one round trip to the database for both)."""

    seq: int
    html: str
    last_revocation: datetime | None


def stored_badge(session_id: str) -> StoredBadge:
    snapshot = selectors.session_snapshot(session_id)
    return StoredBadge(
        seq=int((snapshot or {}).get("last_seq") or 0),
        html=render_widget_badge(snapshot, session_id),
        last_revocation=embed.last_revocation(session_id),
    )


async def shared_stored_badge(session_id: str, not_before: float) -> StoredBadge:
    """`stored_badge`, read and rendered once for every widget of the session that
    subscribed before the read began (a page with a badge loading everywhere, a resync).
    A read that began after one's subscription misses neither a change (the subscription has
    it) nor a revocation committed before, so sharing it refuses and shows exactly what a
    read of one's own would."""
    return await single_flight(
        ("widget-badge", session_id),
        lambda: database_sync_to_async(stored_badge)(session_id),
        not_before=not_before,
    )


class EmbedBadgeConsumer(AsyncWebsocketConsumer):
    channel_layer_alias = HUB_ONLY
    session_id: str
    grant: embed.EmbedGrant
    credential: access.Credential
    summaries: Subscription | None = None
    pump: asyncio.Task[None] | None = None
    guard: asyncio.Task[None] | None = None
    occupancy: limits.Occupancy | None = None
    # The newest state shown: summaries that arrived while the snapshot was read may be older.
    shown_seq = 0

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Channels' dispatch without its `close_old_connections` round trip to a thread
        before every message (two per widget: connect and disconnect, thousands when a page
        with a badge loads everywhere): every database call here goes through
        `database_sync_to_async`, which closes stale connections itself."""
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def connect(self) -> None:
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        token = query.get("token", [""])[0]
        try:
            self.grant = embed.grant_for(token, self.session_id)
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
        loop = asyncio.get_running_loop()
        try:
            self.summaries = await get_hub().subscribe_summaries(
                self.session_id, kind="widget", changes_of=(BADGE_KEY, badge_of)
            )
        except HubUnavailable:
            await self.accept()
            await self.close(code=CLOSE_TRY_AGAIN)
            return
        stored = await shared_stored_badge(self.session_id, not_before=loop.time())
        if embed.revoked_by(self.grant, stored.last_revocation):
            await self.disconnect(CLOSE_REVOKED)  # not every server reports a refused handshake
            await self.close()
            return
        await self.accept()
        await self.show(stored)
        self.pump = asyncio.create_task(self.forward(), name=f"embed:{self.session_id}")
        self.guard = asyncio.create_task(self.recheck(), name=f"embed-access:{self.session_id}")

    async def disconnect(self, code: int) -> None:
        for task in (self.pump, self.guard):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.summaries is not None:
            self.summaries.close()
            self.summaries = None
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
        loop = asyncio.get_running_loop()
        await self.show(await shared_stored_badge(self.session_id, not_before=loop.time()))

    async def show(self, stored: StoredBadge) -> None:
        self.shown_seq = stored.seq
        await self.send(text_data=stored.html)

    async def forward(self) -> None:
        assert self.summaries is not None
        expires_in = self.grant.expires_at.timestamp() - time.time()
        try:
            async with asyncio.timeout(max(expires_in, 0)):
                while True:
                    batch = await next_batch(self.summaries)
                    if batch:
                        await self.forward_latest(batch)
        except StopAsyncIteration:
            return  # the hub closed (shutting down)
        except TimeoutError:
            # Say so before closing: the ws extension does not reconnect on 4xxx codes, and
            # the last badge would otherwise stay up as if it were live.
            await self.send(text_data=render_to_string(EXPIRED_TEMPLATE))
            await self.close(code=CLOSE_EXPIRED)

    async def forward_latest(self, batch: list[HubMessage]) -> None:
        """The badge after what was queued: only its newest state is worth sending."""
        if any(message.kind == "lost" for message in batch):
            await self.close(code=CLOSE_FEED_LOST)
            return
        if any(message.kind == "resync" for message in batch):
            await self.send_snapshot()  # read after the resync: newer than anything queued
            return
        latest = batch[-1]
        seq = int(latest.data.get("last_seq") or 0)
        if seq < self.shown_seq:
            return
        self.shown_seq = seq
        await self.send(text_data=str(latest.render(BADGE_KEY, badge_of)))
