"""Channels routes that bypass Django's request/response cycle (long-lived streams, sockets)."""

from __future__ import annotations

from typing import Any

from django.urls import path

from sessions_monitor.consumers import SessionDetailConsumer, SessionListConsumer
from sessions_monitor.embed_consumers import EmbedBadgeConsumer

http_urlpatterns: list[Any] = []
websocket_urlpatterns: list[Any] = [
    path("ws/sessions/", SessionListConsumer.as_asgi()),
    path("ws/sessions/<str:session_id>/", SessionDetailConsumer.as_asgi()),
    path("ws/embed/sessions/<str:session_id>/", EmbedBadgeConsumer.as_asgi()),
]
