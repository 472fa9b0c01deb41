"""Process-wide counters of the upstream client, read by the relay's `/metrics`."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class UpstreamMetrics:
    """Plain counters; all updates happen on the event loop, so no locking is needed.

    `connects` counts connection attempts, `reconnects` the waits before a new attempt
    (by reason), `events` the parsed events by type (`unparseable` included),
    `bytes_received` every body byte (keepalives included) and `last_byte_at` the wall
    clock time of the last one.
    """

    connects: int = 0
    open_streams: int = 0
    reconnects: Counter[str] = field(default_factory=Counter)
    events: Counter[str] = field(default_factory=Counter)
    unparseable: int = 0
    bytes_received: int = 0
    last_byte_at: float | None = None

    def record_bytes(self, count: int) -> None:
        self.bytes_received += count
        self.last_byte_at = time.time()

    def record_event(self, kind: str) -> None:
        self.events[kind] += 1
        if kind == "unparseable":
            self.unparseable += 1

    def snapshot(self) -> dict[str, Any]:
        return {
            "connects": self.connects,
            "open_streams": self.open_streams,
            "reconnects": dict(self.reconnects),
            "events": dict(self.events),
            "unparseable": self.unparseable,
            "bytes_received": self.bytes_received,
            "last_byte_at": self.last_byte_at,
        }
