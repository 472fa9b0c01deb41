"""Channels routes that bypass Django's request/response cycle (long-lived streams, sockets)."""

from __future__ import annotations

import re
from typing import Any

from django.urls import path

from sessions_monitor.consumers import SessionDetailConsumer, SessionListConsumer
from sessions_monitor.embed_consumers import EmbedBadgeConsumer
from sessions_monitor.streams import session_stream

# The path of `session_stream` below, for routing before the URL router runs.
STREAM_PATH = re.compile(r"/v1/meeting-buddy/sessions/[^/]+/stream")
http_urlpatterns: list[Any] = [
    # A plain ASGI app, not a Django view (see streams.py for why).
    path("v1/meeting-buddy/sessions/<str:session_id>/stream", session_stream),  # type: ignore[arg-type]
]
# Dashboard sockets: the logged-in user's, behind the session and auth middleware.
page_websocket_urlpatterns: list[Any] = [
    path("ws/sessions/", SessionListConsumer.as_asgi()),
    path("ws/sessions/<str:session_id>/", SessionDetailConsumer.as_asgi()),
]
# Widget sockets authenticate by their token alone: no cookie session or user to look up,
# which would cost two thread round trips per badge (a page with a badge loads everywhere).
WIDGET_SOCKET_PREFIX = "/ws/embed/"
widget_websocket_urlpatterns: list[Any] = [
    path("ws/embed/sessions/<str:session_id>/", EmbedBadgeConsumer.as_asgi()),
]
websocket_urlpatterns: list[Any] = [*page_websocket_urlpatterns, *widget_websocket_urlpatterns]
