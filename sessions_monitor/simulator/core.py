"""The simulator's state and clock: sessions, their scripts, subscribers and arrivals.

Everything runs on one asyncio loop (daphne's). Scripts advance on a single clock task;
`speed` divides every scripted delay. Same seed -> same session ids and scenarios.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import time
from collections import Counter, defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sessions_monitor.upstream.ids import SESSION_ID_PATTERN, is_valid_session_id

from .app import SimulatorApp
from .faults import Faults
from .model import CLOSE_DATA, SessionConflict, SimSession, StreamEvent
from .scenarios import Scenario, Step, detect_platform, generate_scenario, session_id_for
from .transcripts import TranscriptTrack

logger = logging.getLogger("meetingdash.simulator")

ARRIVAL_MEAN_SECONDS = 20.0
MAX_SESSIONS = 200


@dataclass(slots=True, eq=False)
class Subscription:
    """One open stream: `initial` is written first, then whatever arrives on `queue`.

    A `None` on the queue means "end now" (client gone or simulator stopping).
    """

    session_id: str
    initial: list[StreamEvent]
    queue: asyncio.Queue[StreamEvent | None] = field(default_factory=asyncio.Queue)
    live: bool = True


@dataclass(slots=True)
class Stats:
    stream_connections_total: Counter[str] = field(default_factory=Counter)
    open_streams: Counter[str] = field(default_factory=Counter)
    requests_total: int = 0
    # GET …/transcripts per session: one poller per live session, whoever is watching.
    transcript_requests: Counter[str] = field(default_factory=Counter)
    # GET …/sessions/{id} per id asked for, known or not (look-ups of unknown ids, snapshots).
    session_reads: Counter[str] = field(default_factory=Counter)
    # Per session, the seqs of events written to at least one open stream (fault drills
    # tell "the upstream delivered it" from "nobody was connected").
    delivered: defaultdict[str, set[int]] = field(default_factory=lambda: defaultdict(set))

    def to_json(self) -> dict[str, Any]:
        return {
            "stream_connections_total": dict(self.stream_connections_total),
            "open_streams": {sid: n for sid, n in self.open_streams.items() if n > 0},
            "requests_total": self.requests_total,
            "transcript_requests": dict(self.transcript_requests),
            "session_reads": dict(self.session_reads),
            "delivered": {sid: sorted(seqs) for sid, seqs in self.delivered.items()},
        }


class Simulator:
    """A faithful stand-in for the Meeting Buddy API (upstream-api.md), served by daphne."""

    name = "simulator"

    def __init__(
        self,
        *,
        seed: int = 0,
        speed: float = 1.0,
        initial_sessions: int = 5,
        keepalive_seconds: float = 15.0,
        token: str | None = None,
        arrivals: bool = True,
        control: bool = True,
        max_sessions: int = MAX_SESSIONS,
    ) -> None:
        if speed <= 0:
            raise ValueError("speed must be > 0")
        if keepalive_seconds <= 0:
            raise ValueError("keepalive_seconds must be > 0")
        self.seed = seed
        self.speed = speed
        self.initial_sessions = initial_sessions
        self.keepalive_seconds = keepalive_seconds
        self.token = token or None
        self.arrivals = arrivals
        self.control = control
        self.max_sessions = max_sessions
        self.max_live = max(initial_sessions, 4) + 3
        self.faults = Faults()
        self.stats = Stats()
        self._sessions: dict[str, SimSession] = {}
        self._scripts: dict[str, deque[Step]] = {}
        self._due: dict[str, float] = {}
        self._subscribers: dict[str, set[Subscription]] = {}
        self._generated = 0
        self._api_created = 0
        self._arrival_rng = random.Random(f"{seed}:arrivals")
        self._next_arrival: float | None = None
        self._wake: asyncio.Event | None = None
        self._clock: asyncio.Task[None] | None = None
        self.asgi_app = SimulatorApp(self)

    @classmethod
    def from_environment(cls) -> Simulator:
        """Settings for the simulator embedded in `serve` (MEETINGDASH_SIMULATOR_*)."""
        from django.conf import settings

        control = bool(settings.DEBUG) or os.getenv("MEETINGDASH_SIMULATOR_CONTROL") == "1"
        return cls(
            # A fresh seed per start unless pinned: a fixed one would replay the same
            # session ids into a database that already holds them from the last demo.
            seed=int(os.getenv("MEETINGDASH_SIMULATOR_SEED") or secrets.randbits(32)),
            speed=float(os.getenv("MEETINGDASH_SIMULATOR_SPEED", "1")),
            initial_sessions=int(os.getenv("MEETINGDASH_SIMULATOR_SESSIONS", "5")),
            keepalive_seconds=float(os.getenv("MEETINGDASH_SIMULATOR_KEEPALIVE", "15")),
            token=settings.MEETINGDASH_SIMULATOR_TOKEN or None,
            control=control,
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        if self._clock is not None:
            return
        self._wake = asyncio.Event()
        for _ in range(self.initial_sessions):
            rng = self._next_generated_rng()
            self._add_scenario(generate_scenario(rng), rng, fast_forward=True)
        if self.arrivals:
            self._schedule_arrival(time.monotonic())
        self._clock = asyncio.get_running_loop().create_task(
            self._run_clock(), name="simulator-clock"
        )

    async def stop(self) -> None:
        clock, self._clock = self._clock, None
        if clock is not None:
            clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await clock
        for subscriptions in self._subscribers.values():
            for subscription in subscriptions:
                subscription.queue.put_nowait(None)
        self._subscribers.clear()

    # -- reading -----------------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC)

    def get(self, session_id: str) -> SimSession | None:
        return self._sessions.get(session_id)

    def sessions(self, *, status: str | None = None, search: str | None = None) -> list[SimSession]:
        """Newest first, optionally filtered (search: link, bot name, id, platform)."""
        needle = (search or "").casefold()
        found = [
            session
            for session in reversed(self._sessions.values())
            if (status is None or session.status == status)
            and (
                not needle
                or any(
                    needle in value.casefold()
                    for value in (
                        session.meeting_link,
                        session.bot_name,
                        session.session_id,
                        session.platform,
                    )
                )
            )
        ]
        return found

    def active_sessions(self) -> list[SimSession]:
        return [session for session in reversed(self._sessions.values()) if session.is_active]

    def transcript(self, session_id: str) -> list[dict[str, Any]] | None:
        """Every segment so far, ordered by `start_time` (None: no such session)."""
        session = self._sessions.get(session_id)
        if session is None:
            return None
        session.transcript.advance(session, self.now())
        return sorted(session.transcript.segments, key=lambda segment: segment["start_time"])

    def script_of(self, session_id: str) -> list[Step]:
        return list(self._scripts.get(session_id, ()))

    # -- creating and changing sessions ------------------------------------------------

    def create_session(
        self,
        *,
        session_id: str | None = None,
        meeting_link: str | None = None,
        bot_name: str | None = None,
        platform: str | None = None,
        script: Iterable[Step] | None = None,
        manual: bool = False,
        transcription_enabled: bool = True,
        transcription_language: str = "en",
        metadata: dict[str, Any] | None = None,
    ) -> SimSession:
        """A new session in `initializing`, running `script` (default: a generated one)."""
        if session_id is not None and not is_valid_session_id(session_id):
            raise ValueError(f"session_id must match {SESSION_ID_PATTERN}")
        if session_id is not None and session_id in self._sessions:
            raise SessionConflict(f"session {session_id} already exists")
        self._api_created += 1
        rng = random.Random(f"{self.seed}:api:{self._api_created}")
        platform = platform or (detect_platform(meeting_link) if meeting_link else None)
        scenario = generate_scenario(
            rng, platform=platform, meeting_link=meeting_link, bot_name=bot_name
        )
        if manual or script is not None:
            scenario = Scenario(
                "manual" if manual else "scripted",
                scenario.platform,
                scenario.meeting_link,
                scenario.bot_name,
                tuple(script or ()),
            )
        session = self._add_scenario(
            scenario,
            rng,
            session_id=session_id,
            transcription_enabled=transcription_enabled,
            transcription_language=transcription_language,
        )
        session.metadata.update(metadata or {})
        return session

    def apply_step(self, session_id: str, step: Step) -> list[StreamEvent]:
        """Apply `step` now (or at its own timestamp) and publish the events."""
        session = self._require(session_id)
        if session.is_terminal:
            raise SessionConflict(f"session {session_id} has already ended ({session.status})")
        events = session.apply(step, step.timestamp or self.now())
        self._publish(session, events)
        return events

    def stop_session(self, session_id: str) -> SimSession:
        """Graceful, idempotent stop: `leaving` then `completed`; terminal stays as it is."""
        session = self._require(session_id)
        if session.is_terminal:
            return session
        self._scripts.pop(session_id, None)
        self._due.pop(session_id, None)
        if session.status != "leaving":
            self.apply_step(session_id, Step(status="leaving"))
        self.apply_step(session_id, Step(status="completed"))
        return session

    def forget(self, session_id: str) -> bool:
        """As if the upstream lost the session: it answers 404 from now on, and its open
        streams end (cut, without `close`). True when it existed."""
        session = self._sessions.pop(session_id, None)
        self._scripts.pop(session_id, None)
        self._due.pop(session_id, None)
        for subscription in self._subscribers.pop(session_id, set()):
            subscription.queue.put_nowait(None)
        return session is not None

    def _require(self, session_id: str) -> SimSession:
        session = self._sessions.get(session_id)
        if session is None:
            raise KeyError(session_id)
        return session

    def _next_generated_rng(self) -> random.Random:
        self._generated += 1
        return random.Random(f"{self.seed}:{self._generated}")

    def _add_scenario(
        self,
        scenario: Scenario,
        rng: random.Random,
        *,
        session_id: str | None = None,
        fast_forward: bool = False,
        transcription_enabled: bool = True,
        transcription_language: str = "en",
    ) -> SimSession:
        session_id = session_id or session_id_for(rng)
        while session_id in self._sessions:
            session_id = session_id_for(rng)
        elapsed = rng.uniform(0.0, scenario.duration * 1.3) if fast_forward else 0.0
        now, mono = self.now(), time.monotonic()
        created = now - timedelta(seconds=elapsed / self.speed)
        session = SimSession(
            session_id=session_id,
            meeting_link=scenario.meeting_link,
            platform=scenario.platform,
            bot_name=scenario.bot_name,
            created_at=created,
            kind=scenario.kind,
            transcription_enabled=transcription_enabled,
            transcription_language=transcription_language,
            transcript=TranscriptTrack(speed=self.speed),
        )
        self._sessions[session_id] = session
        script = deque(scenario.steps)
        at = 0.0
        while script and at + script[0].after <= elapsed:
            step = script.popleft()
            at += step.after
            session.apply(step, created + timedelta(seconds=at / self.speed))
        if script:
            self._scripts[session_id] = script
            self._due[session_id] = mono + (at + script[0].after - elapsed) / self.speed
            self._wake_clock()
        self._forget_old()
        return session

    def _forget_old(self) -> None:
        """Keep at most `max_sessions`: drop the oldest ended ones nobody is watching."""
        excess = len(self._sessions) - self.max_sessions
        if excess <= 0:
            return
        for session_id in [
            sid
            for sid, session in self._sessions.items()
            if session.is_terminal and not self._subscribers.get(sid)
        ][:excess]:
            del self._sessions[session_id]

    # -- subscribers -------------------------------------------------------------------

    def subscribe(self, session_id: str, *, last_event_id: int | None = None) -> Subscription:
        """Current status first (or a replay after `last_event_id`), then live events."""
        session = self._require(session_id)
        initial = self._replay(session, last_event_id)
        if initial is None:
            initial = [StreamEvent(session.last_seq, "status", session.snapshot())]
        if session.is_terminal:
            if not initial or initial[-1].name != "close":
                initial.append(StreamEvent(session.last_seq, "close", dict(CLOSE_DATA)))
            return Subscription(session_id, initial, live=False)
        subscription = Subscription(session_id, initial)
        self._subscribers.setdefault(session_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        subscriptions = self._subscribers.get(subscription.session_id)
        if subscriptions is not None:
            subscriptions.discard(subscription)
            if not subscriptions:
                del self._subscribers[subscription.session_id]

    def _replay(self, session: SimSession, last_event_id: int | None) -> list[StreamEvent] | None:
        if last_event_id is None or not self.faults.for_session(session.session_id).send_ids:
            return None
        if not session.history or last_event_id < session.history[0].seq - 1:
            return None
        if last_event_id > session.last_seq:
            return None
        return [event for event in session.history if event.seq > last_event_id]

    def _publish(self, session: SimSession, events: list[StreamEvent]) -> None:
        subscriptions = self._subscribers.get(session.session_id, set())
        for subscription in subscriptions:
            for event in events:
                subscription.queue.put_nowait(event)
        if session.is_terminal:
            self._subscribers.pop(session.session_id, None)
            self._scripts.pop(session.session_id, None)
            self._due.pop(session.session_id, None)

    # -- the clock ---------------------------------------------------------------------

    def _wake_clock(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _run_clock(self) -> None:
        assert self._wake is not None
        while True:
            try:
                self._advance(time.monotonic())
            except Exception:  # one broken script must not stop the demo
                logger.exception("simulator clock step failed")
            self._wake.clear()
            deadline = min(self._due.values(), default=None)
            if self._next_arrival is not None:
                deadline = min(deadline or self._next_arrival, self._next_arrival)
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)

    def _advance(self, mono: float) -> None:
        wall = self.now()
        for session_id, due in sorted(self._due.items(), key=lambda item: item[1]):
            while due <= mono and session_id in self._scripts:
                script = self._scripts[session_id]
                step = script.popleft()
                at = wall - timedelta(seconds=mono - due)
                session = self._sessions[session_id]
                self._publish(session, session.apply(step, step.timestamp or at))
                if not script or session_id not in self._scripts:
                    self._scripts.pop(session_id, None)
                    self._due.pop(session_id, None)
                    break
                due += script[0].after / self.speed
                self._due[session_id] = due
        if self._next_arrival is not None and self._next_arrival <= mono:
            live = sum(1 for session in self._sessions.values() if not session.is_terminal)
            if live < self.max_live:
                rng = self._next_generated_rng()
                self._add_scenario(generate_scenario(rng), rng)
            self._schedule_arrival(mono)

    def _schedule_arrival(self, mono: float) -> None:
        delay = self._arrival_rng.expovariate(1.0 / ARRIVAL_MEAN_SECONDS)
        self._next_arrival = mono + min(delay, 4 * ARRIVAL_MEAN_SECONDS) / self.speed
