"""Health checks behind /healthz: each returns a dict with `ok` and never raises.

`report(relay)` runs them at most once per REPORT_SECONDS per process and shares the answer
with every caller meanwhile: an unauthenticated flood of /healthz costs one round of checks
a second, not three queries and a layer round-trip per request. `relay` is the one running
in this process, as its entry point built it (`process.relay_of(request)`), or None.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import connection

from sessions_monitor import hub, selectors
from sessions_monitor.relay.leases import RedisLeases
from sessions_monitor.relay.worker import Relay, channel_prefix

logger = logging.getLogger(__name__)

REPORT_SECONDS = 1.0
_reports: dict[tuple[int, int], tuple[float, asyncio.Future[dict[str, Any]]]] = {}


async def report(relay: Relay | None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    key = (id(loop), id(relay))
    cached = _reports.get(key)
    if cached is None or loop.time() - cached[0] >= REPORT_SECONDS:
        if len(_reports) > 4:  # loops of finished tests
            _reports.clear()
        cached = _reports[key] = (loop.time(), asyncio.ensure_future(_run_checks(relay)))
    return await asyncio.shield(cached[1])


async def _run_checks(relay: Relay | None) -> dict[str, Any]:
    checks = {
        "database": await check_database(),
        "channel_layer": await check_channel_layer(),
        "hub": check_hub(),
        "relay": await check_relay(relay),
    }
    return {"ok": all(check["ok"] for check in checks.values()), **checks}


def _check_database_sync() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not healthy", never a crash
        logger.warning("health: database check failed: %s", type(exc).__name__)
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "vendor": connection.vendor}


async def check_database() -> dict[str, Any]:
    return await sync_to_async(_check_database_sync, thread_sensitive=True)()


async def check_channel_layer(wait_seconds: float = 2.0) -> dict[str, Any]:
    layer = get_channel_layer()
    if layer is None:
        return {"ok": False, "error": "no channel layer configured"}
    backend = type(layer).__name__
    try:
        # Default prefix: see hub.py (a second prefix starves channels-redis receivers).
        channel = await layer.new_channel()
        probe = {"type": "healthz.probe", "nonce": uuid.uuid4().hex}
        await asyncio.wait_for(layer.send(channel, probe), wait_seconds)
        received = await asyncio.wait_for(layer.receive(channel), wait_seconds)
    except Exception as exc:
        logger.warning("health: channel layer check failed: %s", type(exc).__name__)
        return {"ok": False, "backend": backend, "error": type(exc).__name__}
    return {"ok": received.get("nonce") == probe["nonce"], "backend": backend}


def check_hub() -> dict[str, Any]:
    """Not fine while any of this process's feeds is down: its subscribers get no live
    events (they are resynced, or sent to reconnect, once it is back)."""
    stats = hub.get_hub().stats()
    return {"ok": stats["feeds_down"] == 0, **stats}


def _relay_backlog_sync() -> tuple[dict[str, int], int, int]:
    return (
        selectors.links_by_state(),
        selectors.watched_count(),
        len(selectors.watched_sessions_to_follow()),
    )


async def check_relay(relay: Relay | None) -> dict[str, Any]:
    """The relay of this process (embedded), or the heartbeats of `runrelay` processes
    (scaled). Not fine = watched live sessions exist and no running relay follows them,
    or this process's relay has stopped or lost one of its loops."""
    try:
        links, watched, backlog = await database_sync_to_async(_relay_backlog_sync)()
    except Exception as exc:
        return {"ok": False, "error": type(exc).__name__}
    report: dict[str, Any] = {"sessions_watched": watched, "links": links}
    if relay is not None:
        healthy = relay.running and relay.loops_alive()
        report.update(relay.describe(), ok=healthy, running=healthy)
        return report
    if settings.REDIS_URL:
        relays = await _scaled_relays(settings.REDIS_URL)
        running = bool(relays)
        report.update(mode="scaled", relays=len(relays), running=running)
        report["ok"] = running or backlog == 0
        return report
    report.update(mode="none", running=False, ok=backlog == 0)
    return report


async def _scaled_relays(redis_url: str) -> list[dict[str, Any]]:
    leases = RedisLeases(redis_url, prefix=channel_prefix())
    try:
        return await asyncio.wait_for(leases.live_relays(), 2.0)
    except Exception as exc:
        logger.warning("health: cannot read relay heartbeats: %s", type(exc).__name__)
        return []
    finally:
        await leases.close()
