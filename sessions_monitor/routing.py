"""Channels routes that bypass Django's request/response cycle (long-lived streams, sockets)."""

from __future__ import annotations

from typing import Any

http_urlpatterns: list[Any] = []
websocket_urlpatterns: list[Any] = []
