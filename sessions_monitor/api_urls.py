"""The programmatic API under /v1/meeting-buddy/ (beside the stream, which is a Channels route):
start and stop bots in the upstream's request and response shapes (issue 15)."""

from __future__ import annotations

from typing import Any

urlpatterns: list[Any] = []
