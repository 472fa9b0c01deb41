"""Limits on what one client can cost: rate limits and concurrent-connection slots.

Rate limits (failed logins, upstream look-ups) are fixed-window counters in Django's cache:
per process with the default local-memory cache, shared by every process through Redis in
scaled mode (settings.CACHES). Slots (concurrent streams and sockets per credential) need an
atomic "count and take one", which the cache API cannot do: a sorted set in Redis (member =
connection, score = expiry) in scaled mode, a dict here otherwise. Holders refresh their slot
on every access check, so a process that dies frees its slots within SLOT_TTL_SECONDS.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Any, Protocol

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache

from sessions_monitor.redis_client import retry_policy

logger = logging.getLogger(__name__)

SLOT_TTL_SECONDS = 60.0
_warned_at: dict[str, float] = {}


def _warn_rarely(what: str, exc: BaseException) -> None:
    """One warning per kind of failure every 30 s: a Redis outage is one event, not one
    log line per open connection per interval."""
    now = time.monotonic()
    if now - _warned_at.get(what, -1e9) >= 30:
        _warned_at[what] = now
        logger.warning("%s (%s); not limiting meanwhile", what, type(exc).__name__)


# --- rate limits -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    retry_after: int = 0


def _window_key(scope: str, key: str, window: int, now: float) -> tuple[str, int]:
    start = int(now // window) * window
    return f"limit:{scope}:{key}:{start}", int(start + window - now) + 1


def _count(cache_key: str, timeout: int) -> int:
    cache.add(cache_key, 0, timeout=timeout)
    try:
        return int(cache.incr(cache_key))
    except ValueError:  # expired between add and incr
        cache.set(cache_key, 1, timeout=timeout)
        return 1


def hit(scope: str, key: str, *, limit: int, window: int, now: float | None = None) -> Verdict:
    """Count one try; not allowed once `limit` tries fell in the current window. A cache
    that cannot answer (Redis down) allows: limits must not take the dashboard down."""
    cache_key, retry_after = _window_key(scope, key, window, time.time() if now is None else now)
    try:
        count = _count(cache_key, window + 1)
    except Exception as exc:
        _warn_rarely("rate limit store unavailable", exc)
        return Verdict(True)
    return Verdict(count <= limit, 0 if count <= limit else retry_after)


async def ahit(scope: str, key: str, *, limit: int, window: int) -> Verdict:
    return await sync_to_async(hit)(scope, key, limit=limit, window=window)


# --- failed logins ---------------------------------------------------------------------------


def _login_keys(username: str, address: str) -> list[tuple[str, int]]:
    return [
        (f"login-failures:user:{username.strip().lower()[:150]}", _per_username()),
        (f"login-failures:ip:{address}", _per_ip()),
    ]


def _per_username() -> int:
    return int(settings.MEETINGDASH_LOGIN_FAILURES_PER_USERNAME)


def _per_ip() -> int:
    return int(settings.MEETINGDASH_LOGIN_FAILURES_PER_IP)


def login_locked(username: str, address: str) -> bool:
    """True while the username or the address has used up its failed tries."""
    try:
        counts = [(cache.get(key) or 0, limit) for key, limit in _login_keys(username, address)]
    except Exception as exc:
        logger.warning("login throttle store unavailable (%s)", type(exc).__name__)
        return False
    return any(limit and count >= limit for count, limit in counts)


def login_failed(username: str, address: str) -> None:
    """Count a failure; the count lives MEETINGDASH_LOGIN_LOCKOUT_SECONDS from the first."""
    timeout = int(settings.MEETINGDASH_LOGIN_LOCKOUT_SECONDS)
    try:
        for key, _limit in _login_keys(username, address):
            _count(key, timeout)
    except Exception as exc:
        logger.warning("login throttle store unavailable (%s)", type(exc).__name__)


def login_succeeded(username: str) -> None:
    """A right password clears the username's count (not the address's)."""
    try:
        cache.delete(_login_keys(username, "")[0][0])
    except Exception as exc:
        logger.warning("login throttle store unavailable (%s)", type(exc).__name__)


# --- concurrent slots ------------------------------------------------------------------------


class Slots(Protocol):
    async def acquire(self, key: str, holder: str, limit: int) -> bool: ...

    async def refresh(self, key: str, holder: str) -> None: ...

    async def release(self, key: str, holder: str) -> None: ...


class LocalSlots:
    """One process's slots (embedded mode)."""

    def __init__(self) -> None:
        self._held: dict[str, dict[str, float]] = {}

    async def acquire(self, key: str, holder: str, limit: int) -> bool:
        now = time.monotonic()
        held = self._held.setdefault(key, {})
        if holder not in held and len(held) >= limit:
            # Sweep only at the limit: a sweep per acquire made N widgets cost O(N²).
            for expired in [h for h, until in held.items() if until <= now]:
                del held[expired]
            if len(held) >= limit:
                return False
        held[holder] = now + SLOT_TTL_SECONDS
        return True

    async def refresh(self, key: str, holder: str) -> None:
        held = self._held.get(key)
        if held is not None and holder in held:
            held[holder] = time.monotonic() + SLOT_TTL_SECONDS

    async def release(self, key: str, holder: str) -> None:
        held = self._held.get(key)
        if held is not None:
            held.pop(holder, None)
            if not held:
                del self._held[key]


