"""Every figure `/metrics` exposes, with prometheus-client, in one place.

Counters and histograms are incremented where things happen (services, relay, hub,
streams). State that is cheaper to read than to track (hub feeds, subscribers, the relay's
queues, the upstream client's counters) is read at scrape time by `ProcessCollector`.
Figures are per process (each `serve` / `runrelay` has its own), as Prometheus expects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.process_collector import ProcessCollector as OsProcessCollector
from prometheus_client.registry import Collector

from sessions_monitor.upstream.events import STATUSES

disable_created_metrics()  # type: ignore[no-untyped-call]  # one `_created` gauge per counter is noise at this size
REGISTRY = CollectorRegistry(auto_describe=True)
OsProcessCollector(registry=REGISTRY)

# --- the relay: upstream to database ------------------------------------------------------------
events_recorded = Counter(
    "meetingdash_events_recorded", "Events stored, by kind.", ["kind"], registry=REGISTRY
)
events_deduplicated = Counter(
    "meetingdash_events_deduplicated", "Upstream events not stored again.", registry=REGISTRY
)
events_dropped = Counter(
    "meetingdash_events_dropped",
    "Upstream events that could not be stored (each one noted as an anomaly), by reason.",
    ["reason"],
    registry=REGISTRY,
)
gaps = Counter(
    "meetingdash_gaps",
    "Gaps stored: times no upstream stream was connected to a watched session.",
    registry=REGISTRY,
)
gap_seconds = Counter(
    "meetingdash_gap_seconds", "Total length of the stored gaps, seconds.", registry=REGISTRY
)
db_write_retries = Counter(
    "meetingdash_db_write_retries",
    "Relay writes retried because the database did not take them.",
    registry=REGISTRY,
)
upstream_to_stored = Histogram(
    "meetingdash_upstream_to_stored_seconds",
    "From the upstream event's timestamp to its row being stored.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
    registry=REGISTRY,
)
lease_takeovers = Counter(
    "meetingdash_lease_takeovers",
    "Sessions this relay started streaming that had been streamed before (resume, take-over).",
    registry=REGISTRY,
)
lease_reacquired = Counter(
    "meetingdash_lease_reacquired",
    "Leases found gone at renewal (Redis lost its keys) and taken again.",
    registry=REGISTRY,
)
leases_lost = Counter(
    "meetingdash_leases_lost",
    "Leases another relay held at renewal: the session was handed over.",
    registry=REGISTRY,
)

# --- sessions and alerts -------------------------------------------------------------------------
session_outcomes = Counter(
    "meetingdash_session_outcomes",
    "Sessions that ended as this relay recorded them, by final status, error code, platform.",
    ["status", "error_code", "platform"],
    registry=REGISTRY,
)
status_dwell = Histogram(
    "meetingdash_status_dwell_seconds",
    "How long sessions stayed in a status before moving on, by that status.",
    ["status"],
    buckets=(1, 5, 15, 30, 60, 120, 180, 300, 600, 900, 1800, 3600, 7200, 14400),
    registry=REGISTRY,
)
alerts_enqueued = Counter(
    "meetingdash_alerts_enqueued",
    "Alert deliveries written to the outbox, by type (session.failed, session.stuck, …).",
    ["kind"],
    registry=REGISTRY,
)
alert_attempts = Counter(
    "meetingdash_alert_attempts",
    "Alert delivery attempts, by channel and result (delivered, retry, gave_up).",
    ["channel", "result"],
    registry=REGISTRY,
)
# Set by the /metrics view from the database just before each scrape.
sessions_stuck = Gauge(
    "meetingdash_sessions_stuck",
    "Sessions the watchdog found stuck and that have not moved on, by status.",
    ["status"],
    registry=REGISTRY,
)
status_oldest = Gauge(
    "meetingdash_status_oldest_seconds",
    "For each status a running session is in: how long the longest-waiting one has been in it.",
    ["status"],
    registry=REGISTRY,
)
alerts_pending = Gauge(
    "meetingdash_alerts_pending", "Alert deliveries not yet delivered.", registry=REGISTRY
)

KNOWN_STATUSES = frozenset(STATUSES)
KNOWN_PLATFORMS = frozenset({"teams", "zoom", "google_meet", "meet", "webex"})
MAX_ERROR_CODES = 100
_error_codes: set[str] = set()


def bounded_error_code(code: str) -> str:
    """Label values come from the upstream: bound them (a malformed or ever-changing code
    would otherwise grow the series without end)."""
    if not code:
        return ""
    if code in _error_codes:
        return code
    plain = len(code) <= 64 and code.replace("_", "").isalnum() and code.isascii()
    if plain and len(_error_codes) < MAX_ERROR_CODES:
        _error_codes.add(code)
        return code
    return "OTHER"


def status_label(status: str) -> str:
    """A status as a label value: the upstream's known ones, anything else as `other`."""
    return status if status in KNOWN_STATUSES else "other"


