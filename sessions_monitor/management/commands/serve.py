"""`python manage.py serve`: daphne serving MeetingDash, plus what the embedded mode needs.

Without MEETINGBUDDY_API_URL the built-in simulator is mounted in this process under
settings.MEETINGDASH_SIMULATOR_PREFIX and the relay points at it. Without REDIS_URL the
relay runs in this process too (the in-memory channel layer does not cross processes).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from sessions_monitor.background import BackgroundService

logger = logging.getLogger("meetingdash.serve")


class Command(BaseCommand):
    help = "Serve MeetingDash with daphne (and the embedded relay and simulator when configured)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.getenv("MEETINGDASH_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.getenv("MEETINGDASH_PORT", "8000")))

    def handle(self, *args: Any, host: str, port: int, **options: Any) -> None:
        # Importing daphne.server installs Twisted's asyncio reactor: it must come first.
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server
        from twisted.internet import defer, reactor

        from meetingdash.asgi import build_application

        services: list[BackgroundService] = []
        simulator_app = None
        upstream_url = settings.MEETINGBUDDY_API_URL
        if not upstream_url:
            from sessions_monitor.simulator import Simulator

            simulator = Simulator.from_environment()
            simulator_app = simulator.asgi_app
            services.append(simulator)
            local_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
            upstream_url = f"http://{local_host}:{port}{settings.MEETINGDASH_SIMULATOR_PREFIX}"
        if not settings.REDIS_URL:
            from sessions_monitor.relay.worker import build_embedded_relay

            services.append(build_embedded_relay(upstream_url=upstream_url))

        application = build_application(simulator_app=simulator_app)
        loop: asyncio.AbstractEventLoop = reactor._asyncioEventloop

        def start_services() -> None:
            for service in services:
                loop.create_task(service.start(), name=f"start-{service.name}")
            self.stdout.write(f"MeetingDash is serving on http://{host}:{port}/", ending="\n")
            if simulator_app is not None:
                self.stdout.write(f"Built-in upstream simulator at {upstream_url}", ending="\n")
            self.stdout.flush()

        async def stop_services() -> None:
            for service in reversed(services):
                try:
                    await asyncio.wait_for(service.stop(), timeout=10)
                except Exception:
                    logger.exception("stopping %s failed", service.name)

        def stop_trigger() -> Any:
            return defer.Deferred.fromFuture(loop.create_task(stop_services()))

        reactor.addSystemEventTrigger("before", "shutdown", stop_trigger)  # type: ignore[arg-type]
        Server(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            ready_callable=start_services,
            action_logger=None,
            verbosity=0,
        ).run()