ACQUIRE_SCRIPT = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
if redis.call('zscore', KEYS[1], ARGV[3]) == false and
   redis.call('zcard', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('zadd', KEYS[1], ARGV[2], ARGV[3])
redis.call('pexpire', KEYS[1], ARGV[5])
return 1
"""


class RedisSlots:
    """Every process's slots in one Redis (scaled mode)."""

    def __init__(self, url: str, prefix: str) -> None:
        import redis.asyncio as redis  # optional: installed with the [redis] extra

        self._redis = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, **retry_policy()
        )
        self.prefix = prefix

    def _key(self, key: str) -> str:
        return f"{self.prefix}:slots:{key}"

    async def acquire(self, key: str, holder: str, limit: int) -> bool:
        now = time.time()
        ttl_ms = int(SLOT_TTL_SECONDS * 1000)
        result = await self._redis.eval(
            ACQUIRE_SCRIPT, 1, self._key(key), now, now + SLOT_TTL_SECONDS, holder, limit, ttl_ms
        )
        return bool(result)

    async def refresh(self, key: str, holder: str) -> None:
        await self._redis.zadd(self._key(key), {holder: time.time() + SLOT_TTL_SECONDS}, xx=True)

    async def release(self, key: str, holder: str) -> None:
        await self._redis.zrem(self._key(key), holder)


_slots: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Slots] = weakref.WeakKeyDictionary()


def get_slots() -> Slots:
    """The slots of this process (of the running loop): Redis when REDIS_URL is set."""
    loop = asyncio.get_running_loop()
    slots = _slots.get(loop)
    if slots is None:
        if settings.REDIS_URL:
            layers: Any = settings.CHANNEL_LAYERS
            prefix = str(layers["default"].get("CONFIG", {}).get("prefix", "meetingdash"))
            slots = RedisSlots(settings.REDIS_URL, prefix)
        else:
            slots = LocalSlots()
        _slots[loop] = slots
    return slots


class Occupancy:
    """The slots one connection holds (`async with`), all or none."""

    def __init__(self, wanted: list[tuple[str, int]]) -> None:
        self.wanted = [(key, limit) for key, limit in wanted if limit > 0]
        self.holder = uuid.uuid4().hex
        self.held: list[str] = []

    async def acquire(self) -> bool:
        """False when one of the limits is reached. A store that cannot answer (Redis
        down) lets the connection in: a limit must never take the dashboard down with it."""
        slots = get_slots()
        for key, limit in self.wanted:
            try:
                acquired = await slots.acquire(key, self.holder, limit)
            except Exception as exc:
                _warn_rarely("slot store unavailable", exc)
                continue
            if not acquired:
                await self.release()
                return False
            self.held.append(key)
        return True

    async def refresh(self) -> None:
        slots = get_slots()
        for key in self.held:
            try:
                await slots.refresh(key, self.holder)
            except Exception as exc:
                _warn_rarely("cannot refresh connection slots", exc)

    async def release(self) -> None:
        slots = get_slots()
        held, self.held = self.held, []
        for key in held:
            try:
                await slots.release(key, self.holder)
            except Exception as exc:  # it expires on its own
                _warn_rarely("cannot release connection slots", exc)
