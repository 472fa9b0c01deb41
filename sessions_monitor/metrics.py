"""`/metrics`: Prometheus text format (prometheus-client) for the relay, the hub and the
upstream client; every figure is defined in `telemetry.py`.

Readable by staff users, or with `Authorization: Bearer $MEETINGDASH_METRICS_TOKEN`. The
figures of this process's relay come from the relay its entry point built: the view reads
it from the request (`process.relay_of`), `runrelay` registers it once at start-up.
"""

from __future__ import annotations

import asyncio
import functools
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
from sessions_monitor.alerts import selectors as alert_selectors
from sessions_monitor.hub import get_hub
from sessions_monitor.process import relay_of
from sessions_monitor.relay.worker import Relay


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


def process_state(relay: Relay | None) -> dict[str, Any]:
    """What `telemetry.ProcessCollector` reads at scrape time: in the event loop of a
    `serve`, or in the metrics thread of a `runrelay` (no hub there)."""
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


def process_collector(relay: Relay | None) -> telemetry.ProcessCollector:
    return telemetry.ProcessCollector(functools.partial(process_state, relay))


def register_process_collector(relay: Relay) -> None:
    """`runrelay`, once: its own metrics server exposes `telemetry.REGISTRY` alone. (The
    view adds a collector for its request's relay instead: nothing is registered twice.)"""
    telemetry.REGISTRY.register(process_collector(relay))


def _db_figures() -> tuple[dict[str, int], int, alert_selectors.AlertFigures]:
    return selectors.links_by_state(), selectors.watched_count(), alert_selectors.alert_figures()


@never_cache
@require_GET
async def metrics_view(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    if not (user.is_staff or bearer_is_metrics_token(request)):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    links, watched, alerts = await database_sync_to_async(_db_figures)()
    telemetry.upstream_links.clear()
    for state, count in links.items():
        telemetry.upstream_links.labels(state).set(count)
    telemetry.sessions_watched.set(watched)
    stuck: dict[str, int] = {}
    for status, count in alerts.stuck.items():
        label = telemetry.status_label(status)
        stuck[label] = stuck.get(label, 0) + count
    oldest: dict[str, float] = {}
    for status, seconds in alerts.oldest_seconds.items():
        label = telemetry.status_label(status)
        oldest[label] = max(oldest.get(label, 0.0), seconds)
    telemetry.sessions_stuck.clear()
    for label, count in stuck.items():
        telemetry.sessions_stuck.labels(label).set(count)
    telemetry.status_oldest.clear()
    for label, seconds in oldest.items():
        telemetry.status_oldest.labels(label).set(seconds)
    telemetry.alerts_pending.set(alerts.pending)
    collectors = (telemetry.REGISTRY, process_collector(relay_of(request)))
    body = b"".join(generate_latest(collector) for collector in collectors)
    return HttpResponse(body, content_type=CONTENT_TYPE_PLAIN_0_0_4)
