"""`/metrics`: Prometheus text format for the relay, the hub and the upstream client.

Readable by staff users, or with `Authorization: Bearer $MEETINGDASH_METRICS_TOKEN`.
Counters are per process (each `serve` / `runrelay` has its own), as Prometheus expects.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from sessions_monitor import selectors, services
from sessions_monitor.hub import get_hub

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


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


def _line(name: str, value: float, labels: dict[str, str] | None = None) -> str:
    if labels:
        rendered = ",".join(
            f'{key}="{str(val).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
            for key, val in sorted(labels.items())
        )
        return f"{name}{{{rendered}}} {value:g}"
    return f"{name} {value:g}"


def _family(name: str, kind: str, help_text: str, lines: Iterable[str]) -> list[str]:
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}", *lines]


def _db_figures() -> tuple[dict[str, int], int]:
    return selectors.links_by_state(), selectors.watched_count()


def render_metrics(links: dict[str, int], watched: int) -> str:
    from sessions_monitor.relay.worker import current_relay

    counts = services.metrics.snapshot()
    recorded = {
        key.removeprefix("events_recorded_"): value
        for key, value in counts.items()
        if key.startswith("events_recorded_")
    }
    out: list[str] = []
    out += _family(
        "meetingdash_events_recorded_total",
        "counter",
        "Upstream events stored, by kind.",
        (_line("meetingdash_events_recorded_total", v, {"kind": k}) for k, v in recorded.items()),
    )
    for name, key, text in (
        (
            "meetingdash_events_deduplicated_total",
            "events_deduplicated",
            "Events not stored again.",
        ),
        ("meetingdash_broadcasts_total", "broadcasts", "Stored events broadcast."),
        (
            "meetingdash_broadcast_failures_total",
            "broadcast_failures",
            "Broadcasts that failed (events stay stored).",
        ),
    ):
        out += _family(name, "counter", text, [_line(name, counts.get(key, 0))])
    out += _family(
        "meetingdash_sessions_watched",
        "gauge",
        "Sessions marked watched.",
        [_line("meetingdash_sessions_watched", watched)],
    )
    out += _family(
        "meetingdash_upstream_links",
        "gauge",
        "Sessions by upstream link state.",
        (_line("meetingdash_upstream_links", v, {"state": k}) for k, v in links.items()),
    )
    hub = get_hub().stats()
    out += _family(
        "meetingdash_hub_feeds",
        "gauge",
        "Group subscriptions of this process's hub.",
        [_line("meetingdash_hub_feeds", hub["feeds"])],
    )
    out += _family(
        "meetingdash_hub_subscribers",
        "gauge",
        "Local subscribers of this process's hub.",
        [_line("meetingdash_hub_subscribers", hub["subscribers"])],
    )
    relay = current_relay()
    out += _family(
        "meetingdash_relay_running",
        "gauge",
        "1 when a relay runs in this process.",
        [_line("meetingdash_relay_running", int(relay is not None and relay.running))],
    )
    if relay is not None:
        out += _family(
            "meetingdash_relay_following",
            "gauge",
            "Sessions this relay streams.",
            [_line("meetingdash_relay_following", len(relay.following()))],
        )
        upstream = relay.client.metrics.snapshot()
        out += _family(
            "meetingdash_upstream_connects_total",
            "counter",
            "Upstream stream connection attempts.",
            [_line("meetingdash_upstream_connects_total", upstream["connects"])],
        )
        out += _family(
            "meetingdash_upstream_reconnects_total",
            "counter",
            "Upstream reconnects by reason.",
            (
                _line("meetingdash_upstream_reconnects_total", v, {"reason": k})
                for k, v in upstream["reconnects"].items()
            ),
        )
        out += _family(
            "meetingdash_upstream_events_total",
            "counter",
            "Upstream events parsed, by type.",
            (
                _line("meetingdash_upstream_events_total", v, {"type": k})
                for k, v in upstream["events"].items()
            ),
        )
        out += _family(
            "meetingdash_upstream_bytes_total",
            "counter",
            "Upstream stream bytes received.",
            [_line("meetingdash_upstream_bytes_total", upstream["bytes_received"])],
        )
    return "\n".join(out) + "\n"


@never_cache
@require_GET
async def metrics_view(request: HttpRequest) -> HttpResponse:
    user = await request.auser()
    if not (user.is_staff or bearer_is_metrics_token(request)):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    links, watched = await database_sync_to_async(_db_figures)()
    return HttpResponse(render_metrics(links, watched), content_type=CONTENT_TYPE)