def observe_status_change(
    *, previous: str, status: str, dwell_seconds: float | None, error_code: str, platform: str
) -> None:
    if previous and dwell_seconds is not None and dwell_seconds >= 0:
        status_dwell.labels(status_label(previous)).observe(dwell_seconds)
    if status in ("completed", "failed"):
        session_outcomes.labels(
            status,
            bounded_error_code(error_code),
            platform if platform in KNOWN_PLATFORMS else ("" if not platform else "other"),
        ).inc()


# --- fan-out: database to subscribers ------------------------------------------------------------
broadcasts = Counter("meetingdash_broadcasts", "Stored events broadcast.", registry=REGISTRY)
broadcast_failures = Counter(
    "meetingdash_broadcast_failures",
    "Broadcasts that failed at first (events stay stored; the send is retried).",
    registry=REGISTRY,
)
broadcasts_abandoned = Counter(
    "meetingdash_broadcasts_abandoned",
    "Broadcasts given up after retries (subscribers resync from history on the next event).",
    registry=REGISTRY,
)
stored_to_fanout = Histogram(
    "meetingdash_stored_to_fanout_seconds",
    "From an event being stored to this process handing it to its local subscribers.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 30),
    registry=REGISTRY,
)
bad_messages = Counter(
    "meetingdash_bad_messages",
    "Channel-layer messages dropped because they did not parse (messages.py), by receiver.",
    ["receiver"],
    registry=REGISTRY,
)
access_ended = Counter(
    "meetingdash_access_ended",
    "Open streams and sockets closed because their credential was no longer valid.",
    ["kind"],
    registry=REGISTRY,
)
send_waits = Counter(
    "meetingdash_send_waits",
    "Writes that waited for a slow client to drain its send buffer (serve's bound).",
    registry=REGISTRY,
)
stalled_clients_dropped = Counter(
    "meetingdash_stalled_clients_dropped",
    "Connections dropped because the client read nothing within the stall limit.",
    registry=REGISTRY,
)
limit_refusals = Counter(
    "meetingdash_limit_refusals",
    "Connections and look-ups refused by a limit.",
    ["limit"],
    registry=REGISTRY,
)

# Set by the /metrics view from the database just before each scrape.
upstream_links = Gauge(
    "meetingdash_upstream_links", "Sessions by upstream link state.", ["state"], registry=REGISTRY
)
sessions_watched = Gauge(
    "meetingdash_sessions_watched", "Sessions marked watched.", registry=REGISTRY
)


class ProcessCollector(Collector):
    """State of this process read at scrape time: the hub, the relay, the upstream client."""

    def __init__(self, read: Callable[[], dict[str, Any]]) -> None:
        self.read = read

    def describe(self) -> list[Any]:
        """Nothing to describe up front: `collect` needs the running event loop."""
        return []

    def collect(self) -> Iterator[Any]:
        state = self.read()
        hub = state["hub"]
        feeds = GaugeMetricFamily(
            "meetingdash_hub_feeds", "Group subscriptions of this process's hub.", labels=["state"]
        )
        feeds.add_metric(["alive"], hub["feeds"] - hub["feeds_down"])
        feeds.add_metric(["down"], hub["feeds_down"])
        yield feeds
        yield CounterMetricFamily(
            "meetingdash_hub_resyncs", "Subscribers told to reload from history.", hub["resyncs"]
        )
        yield CounterMetricFamily(
            "meetingdash_hub_feed_failures",
            "Channel-layer errors of hub feeds.",
            hub["feed_failures"],
        )
        subscribers = GaugeMetricFamily(
            "meetingdash_subscribers", "Local live subscribers, by kind.", labels=["kind"]
        )
        for kind, count in sorted(state["subscribers"].items()):
            subscribers.add_metric([kind], count)
        yield subscribers
        relay = state["relay"]
        yield GaugeMetricFamily(
            "meetingdash_relay_running", "1 when a relay runs in this process.", int(bool(relay))
        )
        if not relay:
            return
        yield GaugeMetricFamily(
            "meetingdash_relay_following", "Sessions this relay streams.", relay["following"]
        )
        yield GaugeMetricFamily(
            "meetingdash_db_write_queue",
            "Relay writes waiting for the database (all sessions).",
            relay["write_queue"],
        )
        upstream = relay["upstream"]
        yield CounterMetricFamily(
            "meetingdash_upstream_connects",
            "Upstream stream connection attempts.",
            upstream["connects"],
        )
        reconnects = CounterMetricFamily(
            "meetingdash_upstream_reconnects", "Upstream reconnects, by reason.", labels=["reason"]
        )
        for reason, count in sorted(upstream["reconnects"].items()):
            reconnects.add_metric([reason], count)
        yield reconnects
        yield CounterMetricFamily(
            "meetingdash_upstream_stalls",
            "Upstream streams replaced because no byte came for the stall timeout.",
            upstream["reconnects"].get("stall", 0),
        )
        events = CounterMetricFamily(
            "meetingdash_upstream_events", "Upstream events parsed, by type.", labels=["type"]
        )
        for kind, count in sorted(upstream["events"].items()):
            events.add_metric([kind], count)
        yield events
        yield CounterMetricFamily(
            "meetingdash_upstream_bytes",
            "Upstream stream bytes received.",
            upstream["bytes_received"],
        )
