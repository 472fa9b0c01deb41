"""ASGI entry point: Django for pages, Channels routes for streams and live sockets.

`build_application(relay=...)` hands the relay running in this process (the embedded one
`serve` builds) to /healthz and /metrics through each request's scope; `application`, for
any other ASGI server, has none (a web process of the scaled mode).
`build_application(simulator_app=...)` mounts the built-in upstream simulator under
settings.MEETINGDASH_SIMULATOR_PREFIX; `python manage.py serve` does that when asked to
(MEETINGDASH_SIMULATOR=1). Every route, the simulator's included, sits behind the Host check;
websockets behind the same-origin check too.
"""

from __future__ import annotations

import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "meetingdash.settings")
django_asgi_app = get_asgi_application()

# Imported after get_asgi_application(): these modules import models.
from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.conf import settings  # noqa: E402
from django.urls import re_path  # noqa: E402

from sessions_monitor.consumers import RAW_SEND  # noqa: E402
from sessions_monitor.process import ProcessStateMiddleware  # noqa: E402
from sessions_monitor.relay.worker import Relay  # noqa: E402
from sessions_monitor.routing import (  # noqa: E402
    STREAM_PATH,
    WIDGET_SOCKET_PREFIX,
    http_urlpatterns,
    page_websocket_urlpatterns,
    widget_websocket_urlpatterns,
)
from sessions_monitor.security import (  # noqa: E402
    HostValidationMiddleware,
    SameOriginWebsocketMiddleware,
)

ASGIApp = Any


class PrefixMount:
    """Send requests under `prefix` to `mounted` (path stripped), everything else to `default`."""

    def __init__(self, prefix: str, mounted: ASGIApp, default: ASGIApp) -> None:
        self.prefix = prefix.rstrip("/")
        self.mounted = mounted
        self.default = default

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] in ("http", "websocket") and (
            path == self.prefix or path.startswith(self.prefix + "/")
        ):
            inner = dict(scope)
            inner["path"] = path[len(self.prefix) :] or "/"
            inner["raw_path"] = inner["path"].encode()
            inner["root_path"] = scope.get("root_path", "") + self.prefix
            await self.mounted(inner, receive, send)
            return
        await self.default(scope, receive, send)


def http_router() -> ASGIApp:
    """Streams asked for with an API token straight to their route; everything else (pages,
    the API, streams of a logged-in browser) through the session and auth stack, whose
    session wrapper otherwise runs on every chunk a token stream sends (an eighth of a
    delivery's CPU in a profile of 1,000 streams)."""
    with_session = AuthMiddlewareStack(
        URLRouter([*http_urlpatterns, re_path(r"", django_asgi_app)])  # type: ignore[arg-type]
    )
    token_streams = URLRouter(http_urlpatterns)

    async def route(scope: dict[str, Any], receive: Any, send: Any) -> None:
        app = with_session
        if STREAM_PATH.fullmatch(scope["path"]) and any(
            name == b"authorization" for name, _value in scope["headers"]
        ):
            app = token_streams
        await app(scope, receive, send)

    return route


def websocket_router() -> ASGIApp:
    """Widget sockets straight to their router; the dashboard's through the auth stack."""
    pages = AuthMiddlewareStack(URLRouter(page_websocket_urlpatterns))
    widgets = URLRouter(widget_websocket_urlpatterns)

    async def route(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["path"].startswith(WIDGET_SOCKET_PREFIX):
            await widgets(scope, receive, send)
        else:
            await pages({**scope, RAW_SEND: send}, receive, send)

    return route


def build_application(
    *,
    relay: Relay | None = None,
    simulator_app: ASGIApp | None = None,
    simulator_hosts: tuple[str, ...] = (),
) -> ASGIApp:
    """`simulator_hosts`: hosts the simulator answers to besides ALLOWED_HOSTS (the loopback
    address the embedded relay reaches it by)."""
    app: ASGIApp = HostValidationMiddleware(
        ProtocolTypeRouter(
            {
                "http": http_router(),
                "websocket": SameOriginWebsocketMiddleware(websocket_router()),
            }
        )
    )
    app = ProcessStateMiddleware(app, relay=relay)
    if simulator_app is not None:
        mounted = HostValidationMiddleware(simulator_app, extra_hosts=simulator_hosts)
        app = PrefixMount(settings.MEETINGDASH_SIMULATOR_PREFIX, mounted, app)
    return app


application = build_application()
