"""uvicorn (uvloop, httptools, websockets) as the optional server of `serve`
(`--server uvicorn` or MEETINGDASH_SERVER=uvicorn; daphne stays the default).

Why it exists: with the hub writing each event once per process, most of what a delivery
costs on daphne is Twisted's write path (every write registers the socket for writability,
waits one reactor turn, writes, unregisters: two epoll_ctl calls and a loop turn per
connection per event); asyncio's transports write at once. docs/benchmarks.md has the
figures.

The same guarantees as `DeadlineServer` (server.py), in uvicorn's terms:
- request headers must be complete within `header_timeout` of the connection opening or
  of a keep-alive request's first byte (uvicorn has no such deadline of its own);
- a connection's write buffer is bounded (`set_write_buffer_limits`): past it, `send`
  waits (uvicorn's flow control), so the hub subscription turns the backlog into a resync;
  a client that does not drain within `stalled_seconds` is dropped and resumes with
  Last-Event-ID. Websockets: the websockets library's own write limit and ping timeout.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvicorn
import uvloop
from uvicorn._compat import asyncio_run
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sessions_monitor import telemetry
from sessions_monitor.shutdown import arm_exit_watchdog

logger = logging.getLogger(__name__)


class StallLimitedFlowControl(FlowControl):
    """uvicorn's flow control, with a limit on how long a write may wait for the client."""

    def __init__(self, transport: asyncio.Transport, stalled_seconds: float) -> None:
        super().__init__(transport)
        self.stalled_seconds = stalled_seconds

    async def drain(self) -> None:
        if self._is_writable_event.is_set():
            return
        telemetry.send_waits.inc()
        try:
            async with asyncio.timeout(self.stalled_seconds):
                await self._is_writable_event.wait()
        except TimeoutError:
            logger.info("dropped a client that read nothing for %.0f s", self.stalled_seconds)
            telemetry.stalled_clients_dropped.inc()
            self._transport.abort()


class BoundedHttpProtocol(HttpToolsProtocol):
    """httptools' protocol with a header deadline and a bounded write buffer."""

    header_timeout = 10.0
    send_buffer_bytes = 256 * 1024
    stalled_seconds = 30.0
    socket_send_buffer = 0
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self.send_buffer_bytes > 0:
            transport.set_write_buffer_limits(high=self.send_buffer_bytes)
            self.flow = StallLimitedFlowControl(transport, self.stalled_seconds)
        if self.socket_send_buffer > 0:
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_send_buffer)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()  # a keep-alive connection's next request starts over

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        logger.info("dropped a client that did not send its request headers in time")
        self.transport.abort()


def bounded_protocol(
    *,
    header_timeout: float,
    send_buffer_bytes: int,
    stalled_seconds: float,
    socket_send_buffer: int,
) -> type[BoundedHttpProtocol]:
    return type(
        "ServeHttpProtocol",
        (BoundedHttpProtocol,),
        {
            "header_timeout": header_timeout,
            "send_buffer_bytes": send_buffer_bytes,
            "stalled_seconds": stalled_seconds,
            "socket_send_buffer": socket_send_buffer,
        },
    )


class _Server(uvicorn.Server):
    """uvicorn's Server, arming the exit watchdog on the first signal, calling `on_started`
    once the socket listens and `on_stopping` before connections are closed (as daphne's
    "before shutdown" trigger: the embedded relay's own streams to the simulator end
    first)."""

    on_started: Callable[[], Awaitable[None]] | None = None
    on_stopping: Callable[[], Awaitable[None]] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            await self.on_started()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.on_stopping is not None:
            await self.on_stopping()
        await super().shutdown(sockets)

    def handle_exit(self, sig: int, frame: Any) -> None:
        if not self.should_exit:
            arm_exit_watchdog()
        super().handle_exit(sig, frame)


def run(
    build: Callable[[], Any],
    *,
    host: str,
    port: int,
    protocol: type[BoundedHttpProtocol],
    proxy_headers: bool,
    backlog: int,
    on_started: Callable[[], Awaitable[None]],
    on_stopping: Callable[[], Awaitable[None]],
) -> None:
    """Serve until SIGTERM/SIGINT. In the server's loop: `build()` makes the ASGI app (the
    relay and the shared upstream client belong to that loop), `on_started` runs once the
    socket listens, `on_stopping` when a signal asks to stop, before open connections get
    their 3 s to end."""

    async def main() -> None:
        config = uvicorn.Config(
            build(),
            host=host,
            port=port,
            http=protocol,
            ws="websockets-sansio",
            lifespan="off",
            access_log=False,
            log_level="warning",
            server_header=False,
            timeout_graceful_shutdown=3,
            backlog=backlog,
            proxy_headers=proxy_headers,
            forwarded_allow_ips="*" if proxy_headers else None,
        )
        server = _Server(config)
        server.on_started = on_started
        server.on_stopping = on_stopping
        await server.serve()

    # uvicorn re-raises the signal it caught once it has shut down; a handler of ours
    # makes that harmless, so the services stop before the process exits.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    asyncio_run(main(), loop_factory=uvloop.new_event_loop)
