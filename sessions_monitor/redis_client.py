"""How MeetingDash's Redis clients are configured (leases, slots, the channel layer).

After a Redis restart every pooled connection is dead; the first command on each fails
with ConnectionError. A couple of quick retries on a fresh connection turn that into a
short delay instead of an error (a real outage still raises, after about half a second).
"""

from __future__ import annotations

from typing import Any


def retry_policy() -> dict[str, Any]:
    from redis.asyncio.retry import Retry  # the async one: every client here is async
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError, TimeoutError

    return {
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), 3),
        "retry_on_error": [ConnectionError, TimeoutError],
    }


def channel_layer_hosts(url: str) -> list[dict[str, Any]]:
    """channels-redis `hosts` for MeetingDash.

    redis-py 8 defaults (a pool of 100 that raises when full, a 5 s socket timeout equal to
    channels-redis's BZPOPMIN timeout) silently starve subscribers under bursts: see
    shared/relay-performance.md. So: a big pool and a longer timeout.

    Deliberately no retry policy here: a receive that fails after a Redis restart must
    reach the hub, which then rejoins its groups (Redis forgot them) and resyncs its
    subscribers. A transparent retry would go on receiving on a group nobody is in.
    """
    return [
        {"address": url, "max_connections": 5000, "socket_timeout": 15, "socket_connect_timeout": 5}
    ]
