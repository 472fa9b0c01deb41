"""`/metrics`: Prometheus text format (prometheus-client) for the relay, the hub and the
upstream client; every figure is defined in `telemetry.py`.

Readable by staff users, or with `Authorization: Bearer $MEETINGDASH_METRICS_TOKEN`.
"""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import generate_latest
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from sessions_monitor import selectors, telemetry
from sessions_monitor.hub import get_hub


def bearer_is_metrics_token(request: HttpRequest) -> bool:
    """`Authorization: Bearer $MEETINGDASH_METRICS_TOKEN` (never true when it is unset)."""
    token = settings.MEETINGDASH_METRICS_TOKEN
    header = request.headers.get("Authorization", "")
    scheme, _, presented = header.partition(" ")
    return bool(
        token
        and scheme.lower() == "bearer"
        and hmac.compare_digest(presented.strip().encode(), token.encode())
    )


def process_state() -> dict[str, Any]:
    """What `telemetry.ProcessCollector` reads at scrape time: in the event loop of a
    `serve`, or in the metrics thread of a `runrelay` (no hub there)."""
    from sessions_monitor.embed_consumers import get_badge_feed
    from sessions_monitor.relay.worker import current_relay

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        hub_stats = {
            "feeds": 0,
            "feeds_down": 0,
            "subscribers": 0,
            "resyncs": 0,
            "feed_failures": 0,
        }
        subscribers: dict[str, int] = {}
    else:
        hub = get_hub()
        hub_stats = hub.stats()
        subscribers = hub.subscriber_kinds()
        subscribers["widget"] = get_badge_feed().widget_count()
    relay = current_relay()
    return {
        "hub": hub_stats,
        "subscribers": subscribers,
        "relay": None
        if relay is None or not relay.running
        else {
            "following": len(relay.following()),
            "write_queue": relay.write_queue(),
            "upstream": relay.client.metrics.snapshot(),
        },
    }


_registered = False


def register_process_collector() -> None:
    """Once per process (the view and `runrelay` both want it)."""
    global _registered
    if not _registered:
        telemetry.REGISTRY.register(telemetry.ProcessCollector(process_state))
        _registered = True


register_process_collector()


def _db_figures() -> tuple[dict[str, int], int]:
    return selectors.links_by_state(), selectors.watched_count()


@never_cache
@require_GET
async def metrics_view(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    if not (user.is_staff or bearer_is_metrics_token(request)):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    links, watched = await database_sync_to_async(_db_figures)()
    telemetry.upstream_links.clear()
    for state, count in links.items():
        telemetry.upstream_links.labels(state).set(count)
    telemetry.sessions_watched.set(watched)
    return HttpResponse(generate_latest(telemetry.REGISTRY), content_type=CONTENT_TYPE_PLAIN_0_0_4)
