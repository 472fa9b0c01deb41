"""Daphne as `serve` runs it: plus a deadline for request headers (slow-loris).

Twisted's idle timeout starts over on every byte, so a client that sends one header byte
every few seconds holds a connection for ever; a few hundred of them hold every file
descriptor. Here a request's headers must be complete within `header_timeout` seconds of
its first byte (or of the connection opening), or the connection is dropped.

Import only from code that has already imported `daphne.server` (it installs Twisted's
asyncio reactor, which must happen before anything else touches Twisted).
"""

from __future__ import annotations

import logging
from typing import Any

from daphne.http_protocol import HTTPFactory
from daphne.server import Server
from twisted.web import http

logger = logging.getLogger(__name__)


class HeaderDeadlineChannel(http.HTTPChannel):
    header_timeout: float = 10.0
    _deadline: Any = None
    _between_requests = True

    def connectionMade(self) -> None:  # noqa: N802 (Twisted's names)
        super().connectionMade()
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

    def __init__(self, server: Server, header_timeout: float) -> None:
        super().__init__(server)
        self.header_timeout = header_timeout

    def protocol(self) -> HeaderDeadlineChannel:
        channel = HeaderDeadlineChannel()
        channel.header_timeout = self.header_timeout
        return channel


class DeadlineServer(Server):
    """daphne's Server with `HeaderDeadlineFactory` as its HTTP factory."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout

    def run(self) -> None:
        import daphne.server

        # Server.run() builds `HTTPFactory(self)` by its module-level name; give it ours.
        daphne.server.HTTPFactory = lambda server: HeaderDeadlineFactory(
            server, self.header_timeout
        )
        super().run()
