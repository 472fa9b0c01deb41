"""The pages' live channel: thin WebSocket consumers attached to the per-process hub.

Protocol (htmx 2 + ws extension on the page, see the page templates):

- Only logged-in, active users. Anyone else, a malformed session id, or a user over
  MEETINGDASH_MAX_PAGES_PER_USER open pages is accepted and closed at once with a 4xxx code
  (4403, 4400, 4429), which tells the page why (a refused handshake reads as a network
  error, and the page would retry for ever). Access is checked again every
  `access.check_interval()`: logging out, a password change or deactivation closes the
  socket (4403) within one keepalive interval.
- The consumer subscribes to the hub BEFORE it reads any history, then accepts.
- On every (re)connect the page sends a hello from a `ws-send` form triggered by
  `htmx:wsOpen`: the detail page `{"after": <last seq it holds>}`, the list page its
  `page` and its list params (`filter`, `q`, `status`, `platform`, … `sort`: see
  `list_filters`; again after the filter bar swapped the list). Nothing is sent before it.
- Detail: the answer to a hello is exactly the stored events after `after` (or, past
  REPLAY_LIMIT, the regions re-rendered from history with a note), then live events with
  seq > the last one sent. Events at or below it are dropped, a hole is filled from
  history: no row twice, none skipped. A `resync` from the hub re-renders the regions.
- List: the answer to a hello is the list re-rendered for the page's parameters, then row
  moves/updates/removals per summary, decided by `ListFilters.matches` (the same rules as
  the first render's query). Under a sort other than newest started first, a session that
  newly matches (or, sorted by status, any matching update) re-renders the list instead.
- Both pages also get toasts: every alert (`session.alert`, from the hub's alerts feed) about a
  session or bot name the page's user follows, at any time, as a fragment prepended to
  `#toasts`. Who follows it is read once per process per alert and the toast rendered once
  per process per alert (`follows`); a follow made a moment ago counts from the next alert.
- Each frame is a set of out-of-band fragments. Everything queued is drained into ONE frame
  (coalescing), and every fragment that depends only on the event is rendered once per
  process per message via `HubMessage.render` and shared by every viewer.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.template.loader import render_to_string
from django.utils.html import escape, format_html

from sessions_monitor import access, follows, limits, presentation, selectors, transcripts
from sessions_monitor.hub import HubUnavailable, Subscription, get_hub
from sessions_monitor.list_filters import HELLO_PARAMS, ListFilters
from sessions_monitor.messages import HubMessage
from sessions_monitor.models import EventKind
from sessions_monitor.upstream import is_valid_session_id

logger = logging.getLogger(__name__)

# The scope key of the server's own `send`, which asgi.py puts beneath the session and auth
# middleware of dashboard sockets: their frames need nothing from them (_LiveConsumer.send).
RAW_SEND = "meetingdash.raw_send"
T = TypeVar("T")

DETAIL = "sessions_monitor/session_detail.html"
LIST = "sessions_monitor/session_list.html"
KEEPALIVE_SECONDS = 10.0
KEEPALIVE = "<!-- keepalive -->"
CLOSE_BAD_REQUEST = 4400
CLOSE_FORBIDDEN = 4403
CLOSE_TOO_MANY = 4429
# This server's live feed is gone (1012 "service restart") or cannot be joined now (1013
# "try again later"): the ws extension reconnects after both, and the page resumes by seq.
CLOSE_FEED_LOST = 1012
CLOSE_TRY_AGAIN = 1013
REPLAY_LIMIT = 1000
TIMELINE_TICK_SECONDS = 30.0
MAX_BATCH = 2000
PER_PAGE = 25


async def render_once_async(
    message: HubMessage, key: str, factory: Callable[[], Awaitable[str]]
) -> str:
    """Like `HubMessage.render`, for renderings that need a read first.

    The first caller starts one task and caches it on the message; concurrent and later
    callers await that same task, so the read and the render happen once per process.
    """
    cached = message.render(key, lambda _message: cast(str, asyncio.ensure_future(factory())))
    return await await_shared(cast("asyncio.Future[str]", cached))


_waiting: dict[asyncio.Future[Any], list[asyncio.Future[None]]] = {}


async def await_shared(shared: asyncio.Future[T]) -> T:
    """The result of a future that many viewers wait on, at one plain future per waiter:
    a viewer that disconnects mid-wait cancels only its own wait, never everyone's read
    or render. (What `asyncio.shield` does, without its two futures and two callbacks per
    waiter: with 1,000 viewers of one session that was a tenth of a delivery's cost.)"""
    if shared.done():
        return shared.result()
    waiters = _waiting.get(shared)
    if waiters is None:
        waiters = _waiting[shared] = []
        shared.add_done_callback(_wake_waiters)
    waiter: asyncio.Future[None] = shared.get_loop().create_future()
    waiters.append(waiter)
    await waiter
    return shared.result()


def _wake_waiters(shared: asyncio.Future[Any]) -> None:
    for waiter in _waiting.pop(shared, ()):
        if not waiter.done():
            waiter.set_result(None)


_in_flight: dict[tuple[Any, ...], tuple[float, asyncio.Future[Any]]] = {}


async def single_flight(
    key: tuple[Any, ...], factory: Callable[[], Awaitable[T]], *, not_before: float
) -> T:
    """Concurrent callers with an equal key share one call and its result.

    When 1,000 pages (re)connect at once they send the same hello; without this, 1,000
    identical reads would queue in the thread pool ahead of the relay's writes. A caller
    only joins a call that started at or after `not_before` (its hub subscription): a read
    begun earlier could miss an event this caller's subscription did not see either.
    """
    loop = asyncio.get_running_loop()
    key = (id(loop), *key)
    started, future = _in_flight.get(key, (0.0, None))
    if future is None or started < not_before:
        started, future = loop.time(), asyncio.ensure_future(factory())
        _in_flight[key] = (started, future)

        def forget(_done: asyncio.Future[Any], key: tuple[Any, ...] = key) -> None:
            if _in_flight.get(key, (0.0, None))[1] is _done:
                del _in_flight[key]

        future.add_done_callback(forget)
    return cast(T, await await_shared(future))


async def next_batch(
    subscription: Subscription, quiet_seconds: float | None = None
) -> list[HubMessage] | None:
    """Wait for one message, then drain what else is queued (coalescing).

    None after `quiet_seconds` of quiet; without it, no timer at all (the live pumps: a
    delivery to 1,000 viewers should not cost 1,000 timers).
    """
    first = subscription.get_nowait()
    if first is None:
        if quiet_seconds is None:
            first = await subscription.get()
        else:
            try:
                async with asyncio.timeout(quiet_seconds):
                    first = await subscription.get()
            except TimeoutError:
                return None
    batch = [first]
    while len(batch) < MAX_BATCH:
        message = subscription.get_nowait()
        if message is None:
            break
        batch.append(message)
    return batch


def parse_after(text: str | None) -> int | None:
    """The `after` of a detail hello; None when it is missing or not a non-negative int."""
    try:
        value = json.loads(text or "").get("after")
        after = int(value)
    except (ValueError, TypeError, AttributeError):
        return None
    return after if after >= 0 else None


# No channel-layer channel per browser: everything live comes from the hub. (An alias
# that is not configured makes Channels skip `new_channel()` and its receive loop, whose
# channels-redis BZPOPMIN does not always end when the socket is cancelled.)
HUB_ONLY = "meetingdash-live-sockets-use-the-hub"


class _LiveConsumer(AsyncWebsocketConsumer):
    """Shared plumbing: auth, subscriptions, one pump task, keepalives."""

    channel_layer_alias = HUB_ONLY

    subscriptions: list[Subscription]
    pump: asyncio.Task[None] | None

    async def connect(self) -> None:
        self.subscriptions = []
        self.pump = None
        self.keepalive: asyncio.Task[None] | None = None
        self.toasts: asyncio.Task[None] | None = None
        self.occupancy: limits.Occupancy | None = None
        credential = access.credential_for_user(self.scope)
        refusal = self.refusal(credential)
        if refusal is None and credential is not None:
            self.credential = credential
            self.occupancy = limits.Occupancy(
                [(f"pages:user:{credential.user_id}", settings.MEETINGDASH_MAX_PAGES_PER_USER)]
            )
            if not await self.occupancy.acquire():
                refusal = CLOSE_TOO_MANY
        if refusal is None:
            try:
                await self.subscribe()
                self.alerts = await get_hub().subscribe_alerts(kind="page-alerts")
                self.subscriptions.append(self.alerts)
            except HubUnavailable:
                refusal = CLOSE_TRY_AGAIN
        if refusal is not None:
            await self.accept()
            await self.close(code=refusal)
            return
        self.subscribed_at = asyncio.get_running_loop().time()
        await self.accept()
        self.last_send = asyncio.get_running_loop().time()
        self.keepalive = asyncio.ensure_future(self._guard(self._keepalives()))
        self.toasts = asyncio.ensure_future(self._guard(self._toasts()))
        self.accepted()

    def refusal(self, credential: access.Credential | None) -> int | None:
        """The close code to refuse this connection with, or None to let it in."""
        return CLOSE_FORBIDDEN if credential is None else None

    async def send(
        self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False
    ) -> None:
        self.last_send = asyncio.get_running_loop().time()
        raw_send = self.scope.get(RAW_SEND)
        if raw_send is not None and text_data is not None and not close:
            # Past the session middleware, whose wrapper looks at the session on every frame
            # (a sixth of a delivery to 1,000 pages) to save it on an HTTP response only.
            await raw_send({"type": "websocket.send", "text": text_data})
            return
        await super().send(text_data=text_data, bytes_data=bytes_data, close=close)

    async def _keepalives(self) -> None:
        """A keepalive after KEEPALIVE_SECONDS without any frame (one timer per connection,
        not one per delivery; the page's watchdog reconnects when even these stop), and
        the access check every `access.check_interval()`."""
        loop = asyncio.get_running_loop()
        interval = access.check_interval()
        check_at = loop.time() + interval
        while True:
            now = loop.time()
            if now >= check_at:
                if not await access.still_valid(self.credential):
                    logger.info("live page closed: access ended for %s", self.credential.label)
                    await self.close(code=CLOSE_FORBIDDEN)
                    return
                if self.occupancy is not None:
                    await self.occupancy.refresh()
                check_at = loop.time() + interval
                continue
            quiet_for = now - self.last_send
            if quiet_for >= KEEPALIVE_SECONDS:
                await self.send(text_data=KEEPALIVE)
                continue
            await asyncio.sleep(min(KEEPALIVE_SECONDS - quiet_for, check_at - now))

    async def subscribe(self) -> None:
        raise NotImplementedError

    def accepted(self) -> None:
        """Start what may send on its own (after `accept()`)."""

    async def disconnect(self, code: int) -> None:
        for task in (self.pump, self.keepalive, self.toasts):
            if task is not None:
                task.cancel()
        for subscription in self.subscriptions:
            subscription.close()
        if self.occupancy is not None:
            await self.occupancy.release()

    async def _lost(self, batch: list[HubMessage]) -> bool:
        """True (and the socket closed, so the page reconnects) when the feed was lost."""
        if not any(message.kind == "lost" for message in batch):
            return False
        await self.close(code=CLOSE_FEED_LOST)
        return True

    async def _toasts(self) -> None:
        """Toasts of the alerts about what this page's user follows. (A `resync` of the
        alerts feed brings nothing back: a missed toast stays missed, the session's page and
        the outbox's deliveries still say what happened.)"""
        while True:
            batch = await next_batch(self.alerts)
            if not batch:
                continue
            if await self._lost(batch):
                return
            parts: list[str] = []
            for message in batch:
                if message.kind == "alert" and self.credential.user_id in await followers(message):
                    parts.append(str(message.render("dash.toast", follows.render_toast)))
            if parts:
                await self.send(text_data="".join(parts))

    def start(self, coroutine: Awaitable[None]) -> None:
        if self.pump is not None:
            self.pump.cancel()
        self.pump = asyncio.ensure_future(self._guard(coroutine))

    async def _guard(self, coroutine: Awaitable[None]) -> None:
        try:
            await coroutine
        except asyncio.CancelledError:
            raise
        except StopAsyncIteration:
            pass
        except Exception:
            logger.exception("live channel failed; closing so the page reconnects and resumes")
            await self.close(code=1011)


class SessionDetailConsumer(_LiveConsumer):
    def refusal(self, credential: access.Credential | None) -> int | None:
        self.session_id: str = self.scope["url_route"]["kwargs"]["session_id"]
        if not is_valid_session_id(self.session_id):
            return CLOSE_BAD_REQUEST
        return super().refusal(credential)

    async def subscribe(self) -> None:
        hub = get_hub()
        self.events = await hub.subscribe(self.session_id, kind="page")
        self.subscriptions = [self.events]
        self.summaries = await hub.subscribe_summaries(
            self.session_id, kind="page-summaries", changes_of=LINK_BADGE
        )
        self.subscriptions.append(self.summaries)

    def accepted(self) -> None:
        self.last_badge = ""
        self.transcript_after: tuple[float, str] | None = None  # the page's last segment
        self.badges = asyncio.ensure_future(self._guard(self._badges()))
        self.ticks = asyncio.ensure_future(self._guard(self._timeline_ticks()))

    async def disconnect(self, code: int) -> None:
        for task in (getattr(self, "badges", None), getattr(self, "ticks", None)):
            if task is not None:
                task.cancel()
        await super().disconnect(code)

    async def _timeline_ticks(self) -> None:
        """The timeline's right edge is "now": redraw it while the session goes on, so open
        bars grow with the clock between events. One read and render per process per tick,
        shared by every viewer of the session (`single_flight` on the tick's bucket)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TIMELINE_TICK_SECONDS)
            bucket = int(loop.time() // TIMELINE_TICK_SECONDS)
            html = await single_flight(
                ("svg", self.session_id, bucket),
                lambda: render_timeline(self.session_id),
                not_before=bucket * TIMELINE_TICK_SECONDS,
            )
            if html is None:
                return  # ended: its timeline no longer moves
            await self.send(text_data=html)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        after = parse_after(text_data)
        if after is None:
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        self.start(self._events_pump(after))

    async def _events_pump(self, after: int) -> None:
        last = await self._replay(after)
        await self._send_transcript(self.subscribed_at)
        while True:
            batch = await next_batch(self.events)
            if batch is None:
                continue
            if await self._lost(batch):
                return
            if any(message.kind == "resync" for message in batch):
                last = await self._reload()
                await self._send_transcript(asyncio.get_running_loop().time())
                continue
            appended = self._new_segments(batch)
            if appended:
                await self.send(text_data=appended)
            fresh = [m for m in batch if m.kind == "event" and m.seq is not None and m.seq > last]
            if not fresh:
                continue
            seqs = [cast(int, m.seq) for m in fresh]
            if seqs != list(range(last + 1, last + 1 + len(seqs))):
                # Never expected (the hub delivers in order), but a hole is filled from history.
                last = await self._replay(last)
                continue
            parts = [str(message.render("dash.detail.row", row_from_data)) for message in fresh]
            changed = presentation.regions_for(str(m.data.get("kind", "")) for m in fresh)
            parts.append(await self._regions(fresh, changed))
            await self.send(text_data="".join(parts))
            last = seqs[-1]

    async def _replay(self, after: int) -> int:
        """Send exactly the stored events after `after`; return the last seq sent."""
        html, last = await single_flight(
            ("replay", self.session_id, after),
            lambda: replay(self.session_id, after),
            not_before=self.subscribed_at,
        )
        if html:
            await self.send(text_data=html)
        return last

    async def _send_transcript(self, not_before: float) -> None:
        """The whole transcript section, read after `not_before` (the page's render may be
        older than the subscription: what was stored in between is in this read)."""
        html, self.transcript_after = await single_flight(
            ("transcript", self.session_id),
            lambda: render_transcript(self.session_id),
            not_before=not_before,
        )
        if html:
            await self.send(text_data=html)

    def _new_segments(self, batch: list[HubMessage]) -> str:
        """Appends for the segments in `batch` this page does not hold yet: the append of
        a whole message is rendered once per process, shared by every viewer."""
        parts: list[str] = []
        for message in batch:
            segments = message.data.get("segments") if message.kind == "transcript" else None
            if not segments:
                continue
            held = self.transcript_after
            if held is None or transcripts.watermark(segments[0]) > held:
                parts.append(str(message.render("dash.transcript", segments_from_message)))
            else:  # the transcript this page was sent already had some of them
                newer = [s for s in segments if transcripts.watermark(s) > held]
                parts.append(render_segments(newer) if newer else "")
            last = transcripts.watermark(segments[-1])
            self.transcript_after = last if held is None else max(held, last)
        return "".join(parts)

    async def _reload(self) -> int:
        """Re-render every region from stored history, say so, and resume after it.

        Only after a hub `resync` (the queue was dropped just now), so only a read that
        starts now may be shared.
        """
        html, last = await single_flight(
            ("reload", self.session_id),
            lambda: reload(self.session_id),
            not_before=asyncio.get_running_loop().time(),
        )
        if html:
            await self.send(text_data=html)
        return last

    def _regions(self, fresh: list[HubMessage], changed: frozenset[str]) -> Awaitable[str]:
        """The regions `changed` re-rendered, plus the watermark, after the last of `fresh`:
        from a read of only what those regions show (never the event log). Joins and leaves
        re-send only the people they concern when the page's lists can take them."""
        session_id = self.session_id
        message = fresh[-1]
        if not changed:
            return _done(message.render("dash.detail.resume", resume_only))
        joined = {m.seq for m in fresh if m.data.get("kind") == EventKind.JOINED}
        left = {m.seq for m in fresh if m.data.get("kind") == EventKind.LEFT}

        async def read_and_render() -> str:
            detail = await database_sync_to_async(selectors.read_live_regions)(session_id, changed)
            if detail is None:
                return ""
            # `after`: what the rows sent with it end at.
            context = presentation.detail_context(detail, after=message.seq)
            context["regions"] = changed
            context.update(presentation.people_changes(detail, joined, left))
            return render_to_string(f"{DETAIL}#live-regions", context)

        people = ",".join(map(str, sorted(s for s in joined | left if s is not None)))
        key = "dash.detail.regions:" + ",".join(sorted(changed)) + ":" + people
        return render_once_async(message, key, read_and_render)

    async def _badges(self) -> None:
        """The upstream and stuck badges follow the session's summaries (stream state
        changes, the watchdog's stuck flag)."""
        while True:
            batch = await next_batch(self.summaries)
            if not batch:
                continue
            if await self._lost(batch):
                return
            if any(m.kind == "resync" for m in batch):
                session = await database_sync_to_async(selectors.read_session)(self.session_id)
                if session is not None:
                    self.last_badge = render_detail_badges(session)
                    await self.send(text_data=self.last_badge)
                continue
            # Only this session's summaries reach this subscription: the newest one counts.
            badge = str(batch[-1].render(*LINK_BADGE))
            if badge != self.last_badge:  # most summaries leave the link as it was
                self.last_badge = badge
                await self.send(text_data=badge)


class SessionListConsumer(_LiveConsumer):
    async def subscribe(self) -> None:
        self.summaries = await get_hub().subscribe(None, kind="page")
        self.subscriptions = [self.summaries]
        self.filters = ListFilters()
        self.reload = False
        self.filter = "live"
        self.query = ""
        self.page = 1
        self.on_screen: list[str] = []

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            hello = json.loads(text_data or "")
            params = {name: str(hello[name]) for name in HELLO_PARAMS if name in hello}
            self.page = max(1, int(hello.get("page", 1)))
        except (ValueError, TypeError, AttributeError, KeyError):
            await self.close(code=CLOSE_BAD_REQUEST)
            return
        # The page's own params: what its first render parsed, with the same rules.
        self.filters = ListFilters.from_params({"filter": "live", **params})
        self.filter, self.query = self.filters.filter, self.filters.query
        self.start(self._pump())

    async def _pump(self) -> None:
        await self._send_list()
        while True:
            batch = await next_batch(self.summaries)
            if batch is None:
                continue
            if await self._lost(batch):
                return
            if any(message.kind == "resync" for message in batch):
                await self._send_list()
                continue
            received_at = asyncio.get_running_loop().time()
            self.reload = False
            latest: dict[str, HubMessage] = {}
            for message in batch:
                if message.kind == "summary" and message.session_id:
                    latest.pop(message.session_id, None)
                    latest[message.session_id] = message
            parts: list[str] = []
            announcements: list[str] = []
            for message in latest.values():
                parts.extend(self._row_changes(message, announcements))
            if self.reload:
                # A sorted list's new row belongs at its place: the list afresh (chips, strip
                # and badge come with it).
                parts = [await self._list_html(not_before=received_at)]
            elif latest:
                parts.append(await _overall_badge(batch[-1]))
                parts.append(await _filter_chips(batch[-1], self.filter, self.query, self.filters))
            if announcements:
                parts.append(announce(" ".join(announcements)))
            if parts:
                await self.send(text_data="".join(parts))

    async def _send_list(self) -> None:
        """The list for this page's parameters, fresh from the database (after a (re)connect)."""
        await self.send(text_data=await self._list_html(not_before=self.subscribed_at))

    async def _list_html(self, *, not_before: float) -> str:
        filters, page = self.filters, self.page
        html, on_screen = await single_flight(
            ("list", filters.key, page),
            lambda: render_list(filters.filter, filters.query, page, filters),
            not_before=not_before,
        )
        self.on_screen = list(on_screen)
        return html

    def _row_changes(self, message: HubMessage, announcements: list[str]) -> list[str]:
        """The fragments one summary changes on this page. Rows keep their place (newest
        started first): an update replaces a row in place, a new session arrives at the
        top of page 1, and a session that leaves the view says where it went."""
        session_id = cast(str, message.session_id)
        data = message.data
        status, stream_state = str(data.get("status") or ""), str(data.get("stream_state") or "")
        shown = session_id in self.on_screen
        haystack = " ".join(str(data.get(name) or "") for name in SEARCHED).lower()
        wanted = self.filters.matches(data) and (
            shown or not self.query or self.query.lower() in haystack
        )
        parts: list[str] = []
        if wanted and not self.filters.is_default_sort and (not shown or self.sorts_by_status):
            self.reload = True  # its place depends on the sort: `_pump` re-renders the list
        elif wanted and shown:
            parts.append(str(message.render("dash.row.replace", row_in_place)))
        elif wanted and self.page == 1:
            parts.append(str(message.render("dash.row.top", row_at_top)))
            self.on_screen.insert(0, session_id)
            while len(self.on_screen) > PER_PAGE:
                parts.append(delete_row(self.on_screen.pop()))
        elif shown:
            self.on_screen.remove(session_id)
            parts.append(delete_row(session_id))
            where = moved_to(self.filter, status, stream_state)
            if where:
                announcements.append(str(message.render(f"dash.moved:{where}", announcement_of)))
        if (
            self.filter in RECENT_ON
            and self.filters.beside_tab.matches(data)
            and message.render("dash.recent?", recently_ended_now)
        ):
            # (rendered "1" or "" once per process per message, like every fragment)
            parts.append(str(message.render("dash.recent.row", recent_row_at_top)))
        return parts

    @property
    def sorts_by_status(self) -> bool:
        return self.filters.sort.lstrip("-") == "status"


SEARCHED = ("session_id", "bot_name", "meeting_link", "error_code", "error_message")
RECENT_ON = ("live", "attention")


def moved_to(filter_name: str, status: str, stream_state: str) -> str:
    """Where a session that left the Live (or Needs attention) view went, '' otherwise."""
    if filter_name not in RECENT_ON:
        return ""
    category = presentation.status_category(status, stream_state)
    if category in ("ended", "failed"):
        return "recent"
    if category == "attention" and filter_name == "live":
        return "attention"
    return ""


# --- (re)connect answers: same hello, same bytes ---------------------------------------------


async def replay(session_id: str, after: int) -> tuple[str, int]:
    """The frame that brings a page holding events up to `after` up to date, and its last seq.

    '' when nothing was missed (the usual case for a page just rendered); the full reload
    past REPLAY_LIMIT or when the page claims more than we hold.
    """
    history = await database_sync_to_async(selectors.read_events)(
        session_id, after, REPLAY_LIMIT + 1
    )
    if len(history) > REPLAY_LIMIT:
        return await reload(session_id)
    if not history:
        stored = await database_sync_to_async(selectors.last_stored_seq)(session_id)
        return await reload(session_id) if after > stored else ("", after)
    # The rows come from `history`: the regions need no second read of the log.
    detail = await database_sync_to_async(selectors.read_live_regions)(
        session_id, presentation.REGIONS
    )
    if detail is None:
        return "", after
    last = history[-1].seq
    context = presentation.detail_context(detail, after=last)
    rows = render_to_string(f"{DETAIL}#live-rows", {"events": history})
    return rows + render_to_string(f"{DETAIL}#live-regions", context), last


async def render_timeline(session_id: str) -> str | None:
    """The SVG timeline region as of now (None once the session has ended)."""
    detail = await database_sync_to_async(selectors.read_live_regions)(session_id, {"svg"})
    if detail is None or detail.session.is_terminal or detail.session.lost_contact:
        return None
    context = {**presentation.detail_context(detail), "oob": True}
    return str(render_to_string(f"{DETAIL}#svg-timeline", context))


async def render_transcript(session_id: str) -> tuple[str, tuple[float, str] | None]:
    """The transcript section (out of band) and where it ends; nothing while it is empty
    (the page's own render is then as good, and appends replace its "No transcript yet")."""
    context = {**await transcripts.adetail_context(session_id), "oob": True}
    segments = context["transcript"]
    if not segments:
        return "", None
    html = render_to_string("sessions_monitor/transcript.html#transcript", context)
    return html, transcripts.watermark(segments[-1])


def render_segments(segments: list[dict[str, Any]]) -> str:
    return render_to_string("sessions_monitor/transcript.html#new-segments", {"segments": segments})


def segments_from_message(message: HubMessage) -> str:
    return render_segments(message.data["segments"])


async def reload(session_id: str) -> tuple[str, int]:
    detail = await database_sync_to_async(selectors.read_detail)(session_id)
    if detail is None:
        return "", 0
    context = presentation.detail_context(detail)
    return render_to_string(f"{DETAIL}#live-reload", context), detail.last_seq


async def render_list(
    filter_name: str, query: str, page_number: int, filters: ListFilters | None = None
) -> tuple[str, list[str]]:
    """The list region, the recently ended strip, the chips and the overall badge for these
    parameters (`filters`, when given, holds them all), and the session ids on the page."""

    def read() -> dict[str, Any]:
        context = selectors.list_page(
            filter_name=filter_name,
            query=query,
            page_number=page_number,
            per_page=PER_PAGE,
            filters=filters,
        )
        context["page_obj"].paginator.num_pages  # noqa: B018 (count now, not while rendering)
        return context

    context = {**await database_sync_to_async(read)(), "oob": True}
    html = str(render_to_string(f"{LIST}#list-region", context)) + str(
        render_to_string(f"{LIST}#filter-chips", context)
    )
    if filter_name in RECENT_ON:
        html += render_to_string(f"{LIST}#recent-ended", context)
    html += render_link_badge(context["overall"])
    return html, [row.session_id for row in context["page_obj"].object_list]


# --- renderings shared by every viewer ----------------------------------------------------


async def _done(value: Any) -> str:
    return str(value)


def render_row(event: presentation.TimelineEvent) -> str:
    announce = event.summary if event.kind in ("status", "joined", "left") else ""
    return render_to_string(f"{DETAIL}#live-rows", {"events": [event], "announce": announce})


def row_from_data(message: HubMessage) -> str:
    if "raw" not in message.data:
        # Every producer sends the whole stored event (`selectors.plain_event`).
        logger.error("event %s of %s came without its payload", message.seq, message.session_id)
    return render_row(presentation.timeline_event(message.data))


def resume_only(message: HubMessage) -> str:
    return render_to_string(f"{DETAIL}#resume", {"after": message.seq, "oob": True})


def render_link_badge(freshness: presentation.Freshness) -> str:
    """The badge of the upstream link's freshness (of one session, or overall)."""
    return render_to_string(
        "sessions_monitor/components.html#upstream-badge", {"freshness": freshness, "oob": True}
    )


def followers(message: HubMessage) -> Awaitable[frozenset[int]]:
    """Who follows an alert's session or bot name: one read per process per alert."""
    data = message.data

    def read() -> frozenset[int]:
        return follows.followers_of(str(data["session_id"]), str(data.get("bot_name") or ""))

    shared = message.render(
        "dash.alert.followers",
        lambda _message: cast(str, asyncio.ensure_future(database_sync_to_async(read)())),
    )
    return await_shared(cast("asyncio.Future[frozenset[int]]", shared))


def render_detail_badges(session: presentation.SessionView) -> str:
    """What the detail page shows from summaries alone: the upstream badge, and the stuck
    badge (the watchdog flags a stuck session with a summary, not an event)."""
    stuck = render_to_string(
        "sessions_monitor/components.html#stuck-badge",
        {"session": session, "slot": True, "oob": True},
    )
    return render_link_badge(session.upstream) + stuck


def summary_link_badge(message: HubMessage) -> str:
    return render_detail_badges(presentation.session_view(message.data))


# The detail page's upstream and stuck badges: most summaries leave them as they were, and
# the hub drops those before they wake the page.
LINK_BADGE = ("dash.badge", summary_link_badge)


def _row_html(message: HubMessage, oob: bool) -> str:
    row = presentation.session_view(message.data)
    return render_to_string(f"{LIST}#session-row", {"row": row, "oob": oob})


def row_in_place(message: HubMessage) -> str:
    return _row_html(message, oob=True)


def row_at_top(message: HubMessage) -> str:
    return f'<div hx-swap-oob="afterbegin:#session-rows">{_row_html(message, oob=False)}</div>'


def recently_ended_now(message: HubMessage) -> str:
    view = presentation.session_view(message.data)
    return "1" if presentation.is_recently_ended(view, presentation.recent_minutes()) else ""


def recent_row_at_top(message: HubMessage) -> str:
    """The session's row at the top of the strip (replacing its earlier one, if any)."""
    row = presentation.session_view(message.data)
    html = render_to_string(f"{LIST}#recent-row", {"row": row})
    old = f'<li id="recent-{escape(row.session_id)}" hx-swap-oob="delete"></li>'
    return f'{old}<ol hx-swap-oob="afterbegin:#recent-rows">{html}</ol>'


def announcement_of(message: HubMessage) -> str:
    view = presentation.session_view(message.data)
    name = view.bot_name or view.session_id
    if view.is_failed:
        code = f" ({view.error_code})" if view.error_code else ""
        return f"{name} failed{code}: moved to Recently ended."
    if view.is_terminal:
        return f"{name} ended: moved to Recently ended."
    return f"{name} lost contact with Meeting Buddy: moved to Needs attention."


def announce(text: str) -> str:
    return format_html('<div hx-swap-oob="innerHTML:#live-announcer"><p>{}</p></div>', text)


def _filter_chips(
    message: HubMessage, filter_name: str, query: str, tools: ListFilters | None = None
) -> Awaitable[str]:
    """The chips with fresh counts: one count query and render per process per message."""
    tools = tools or ListFilters(filter=filter_name, query=query)

    async def read_and_render() -> str:
        counts = await database_sync_to_async(selectors.filter_counts)()
        filters = [(key, label, counts[key]) for key, label in presentation.FILTERS.items()]
        context = {
            "filters": filters,
            "filter": filter_name,
            "query": query,
            "tools": tools,
            "oob": True,
        }
        return render_to_string(f"{LIST}#filter-chips", context)

    key = f"dash.chips:{filter_name}:{tools.query_string}"
    return render_once_async(message, key, read_and_render)


def delete_row(session_id: str) -> str:
    return f'<article id="session-{escape(session_id)}" hx-swap-oob="delete"></article>'


def _overall_badge(message: HubMessage) -> Awaitable[str]:
    async def read_and_render() -> str:
        overall = await database_sync_to_async(selectors.read_overall_upstream)()
        return render_link_badge(overall)

    return render_once_async(message, "dash.overall", read_and_render)
