"""`python manage.py serve`: daphne (or uvicorn, `--server uvicorn`) serving MeetingDash,
plus what the embedded mode needs.

It follows MEETINGBUDDY_API_URL, or with MEETINGDASH_SIMULATOR=1 (and no upstream URL) the
built-in simulator, mounted in this process under settings.MEETINGDASH_SIMULATOR_PREFIX.
With neither it refuses to start: a forgotten variable must not put a fake upstream, open to
anyone, in production. Without REDIS_URL the relay runs in this process too (the in-memory
channel layer does not cross processes).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from sessions_monitor import lookups
from sessions_monitor.background import BackgroundService
from sessions_monitor.relay.worker import Relay, build_embedded_relay
from sessions_monitor.shutdown import arm_exit_watchdog
from sessions_monitor.simulator import Simulator

logger = logging.getLogger("meetingdash.serve")
STOP_SERVICE_SECONDS = 10.0
SERVERS = ("daphne", "uvicorn")

NO_UPSTREAM = (
    "Nothing to follow: set MEETINGBUDDY_API_URL (and MEETINGBUDDY_API_TOKEN) to follow "
    "Meeting Buddy, or MEETINGDASH_SIMULATOR=1 to run the built-in simulator (`make demo` does)."
)
SIMULATOR_NEEDS_TOKEN = (
    "MEETINGDASH_SIMULATOR=1 with DJANGO_DEBUG=0 needs MEETINGDASH_SIMULATOR_TOKEN: without it "
    "anyone who reaches this server could create, list and stop simulated sessions."
)


def plan_upstream(host: str, port: int) -> tuple[str, str, bool]:
    """(upstream URL, its token, whether the embedded simulator serves it); CommandError
    when the configuration names no upstream."""
    if settings.MEETINGBUDDY_API_URL:
        return settings.MEETINGBUDDY_API_URL, settings.MEETINGBUDDY_API_TOKEN, False
    if not settings.MEETINGDASH_SIMULATOR:
        raise CommandError(NO_UPSTREAM)
    if not settings.DEBUG and not settings.MEETINGDASH_SIMULATOR_TOKEN:
        raise CommandError(SIMULATOR_NEEDS_TOKEN)
    local_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{local_host}:{port}{settings.MEETINGDASH_SIMULATOR_PREFIX}"
    return url, settings.MEETINGDASH_SIMULATOR_TOKEN, True


class Command(BaseCommand):
    help = (
        "Serve MeetingDash with daphne, or uvicorn with --server uvicorn (and the embedded "
        "relay and simulator when configured)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default=os.getenv("MEETINGDASH_HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.getenv("MEETINGDASH_PORT", "8000")))
        parser.add_argument(
            "--server",
            choices=SERVERS,
            default=os.getenv("MEETINGDASH_SERVER", "daphne"),
            help="daphne (the default) or uvicorn (the [uvicorn] extra: uvloop, httptools).",
        )

    def handle(self, *args: Any, host: str, port: int, server: str, **options: Any) -> None:
        if server not in SERVERS:
            raise CommandError(f"MEETINGDASH_SERVER must be one of {', '.join(SERVERS)}")
        plan = plan_upstream(host, port)
        if server == "uvicorn":
            self._run_uvicorn(host, port, plan)
        else:
            self._run_daphne(host, port, plan)

    def _announce(self, host: str, port: int, stack: ServeStack) -> None:
        self.stdout.write(f"MeetingDash is serving on http://{host}:{port}/", ending="\n")
        if stack.with_simulator:
            self.stdout.write(f"Built-in upstream simulator at {stack.upstream_url}", ending="\n")
        self.stdout.flush()

    def _run_daphne(self, host: str, port: int, plan: tuple[str, str, bool]) -> None:
        # Importing daphne.server installs Twisted's asyncio reactor: it must come first.
        from daphne.endpoints import build_endpoint_description_strings
        from twisted.internet import defer, reactor

        from sessions_monitor.server import DeadlineServer

        loop: asyncio.AbstractEventLoop = reactor._asyncioEventloop
        stack = ServeStack.build(plan, loop)

        def start_services() -> None:
            stack.start(loop)
            self._announce(host, port, stack)

        def stop_trigger() -> Any:
            arm_exit_watchdog()
            return defer.Deferred.fromFuture(loop.create_task(stack.stop()))

        reactor.addSystemEventTrigger("before", "shutdown", stop_trigger)  # type: ignore[arg-type]
        proxy = settings.MEETINGDASH_PROXY_HEADERS
        DeadlineServer(
            application=stack.application,
            endpoints=[
                f"{endpoint}:backlog={settings.MEETINGDASH_LISTEN_BACKLOG}"
                for endpoint in build_endpoint_description_strings(host=host, port=port)
            ],
            ready_callable=start_services,
            action_logger=None,
            verbosity=0,
            # Open streams and sockets get this long to end after SIGTERM.
            application_close_timeout=3,
            header_timeout=settings.MEETINGDASH_HEADER_TIMEOUT_SECONDS,
            send_buffer_bytes=settings.MEETINGDASH_SEND_BUFFER_BYTES,
            stalled_seconds=settings.MEETINGDASH_STALLED_CLIENT_SECONDS,
            socket_send_buffer=settings.MEETINGDASH_SOCKET_SEND_BUFFER_BYTES,
            proxy_forwarded_address_header="X-Forwarded-For" if proxy else None,
            proxy_forwarded_port_header="X-Forwarded-Port" if proxy else None,
            proxy_forwarded_proto_header="X-Forwarded-Proto" if proxy else None,
        ).run()

    def _run_uvicorn(self, host: str, port: int, plan: tuple[str, str, bool]) -> None:
        try:
            from sessions_monitor import uvicorn_server
        except ImportError as exc:
            raise CommandError(
                f"--server uvicorn needs the [uvicorn] extra ({exc}): pip install -e '.[uvicorn]'"
            ) from exc
        protocol = uvicorn_server.bounded_protocol(
            header_timeout=settings.MEETINGDASH_HEADER_TIMEOUT_SECONDS,
            send_buffer_bytes=settings.MEETINGDASH_SEND_BUFFER_BYTES,
            stalled_seconds=settings.MEETINGDASH_STALLED_CLIENT_SECONDS,
            socket_send_buffer=settings.MEETINGDASH_SOCKET_SEND_BUFFER_BYTES,
        )
        stack: ServeStack | None = None

        def build() -> Any:
            nonlocal stack
            stack = ServeStack.build(plan, asyncio.get_running_loop())
            return stack.application

        async def started() -> None:
            assert stack is not None
            stack.start(asyncio.get_running_loop())
            self._announce(host, port, stack)

        async def stopping() -> None:
            if stack is not None:
                await stack.stop()

        uvicorn_server.run(
            build,
            host=host,
            port=port,
            protocol=protocol,
            proxy_headers=settings.MEETINGDASH_PROXY_HEADERS,
            backlog=settings.MEETINGDASH_LISTEN_BACKLOG,
            on_started=started,
            on_stopping=stopping,
        )


@dataclass
class ServeStack:
    """What `serve` runs whichever the server: the application, and the background
    services (the simulator, the embedded relay) started once the socket listens."""

    application: Any
    services: list[BackgroundService]
    upstream_url: str
    with_simulator: bool

    @classmethod
    def build(cls, plan: tuple[str, str, bool], loop: asyncio.AbstractEventLoop) -> ServeStack:
        from meetingdash.asgi import build_application

        upstream_url, upstream_token, with_simulator = plan
        services: list[BackgroundService] = []
        simulator_app = None
        if with_simulator:
            simulator = Simulator.from_environment()
            simulator_app = simulator.asgi_app
            services.append(simulator)
        lookups.configure(upstream_url, upstream_token)
        relay: Relay | None = None
        if not settings.REDIS_URL:
            # Look-ups and the relay share the process's one upstream client.
            relay = build_embedded_relay(
                upstream_url=upstream_url, token=upstream_token, client=lookups.shared_client(loop)
            )
            services.append(relay)
        # The embedded relay reaches the simulator by this loopback address, which need not
        # be in ALLOWED_HOSTS (the public name is).
        relay_host = urlsplit(upstream_url).hostname or ""
        application = build_application(
            relay=relay, simulator_app=simulator_app, simulator_hosts=(relay_host,)
        )
        return cls(application, services, upstream_url, with_simulator)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        for service in self.services:
            loop.create_task(service.start(), name=f"start-{service.name}")

    async def stop(self) -> None:
        for service in reversed(self.services):
            try:
                await asyncio.wait_for(service.stop(), timeout=STOP_SERVICE_SECONDS)
            except Exception:
                logger.exception("stopping %s failed", service.name)
