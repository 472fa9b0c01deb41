"""`/metrics`: Prometheus text format (prometheus-client) for the relay, the hub and the
upstream client; every figure is defined in `telemetry.py`.

Readable by staff users, or with `Authorization: Bearer $MEETINGDASH_METRICS_TOKEN`.
"""

from __future__ import annotations

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
    """What `telemetry.ProcessCollector` reads at scrape time (runs in the event loop)."""
    from sessions_monitor.embed_consumers import get_badge_feed
    from sessions_monitor.relay.worker import current_relay

    hub = get_hub()
    subscribers = hub.subscriber_kinds()
    subscribers["widget"] = get_badge_feed().widget_count()
    relay = current_relay()
    return {
        "hub": hub.stats(),
        "subscribers": subscribers,
        "relay": None
        if relay is None or not relay.running
        else {
            "following": len(relay.following()),
            "write_queue": relay.write_queue(),
            "upstream": relay.client.metrics.snapshot(),
        },
    }


telemetry.REGISTRY.register(telemetry.ProcessCollector(process_state))


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
