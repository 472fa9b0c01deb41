"""What a process's entry point hands to the code that reports on the process: its relay.

`serve` builds the embedded relay (none with REDIS_URL: the relay then runs in `runrelay`
processes) and passes it to `meetingdash.asgi.build_application(relay=...)`, which puts it
in every request's ASGI scope under `state`, the key ASGI lifespan state uses. /healthz and
/metrics read it from there with `relay_of`; `runrelay` hands its relay to
`metrics.register_process_collector`. Nothing looks the relay up in a module global.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sessions_monitor.relay.worker import Relay

Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Any]
STATE_KEY = "meetingdash.relay"


class ProcessStateMiddleware:
    """Adds this process's relay (or None) to the scope of every request and socket."""

    def __init__(self, app: ASGIApp, *, relay: Relay | None) -> None:
        self.app = app
        self.relay = relay

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket"):
            scope = {**scope, "state": {**scope.get("state", {}), STATE_KEY: self.relay}}
        await self.app(scope, receive, send)


def relay_of(request_or_scope: Any) -> Relay | None:
    """The relay the application was built with, for a request (Django's, which has its
    ASGI scope as `.scope`) or a scope. None without one: a scaled web process, or a
    request that did not come through `build_application` (Django's test client)."""
    scope = getattr(request_or_scope, "scope", request_or_scope)
    state = scope.get("state") if isinstance(scope, Mapping) else None
    relay = state.get(STATE_KEY) if isinstance(state, Mapping) else None
    return relay if isinstance(relay, Relay) else None
