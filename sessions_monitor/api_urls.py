"""The programmatic API under /v1/meeting-buddy/ (beside the stream, which is a Channels route):
start and stop bots in the upstream's request and response shapes (issue 15)."""

from __future__ import annotations

from typing import Any

from django.urls import path

from sessions_monitor import api_views

urlpatterns: list[Any] = [
    path("sessions", api_views.session_start, name="api-session-start"),
    path("sessions/<str:session_id>/stop", api_views.session_stop, name="api-session-stop"),
]
