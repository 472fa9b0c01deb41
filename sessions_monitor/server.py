"""Daphne as `serve` runs it: plus a deadline for request headers (slow-loris), and a bound
on what a client that stops reading can make us buffer.

Twisted's idle timeout starts over on every byte, so a client that sends one header byte
every few seconds holds a connection for ever; a few hundred of them hold every file
descriptor. Here a request's headers must be complete within `header_timeout` seconds of
its first byte (or of the connection opening), or the connection is dropped.

daphne never pushes back on response bodies or websocket frames: `send` returns at once
and Twisted buffers whatever the socket does not take, without limit. Here `send` waits
while more than `send_buffer_bytes` are buffered for the connection (so the stream's or the
page's hub subscription fills and turns into one resync, reloaded from history once the
client reads again), and a client that has not drained below the bound within
`stalled_seconds` is disconnected (it reconnects and resumes with Last-Event-ID). What one
stalled connection costs is then the bound plus one write in this process, plus what the
kernel's send buffer holds (autotuned up to net.ipv4.tcp_wmem's max, ~2 MB taken on
loopback here; `socket_send_buffer` sets SO_SNDBUF to cap it).

Import only from code that has already imported `daphne.server` (it installs Twisted's
asyncio reactor, which must happen before anything else touches Twisted).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from typing import Any

from daphne.http_protocol import HTTPFactory
from daphne.server import Server
from twisted.web import http

from sessions_monitor import telemetry

logger = logging.getLogger(__name__)
BODY_MESSAGES = frozenset({"http.response.body", "websocket.send"})
DRAIN_POLL_SECONDS = 0.05


class HeaderDeadlineChannel(http.HTTPChannel):
    header_timeout: float = 10.0
    socket_send_buffer = 0  # SO_SNDBUF; 0: the kernel's autotuning (up to tcp_wmem's max)
    _deadline: Any = None
    _between_requests = True

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's names)
        super().connectionMade()
        if self.socket_send_buffer > 0:
            handle = self.transport.getHandle()  # type: ignore[union-attr]
            handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.socket_send_buffer)
        self._arm()

    def dataReceived(self, data: bytes) -> None:  # noqa: N802
        if self._between_requests:
            self._between_requests = False
            self._arm()
        super().dataReceived(data)

    def allHeadersReceived(self) -> None:  # noqa: N802
        self._disarm()
        super().allHeadersReceived()

    def requestDone(self, request: Any) -> None:  # noqa: N802
        super().requestDone(request)
        self._between_requests = True  # a keep-alive connection's next request starts over

    def connectionLost(self, reason: Any = None) -> None:  # noqa: N802
        self._disarm()
        super().connectionLost(reason)

    def _arm(self) -> None:
        if self._deadline is None or not self._deadline.active():
            self._deadline = self.callLater(self.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        logger.info("dropped a client that did not send its request headers in time")
        transport: Any = self.transport
        if transport is not None:
            transport.abortConnection()


class HeaderDeadlineFactory(HTTPFactory):
    """daphne's factory, building `HeaderDeadlineChannel`s (plain HTTP/1.1: daphne offers
    HTTP/2 only with TLS extras we do not install)."""

    def __init__(self, server: Server, header_timeout: float, socket_send_buffer: int = 0) -> None:
        super().__init__(server)
        self.header_timeout = header_timeout
        self.socket_send_buffer = socket_send_buffer

    def protocol(self) -> HeaderDeadlineChannel:
        channel = HeaderDeadlineChannel()
        channel.header_timeout = self.header_timeout
        channel.socket_send_buffer = self.socket_send_buffer
        return channel


def buffered_bytes(transport: Any) -> int:
    """What Twisted holds for a connection that the socket has not taken yet."""
    try:
        pending = len(transport.dataBuffer) - transport.offset
        return int(pending + transport._tempDataLen)
    except AttributeError:  # not a Twisted FileDescriptor (a test double, a closed one)
        return 0


class DeadlineServer(Server):
    """daphne's Server with `HeaderDeadlineFactory` as its HTTP factory and a bounded send
    buffer per connection."""

    def __init__(
        self,
        *args: Any,
        header_timeout: float,
        send_buffer_bytes: int = 256 * 1024,
        stalled_seconds: float = 30.0,
        socket_send_buffer: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.send_buffer_bytes = send_buffer_bytes
        self.stalled_seconds = stalled_seconds
        self.socket_send_buffer = socket_send_buffer

    async def handle_reply(self, protocol: Any, message: dict[str, Any]) -> None:
        if message.get("type") in BODY_MESSAGES and self.send_buffer_bytes > 0:
            transport = getattr(protocol, "transport", None)
            full = buffered_bytes(transport) > self.send_buffer_bytes
            if full and not await self._drained(transport):
                return
        await super().handle_reply(protocol, message)

    async def _drained(self, transport: Any) -> bool:
        """Wait until the client took enough of what is buffered; False (and the
        connection dropped) when it did not within `stalled_seconds`."""
        telemetry.send_waits.inc()
        deadline = asyncio.get_running_loop().time() + self.stalled_seconds
        while buffered_bytes(transport) > self.send_buffer_bytes:
            if getattr(transport, "disconnected", False):
                return False
            if asyncio.get_running_loop().time() >= deadline:
                logger.info(
                    "dropped a client that read nothing for %.0f s (%d bytes buffered)",
                    self.stalled_seconds,
                    buffered_bytes(transport),
                )
                telemetry.stalled_clients_dropped.inc()
                transport.abortConnection()
                return False
            await asyncio.sleep(DRAIN_POLL_SECONDS)
        return True

    def run(self) -> None:
        import daphne.server

        # Server.run() builds `HTTPFactory(self)` by its module-level name; give it ours.
        daphne.server.HTTPFactory = lambda server: HeaderDeadlineFactory(
            server, self.header_timeout, self.socket_send_buffer
        )
        super().run()
