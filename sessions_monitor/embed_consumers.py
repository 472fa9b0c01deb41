"""The widget's live channel: one badge per message, from the per-process hub.

The token is checked before the handshake is accepted (refused = HTTP 403 to the browser),
and the socket closes itself when the token expires. Each `sessions.summary` of the session
is rendered to badge HTML once per process (`HubMessage.render`), so a thousand widgets on
the same session cost one render, not a thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.template.loader import render_to_string

from sessions_monitor import embed, selectors
from sessions_monitor.embed_views import render_badge
from sessions_monitor.hub import HubMessage, Subscription, get_hub

logger = logging.getLogger(__name__)

BADGE_KEY = "embed-badge"
EXPIRED_TEMPLATE = "sessions_monitor/embed.html#expired"
# Close code for an expired token: the ws extension does not reconnect on 4xxx codes.
CLOSE_EXPIRED = 4001


def badge_of(message: HubMessage) -> str:
    return render_badge(message.data, message.data.get("session_id") or message.session_id or "")


class EmbedBadgeConsumer(AsyncWebsocketConsumer):
    session_id: str
    grant: embed.EmbedGrant
    subscription: Subscription | None = None
    pump: asyncio.Task[None] | None = None
    # The newest state shown: summaries queued while the snapshot was read may be older.
    shown_seq = 0

    async def connect(self) -> None:
        self.session_id = self.scope["url_route"]["kwargs"]["session_id"]
        query = parse_qs(self.scope.get("query_string", b"").decode("latin-1"))
        try:
            self.grant = embed.grant_for(query.get("token", [""])[0], self.session_id)
        except embed.InvalidEmbedToken:
            await self.close()
            return
        # Subscribe before reading the snapshot: whatever changes after the read arrives.
        self.subscription = await get_hub().subscribe(None)
        await self.accept()
        await self.send_snapshot()
        self.pump = asyncio.create_task(self.forward(), name=f"embed:{self.session_id}")

    async def disconnect(self, code: int) -> None:
        if self.pump is not None:
            self.pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.pump
        if self.subscription is not None:
            self.subscription.close()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Read-only: anything the browser sends is ignored."""

    async def send_snapshot(self) -> None:
        snapshot = await database_sync_to_async(selectors.session_snapshot)(self.session_id)
        self.shown_seq = int((snapshot or {}).get("last_seq") or 0)
        await self.send(text_data=render_badge(snapshot, self.session_id))

    async def forward(self) -> None:
        assert self.subscription is not None
        expires_in = self.grant.expires_at.timestamp() - time.time()
        try:
            async with asyncio.timeout(max(expires_in, 0)):
                async for message in self.subscription:
                    await self.forward_one(message)
        except TimeoutError:
            # Say so before closing: the ws extension does not reconnect on 4xxx codes, and
            # the last badge would otherwise stay up as if it were live.
            await self.send(text_data=render_to_string(EXPIRED_TEMPLATE))
            await self.close(code=CLOSE_EXPIRED)

    async def forward_one(self, message: HubMessage) -> None:
        if message.kind == "resync":
            await self.send_snapshot()
        elif message.kind == "summary" and message.session_id == self.session_id:
            seq = int(message.data.get("last_seq") or 0)
            if seq < self.shown_seq:
                return
            self.shown_seq = seq
            await self.send(text_data=str(message.render(BADGE_KEY, badge_of)))
