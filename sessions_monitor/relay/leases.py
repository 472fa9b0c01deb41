"""Who streams which session. Embedded mode: this process, always. Scaled mode: a Redis
lease per session (`SET NX PX` + owner-checked renew/release), so with several `runrelay`
processes each session has exactly one upstream connection, and a dead process's sessions
are taken over once its leases expire.

Why Redis leases and not PostgreSQL advisory locks: scaled mode needs Redis anyway (the
channel layer), it works the same on SQLite, and a lease survives a DB connection recycle
(a session-level advisory lock dies with its connection, which Django closes freely).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Protocol

from sessions_monitor.redis_client import retry_policy

# 1 = renewed, 2 = the key was gone (a Redis restart drops every lease) and is ours again,
# 0 = another relay holds it: hand over.
RENEW_SCRIPT = """
local holder = redis.call('get', KEYS[1])
if holder == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  return 1
end
if holder == false then
  redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""
RELEASE_SCRIPT = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"""


class Leases(Protocol):
    owner: str
    ttl_seconds: float
    reacquired: int

    async def acquire(self, session_id: str) -> bool: ...

    async def renew(self, session_id: str) -> bool: ...

    async def release(self, session_id: str) -> None: ...

    async def lead(self, role: str) -> bool:
        """Hold (take or keep) the one leadership of `role` among the relays: True while this
        relay is the one. Renewed by calling again within the lease's TTL."""
        ...

    async def resign(self, role: str) -> None: ...

    async def heartbeat(self, info: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


class LocalLeases:
    """One relay in this process streams everything (embedded mode)."""

    ttl_seconds = 30.0
    reacquired = 0

    def __init__(self) -> None:
        self.owner = f"local-{uuid.uuid4().hex[:8]}"

    async def acquire(self, session_id: str) -> bool:
        return True

    async def renew(self, session_id: str) -> bool:
        return True

    async def release(self, session_id: str) -> None:
        return None

    async def lead(self, role: str) -> bool:
        return True

    async def resign(self, role: str) -> None:
        return None

    async def heartbeat(self, info: dict[str, Any]) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisLeases:
    def __init__(self, url: str, *, prefix: str = "meetingdash", ttl_seconds: float = 15.0) -> None:
        import redis.asyncio as redis  # optional: installed with the [redis] extra

        # Short socket timeouts: a renewal that hangs on a dead Redis must not outlive the
        # lease it renews, nor hold up shutdown.
        self._redis = redis.Redis.from_url(
            url, socket_timeout=2, socket_connect_timeout=2, **retry_policy()
        )
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds
        self.owner = f"relay-{uuid.uuid4().hex[:12]}"
        self.reacquired = 0

    def key(self, session_id: str) -> str:
        return f"{self.prefix}:relay-lease:{session_id}"

    def heartbeat_key(self, owner: str | None = None) -> str:
        return f"{self.prefix}:relay-heartbeat:{owner or self.owner}"

    @property
    def _ttl_ms(self) -> int:
        return int(self.ttl_seconds * 1000)

    async def acquire(self, session_id: str) -> bool:
        # SET NX, or already ours (a watch message for a session we stream): keep it.
        result = await self._redis.eval(
            RENEW_SCRIPT, 1, self.key(session_id), self.owner, self._ttl_ms
        )
        return bool(result)

    async def renew(self, session_id: str) -> bool:
        """False only when another relay holds the lease. A lease that vanished (Redis lost
        its keys) is taken again; Redis being unreachable raises (keep streaming: nobody
        else can take the lease meanwhile)."""
        result = await self._redis.eval(
            RENEW_SCRIPT, 1, self.key(session_id), self.owner, self._ttl_ms
        )
        if result == 2:
            self.reacquired += 1
        return bool(result)

    async def release(self, session_id: str) -> None:
        await self._redis.eval(RELEASE_SCRIPT, 1, self.key(session_id), self.owner)

    def leader_key(self, role: str) -> str:
        return f"{self.prefix}:relay-leader:{role}"

    async def lead(self, role: str) -> bool:
        result = await self._redis.eval(
            RENEW_SCRIPT, 1, self.leader_key(role), self.owner, self._ttl_ms
        )
        return bool(result)

    async def resign(self, role: str) -> None:
        await self._redis.eval(RELEASE_SCRIPT, 1, self.leader_key(role), self.owner)

    async def holder(self, session_id: str) -> str | None:
        value = await self._redis.get(self.key(session_id))
        return value.decode() if isinstance(value, bytes) else value

    async def heartbeat(self, info: dict[str, Any]) -> None:
        await self._redis.set(self.heartbeat_key(), json.dumps(info), px=self._ttl_ms)

    async def live_relays(self) -> list[dict[str, Any]]:
        relays = []
        async for key in self._redis.scan_iter(match=self.heartbeat_key("*")):
            value = await self._redis.get(key)
            if value:
                relays.append(json.loads(value))
        return relays

    async def close(self) -> None:
        await self._redis.aclose()
