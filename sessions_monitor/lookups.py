"""Asking the upstream about sessions and storing what it says: the one place that does.

`ensure_known` serves our stream (a first subscriber of an unknown id) and the watch form;
`store_sessions` stores what the upstream says (a look-up's answer, the relay's discovery).
Each look-up carries our upstream token, so they are limited: ids the upstream does not
know are remembered (MEETINGDASH_LOOKUP_CACHE_SECONDS), concurrent look-ups of one id share
one request, and each credential may cause MEETINGDASH_LOOKUPS_PER_MINUTE upstream requests.
All of them go through one client per process, `shared_client()`, which `serve` hands to
its embedded relay too (an httpx client per request would build a TLS context, megabytes
apiece, every time).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field

from channels.db import database_sync_to_async
from django.conf import settings
from django.core.cache import cache

from sessions_monitor import limits, services
from sessions_monitor.models import MeetingSession
from sessions_monitor.upstream import (
    InvalidSessionId,
    MeetingBuddyClient,
    SessionNotFound,
    UpstreamError,
    UpstreamSession,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class UpstreamTarget:
    """The upstream this process talks to (the real one, or the embedded simulator)."""

    url: str
    token: str = field(default="", repr=False)


_target: UpstreamTarget | None = None


def configure(url: str, token: str) -> None:
    """`serve` / `runrelay`: where this process's upstream is (the simulator's URL when
    it runs embedded)."""
    global _target
    _target = UpstreamTarget(url, token)


def target() -> UpstreamTarget | None:
    if _target is not None:
        return _target
    if settings.MEETINGBUDDY_API_URL:
        return UpstreamTarget(settings.MEETINGBUDDY_API_URL, settings.MEETINGBUDDY_API_TOKEN)
    return None


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MeetingBuddyClient] = (
    weakref.WeakKeyDictionary()
)


def shared_client(loop: asyncio.AbstractEventLoop | None = None) -> MeetingBuddyClient | None:
    """This process's client for its upstream (None: no upstream is configured). One per
    event loop, as pooled connections belong to the loop that opened them: a server runs
    one loop, tests many. `loop`: for an entry point that builds before its loop runs."""
    loop = loop or asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        upstream = target()
        if upstream is None:
            return None
        client = _clients[loop] = MeetingBuddyClient(upstream.url, upstream.token)
    return client


class Outcome(enum.Enum):
    KNOWN = "known"
    UNKNOWN = "unknown"
    UNAVAILABLE = "unavailable"
    THROTTLED = "throttled"


@dataclass(frozen=True, slots=True)
class Lookup:
    outcome: Outcome
    retry_after: int = 0
    message: str = ""


_pending: dict[str, asyncio.Future[Lookup]] = {}


async def ensure_known(session_id: str, *, credential: str) -> Lookup:
    """KNOWN when the session is stored here, or once the upstream confirmed it (what it
    says is then stored); otherwise why it is not known."""
    if await MeetingSession.objects.filter(pk=session_id).aexists():
        return Lookup(Outcome.KNOWN)
    return await lookup_session(session_id, credential=credential)


def store_sessions(sessions: Iterable[UpstreamSession], *, watch: bool = False) -> list[str]:
    """Store what the upstream says about these sessions (their metadata; their status comes
    only from events) and, with `watch`, mark them watched. Returns the ids stored; an id
    the upstream should never have sent is logged and skipped."""
    stored = []
    for session in sessions:
        try:
            services.upsert_session_metadata(
                session.session_id,
                bot_name=session.bot_name,
                meeting_link=session.meeting_link,
                platform=session.platform,
                created_at=session.created_at,
            )
        except InvalidSessionId:
            logger.warning("skipping the malformed upstream session id %r", session.session_id)
            continue
        if watch:
            services.mark_watched(session.session_id, True)
        stored.append(session.session_id)
    return stored


def _unknown_key(session_id: str) -> str:
    return f"lookup:unknown:{session_id}"


async def lookup_session(session_id: str, *, credential: str) -> Lookup:
    """KNOWN once the upstream confirmed the session (its metadata is then stored here).

    Concurrent callers for one id share one look-up, registered before anything awaits, so
    fifty first subscribers cost one upstream request and one count against the limit. A
    caller whose shared look-up was refused for the *initiator's* rate limit tries again
    under its own.
    """
    joined = _pending.get(session_id)
    if joined is not None:
        result = await asyncio.shield(joined)
        if result.outcome is not Outcome.THROTTLED:
            return result
    pending = _pending.get(session_id)
    if pending is None:
        pending = _pending[session_id] = asyncio.ensure_future(_lookup(session_id, credential))
        pending.add_done_callback(lambda done: _forget(session_id, done))
    return await asyncio.shield(pending)


def _forget(session_id: str, done: asyncio.Future[Lookup]) -> None:
    if _pending.get(session_id) is done:
        del _pending[session_id]


async def _lookup(session_id: str, credential: str) -> Lookup:
    if await _known_unknown(session_id):
        return Lookup(Outcome.UNKNOWN)
    verdict = await limits.ahit(
        "lookup", credential, limit=int(settings.MEETINGDASH_LOOKUPS_PER_MINUTE), window=60
    )
    if not verdict.allowed:
        return Lookup(Outcome.THROTTLED, retry_after=verdict.retry_after)
    return await _ask_upstream(session_id)


async def _ask_upstream(session_id: str) -> Lookup:
    client = shared_client()
    if client is None:
        return Lookup(Outcome.UNAVAILABLE, message="no upstream is configured")
    try:
        upstream = await client.get_session(session_id)
    except SessionNotFound:
        return await _remember_unknown(session_id)
    except UpstreamError as exc:
        if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (401, 403, 429):
            return await _remember_unknown(session_id)
        logger.warning("lookup: cannot ask the upstream about %s: %s", session_id, exc)
        return Lookup(Outcome.UNAVAILABLE, message=exc.message)
    if session_id not in await database_sync_to_async(store_sessions)([upstream]):
        return Lookup(Outcome.UNAVAILABLE, message="the upstream answered about another id")
    return Lookup(Outcome.KNOWN)


async def _known_unknown(session_id: str) -> bool:
    try:
        return bool(await cache.aget(_unknown_key(session_id)))
    except Exception as exc:  # the cache is an optimisation; ask the upstream instead
        logger.warning("lookup cache unavailable: %s", type(exc).__name__)
        return False


async def _remember_unknown(session_id: str) -> Lookup:
    try:
        await cache.aset(
            _unknown_key(session_id), True, timeout=int(settings.MEETINGDASH_LOOKUP_CACHE_SECONDS)
        )
    except Exception as exc:
        logger.warning("lookup cache unavailable: %s", type(exc).__name__)
    return Lookup(Outcome.UNKNOWN)
