"""Fault knobs for the status stream, settable from Python (`Simulator.faults`) or over HTTP.

Knobs live in a `FaultState`, either global or for one session (a session's own state, when
it has one, replaces the global one for its streams). Counters ("next K") are consumed as
streams use them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

from .sse import NEWLINES, LineEnding

FAULT_FIELDS = (
    "drop_after_events",
    "drop_times",
    "stall",
    "fail_next",
    "malformed_next",
    "unknown_event_next",
    "chunk_size",
    "chunk_delay",
    "line_ending",
    "send_ids",
    "wrong_content_type_next",
    "retry_ms",
    "ended_as_404",
    "control_fail_next",
)


@dataclass(slots=True)
class FailNext:
    count: int
    status: int = 503
    retry_after: int | None = 1
    envelope: bool = True


@dataclass(slots=True)
class FaultState:
    drop_after_events: int | None = None
    drop_times: int | None = None  # None = drop every connection, else only the next N
    stall_until: float = 0.0  # time.monotonic() deadline; 0 = no stall
    stall_keepalives: bool = True
    fail_next: FailNext | None = None
    malformed_next: int = 0
    unknown_event_next: int = 0
    chunk_size: int | None = None
    chunk_delay: float = 0.001
    line_ending: LineEnding = "lf"
    send_ids: bool = False
    wrong_content_type_next: int = 0
    retry_ms: int | None = None  # send `retry: N` first on every connection
    ended_as_404: bool = False  # ended sessions answer 404 instead of final status + close
    control_fail_next: FailNext | None = None  # start/stop answer this error instead

    def update(self, knobs: Mapping[str, Any]) -> None:
        """Apply control-API knobs; raises ValueError on anything malformed (and then applies
        none of them)."""
        unknown = sorted(set(knobs) - set(FAULT_FIELDS))
        if unknown:
            raise ValueError(f"unknown fault knobs: {', '.join(unknown)}")
        parsed = {key: _KNOB_PARSERS[key](knobs, key) for key in knobs}
        for key, value in parsed.items():
            if key == "stall":
                self.stall_until, self.stall_keepalives = value
            else:
                setattr(self, key, value)

    def stall_remaining(self) -> float:
        return max(0.0, self.stall_until - time.monotonic())

    def take_fail(self) -> FailNext | None:
        if self.fail_next is None or self.fail_next.count <= 0:
            return None
        self.fail_next.count -= 1
        return self.fail_next

    def take_control_fail(self) -> FailNext | None:
        """The injected error for the next start or stop call, if one is left."""
        fail = self.control_fail_next
        if fail is None or fail.count <= 0:
            return None
        fail.count -= 1
        return fail

    def take_wrong_content_type(self) -> bool:
        return self._take("wrong_content_type_next")

    def take_malformed(self) -> bool:
        return self._take("malformed_next")

    def take_unknown_event(self) -> bool:
        return self._take("unknown_event_next")

    def should_drop(self, events_sent: int) -> bool:
        """True once a connection has sent `drop_after_events` events (consumes a drop)."""
        if self.drop_after_events is None or events_sent < self.drop_after_events:
            return False
        if self.drop_times is None:
            return True
        self.drop_times -= 1
        if self.drop_times <= 0:
            self.drop_after_events = self.drop_times = None
        return True

    def _take(self, counter: str) -> bool:
        remaining = int(getattr(self, counter))
        if remaining <= 0:
            return False
        setattr(self, counter, remaining - 1)
        return True

    def describe(self) -> dict[str, Any]:
        return {
            "drop_after_events": self.drop_after_events,
            "drop_times": self.drop_times,
            "stall": {
                "seconds": round(self.stall_remaining(), 3),
                "keepalives": self.stall_keepalives,
            }
            if self.stall_remaining()
            else None,
            "fail_next": _describe_fail(self.fail_next),
            "malformed_next": self.malformed_next,
            "unknown_event_next": self.unknown_event_next,
            "chunk_size": self.chunk_size,
            "chunk_delay": self.chunk_delay,
            "line_ending": self.line_ending,
            "send_ids": self.send_ids,
            "wrong_content_type_next": self.wrong_content_type_next,
            "retry_ms": self.retry_ms,
            "ended_as_404": self.ended_as_404,
            "control_fail_next": _describe_fail(self.control_fail_next),
        }


@dataclass(slots=True)
class Faults:
    """The simulator's fault registry: a global state plus optional per-session states."""

    global_state: FaultState = field(default_factory=FaultState)
    per_session: dict[str, FaultState] = field(default_factory=dict)

    def for_session(self, session_id: str) -> FaultState:
        return self.per_session.get(session_id, self.global_state)

    def set(self, session_id: str | None = None, **knobs: Any) -> FaultState:
        """Merge `knobs` into the global state, or into `session_id`'s own state."""
        if session_id is None:
            state = self.global_state
        else:
            state = self.per_session.setdefault(session_id, FaultState())
        state.update(knobs)
        return state

    def reset(self, session_id: str | None = None) -> None:
        if session_id is None:
            self.global_state = FaultState()
            self.per_session.clear()
        else:
            self.per_session.pop(session_id, None)

    def describe(self) -> dict[str, Any]:
        return {
            "global": self.global_state.describe(),
            "sessions": {sid: state.describe() for sid, state in self.per_session.items()},
        }


