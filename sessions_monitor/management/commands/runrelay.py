"""`python manage.py runrelay`: a relay worker process (scaled mode, needs REDIS_URL).

Several may run: a Redis lease per session makes exactly one of them stream it."""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from prometheus_client import start_http_server

from sessions_monitor import metrics, telemetry
from sessions_monitor.relay.worker import Relay, build_scaled_relay
from sessions_monitor.shutdown import arm_exit_watchdog

logger = logging.getLogger("meetingdash.runrelay")


def serve_metrics(host: str, port: int, relay: Relay) -> None:
    """`/metrics` of this relay (no Django here: prometheus-client's own small server, in a
    thread). Bind it where only Prometheus reaches it: it has no authentication."""
    metrics.register_process_collector(relay)
    start_http_server(port, addr=host, registry=telemetry.REGISTRY)
    logger.info("relay metrics on http://%s:%d/metrics", host, port)


class Command(BaseCommand):
    help = "Run a relay worker (scaled mode: REDIS_URL and MEETINGBUDDY_API_URL required)."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.REDIS_URL:
            raise CommandError("runrelay needs REDIS_URL (without it, `serve` runs the relay).")
        if not settings.MEETINGBUDDY_API_URL:
            raise CommandError("runrelay needs MEETINGBUDDY_API_URL (the upstream to follow).")
        asyncio.run(self._run())

    async def _run(self) -> None:
        relay = build_scaled_relay(
            upstream_url=settings.MEETINGBUDDY_API_URL, redis_url=settings.REDIS_URL
        )
        if settings.MEETINGDASH_RELAY_METRICS_PORT:
            serve_metrics(
                settings.MEETINGDASH_RELAY_METRICS_HOST,
                settings.MEETINGDASH_RELAY_METRICS_PORT,
                relay,
            )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await relay.start()
        self.stdout.write(f"Relay {relay.leases.owner} running; following {relay.upstream_url}")
        self.stdout.flush()
        await stop.wait()
        arm_exit_watchdog()
        await relay.stop()
        self.stdout.write("Relay stopped.")
