"""`python manage.py simulate_upstream`: the Meeting Buddy upstream simulator alone, on daphne."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

logger = logging.getLogger("meetingdash.simulator")


class Command(BaseCommand):
    help = "Serve a simulated Meeting Buddy API (sessions, status streams, fault knobs)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8765)
        parser.add_argument("--token", default=None, help="require Authorization: Bearer TOKEN")
        parser.add_argument("--speed", type=float, default=1.0, help="scenario clock factor")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--sessions", type=int, default=5, help="sessions at start")
        parser.add_argument("--keepalive", type=float, default=15.0, help="seconds")
        parser.add_argument(
            "--no-arrivals", action="store_true", help="no new sessions after the first ones"
        )
        control = parser.add_mutually_exclusive_group()
        control.add_argument(
            "--control",
            dest="control",
            action="store_true",
            default=None,
            help="serve /_control/ (default: when DEBUG or MEETINGDASH_SIMULATOR_CONTROL=1)",
        )
        control.add_argument("--no-control", dest="control", action="store_false")

    def handle(self, *args: Any, **options: Any) -> None:
        # Importing daphne.server installs Twisted's asyncio reactor: it must come first.
        from daphne.endpoints import build_endpoint_description_strings
        from daphne.server import Server
        from twisted.internet import defer, reactor

        from sessions_monitor.simulator import Simulator

        control = options["control"]
        if control is None:
            control = bool(settings.DEBUG) or os.getenv("MEETINGDASH_SIMULATOR_CONTROL") == "1"
        simulator = Simulator(
            seed=options["seed"],
            speed=options["speed"],
            initial_sessions=options["sessions"],
            keepalive_seconds=options["keepalive"],
            token=options["token"],
            arrivals=not options["no_arrivals"],
            control=control,
        )
        host, port = options["host"], options["port"]
        loop: asyncio.AbstractEventLoop = reactor._asyncioEventloop

        def ready() -> None:
            loop.create_task(simulator.start(), name="start-simulator")
            self.stdout.write(f"Simulator serving on http://{host}:{port}/", ending="\n")
            self.stdout.flush()

        async def shutdown() -> None:
            try:
                await asyncio.wait_for(simulator.stop(), timeout=10)
            except Exception:
                logger.exception("stopping the simulator failed")

        def stop_trigger() -> Any:
            return defer.Deferred.fromFuture(loop.create_task(shutdown()))

        reactor.addSystemEventTrigger("before", "shutdown", stop_trigger)  # type: ignore[arg-type]
        Server(
            application=simulator.asgi_app,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            ready_callable=ready,
            action_logger=None,
            http_timeout=None,
            verbosity=0,
        ).run()
