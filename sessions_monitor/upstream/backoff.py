"""Reconnect delays: capped exponential backoff with full jitter."""

from __future__ import annotations

import random
from dataclasses import dataclass

_MAX_EXPONENT = 60  # 2**60 * initial is far past any cap; avoids float overflow


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """`initial` and `cap` in seconds; the attempt count restarts at 0 once a connection
    stayed live for `reset_after_healthy` seconds.

    Full jitter (a uniform draw in [0, min(cap, initial * 2**attempt)]) spreads the
    reconnects of many streams that failed together. A server-given pause (`Retry-After`,
    `retry:`) is a floor the jitter is added to, so we never come back earlier than asked
    and still do not all come back at the same instant.
    """

    initial: float = 1.0
    cap: float = 30.0
    reset_after_healthy: float = 60.0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.cap < self.initial or self.reset_after_healthy < 0:
            raise ValueError(f"invalid backoff policy: {self!r}")

    def ceiling(self, attempt: int) -> float:
        return min(self.cap, self.initial * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))

    def delay(self, attempt: int, *, floor: float = 0.0, rng: random.Random | None = None) -> float:
        draw = (rng or random).uniform(0.0, self.ceiling(attempt))
        return max(floor, 0.0) + draw