def _optional_int(knobs: Mapping[str, Any], key: str, *, minimum: int) -> int | None:
    value = knobs[key]
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"'{key}' must be an integer >= {minimum} or null")
    return int(value)


def _describe_fail(fail: FailNext | None) -> dict[str, Any] | None:
    if fail is None or fail.count <= 0:
        return None
    return {
        "count": fail.count,
        "status": fail.status,
        "retry_after": fail.retry_after,
        "envelope": fail.envelope,
    }


def _fail_next(value: Any, key: str = "fail_next") -> FailNext | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"'{key}' must be an object")
    count = value.get("count", 1)
    status = value.get("status", 503)
    retry_after = value.get("retry_after", 1)
    envelope = value.get("envelope", True)
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValueError(f"'{key}.count' must be an integer >= 0")
    if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
        raise ValueError(f"'{key}.status' must be an HTTP error status (400-599)")
    if retry_after is not None and (
        isinstance(retry_after, bool) or not isinstance(retry_after, int) or retry_after < 0
    ):
        raise ValueError(f"'{key}.retry_after' must be an integer >= 0 or null")
    if not isinstance(envelope, bool):
        raise ValueError(f"'{key}.envelope' must be true or false")
    return FailNext(count=count, status=status, retry_after=retry_after, envelope=envelope)


def _stall(knobs: Mapping[str, Any], key: str) -> tuple[float, bool]:
    """(monotonic deadline, keepalives while stalled); null clears the stall."""
    stall = knobs[key]
    if stall is None:
        return 0.0, True
    if not isinstance(stall, Mapping) or not isinstance(stall.get("seconds"), int | float):
        raise ValueError('\'stall\' must be {"seconds": number, "keepalives": bool}')
    keepalives = stall.get("keepalives", True)
    if not isinstance(keepalives, bool):
        raise ValueError("'stall.keepalives' must be true or false")
    return time.monotonic() + max(0.0, float(stall["seconds"])), keepalives


def _count(knobs: Mapping[str, Any], key: str) -> int:
    return _optional_int(knobs, key, minimum=0) or 0


def _at_least_one(knobs: Mapping[str, Any], key: str) -> int | None:
    return _optional_int(knobs, key, minimum=1)


def _milliseconds(knobs: Mapping[str, Any], key: str) -> int | None:
    return _optional_int(knobs, key, minimum=0)


def _seconds(knobs: Mapping[str, Any], key: str) -> float:
    value = knobs[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"'{key}' must be a number >= 0")
    return float(value)


def _line_ending(knobs: Mapping[str, Any], key: str) -> LineEnding:
    if knobs[key] not in NEWLINES:
        raise ValueError(f"'{key}' must be one of lf, crlf, cr")
    return cast(LineEnding, knobs[key])


def _flag(knobs: Mapping[str, Any], key: str) -> bool:
    if not isinstance(knobs[key], bool):
        raise ValueError(f"'{key}' must be true or false")
    return bool(knobs[key])


_KNOB_PARSERS: dict[str, Callable[[Mapping[str, Any], str], Any]] = {
    "drop_after_events": _at_least_one,
    "drop_times": _at_least_one,
    "stall": _stall,
    "fail_next": lambda knobs, key: _fail_next(knobs[key]),
    "control_fail_next": lambda knobs, key: _fail_next(knobs[key], key),
    "malformed_next": _count,
    "unknown_event_next": _count,
    "wrong_content_type_next": _count,
    "chunk_size": _at_least_one,
    "chunk_delay": _seconds,
    "line_ending": _line_ending,
    "send_ids": _flag,
    "ended_as_404": _flag,
    "retry_ms": _milliseconds,
}
