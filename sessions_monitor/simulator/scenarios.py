"""Seeded meeting scenarios: pure data, generated from a `random.Random`.

A scenario is a list of steps; each step happens `after` scenario-seconds after the previous
one (the simulator divides by its speed factor). Same seed and index -> same scenario.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

PLATFORMS = ("teams", "zoom", "google_meet", "webex")
STATUSES = (
    "initializing",
    "joining",
    "waiting",
    "active",
    "recording",
    "leaving",
    "completed",
    "failed",
)
ACTIVE_SET = frozenset({"initializing", "joining", "active", "recording"})

PARTICIPANT_NAMES = (
    "Alice Johnson",
    "Zoë Müller",
    "Łukasz Nowak",
    "José García",
    "李雷",
    "Priya Patel",
    "Seán O'Brien",
    "Anaïs Dubois",
    "Søren Hansen",
    "Oluwaseun Adeyemi",
    "Björn Svensson",
    "田中 美咲",
    "Giulia Rossi",
    "Ahmed Hassan",
    "Иван Петров",
    "Κώστας Παπαδόπουλος",
    "Chloé Martin",
    "Mateo Fernández",
    "Ngozi Okafor",
    "Rin 🌸",
    "Dr. Sarah Lee",
    "Tomás Ó Súilleabháin",
    "Nguyễn Văn An",
    "Fatima Zahra",
)
BOT_NAMES = ("Meeting Buddy", "Notetaker", "Acme Recorder", "Freddy", "Minutes Bot")
TEAMS = ("acme", "globex", "initech", "umbrella", "hooli", "stark")

FAILURES: dict[str, tuple[str, str]] = {
    "invalid_link": (
        "INVALID_MEETING_LINK",
        "The meeting link is invalid or the meeting does not exist",
    ),
    "launch_failed": ("BOT_LAUNCH_FAILED", "The meeting bot could not be started"),
    "join_timeout": ("JOIN_TIMEOUT", "Bot could not join the meeting within 120 seconds"),
    "waiting_room": ("WAITING_ROOM_TIMEOUT", "Bot was not admitted from the waiting room"),
    "removed": ("REMOVED_BY_HOST", "Bot was removed from the meeting by the host"),
    "meeting_ended": (
        "MEETING_ENDED_UNEXPECTEDLY",
        "The meeting ended unexpectedly while the bot was recording",
    ),
    "audio": ("AUDIO_CAPTURE_FAILED", "No audio could be captured from the meeting"),
}

# (kind, weight): ordinary meetings dominate; every failure stage shows up regularly.
KINDS: tuple[tuple[str, float], ...] = (
    ("ordinary", 0.52),
    ("long", 0.10),
    ("waiting_room", 0.08),
    ("invalid_link", 0.06),
    ("launch_failed", 0.03),
    ("join_timeout", 0.04),
    ("removed", 0.07),
    ("meeting_ended", 0.06),
    ("audio", 0.04),
)


@dataclass(frozen=True, slots=True)
class Step:
    """One scripted happening: a status change, a join or a leave (exactly one)."""

    after: float = 0.0
    status: str | None = None
    join: str | None = None
    leave: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    timestamp: datetime | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    kind: str
    platform: str
    meeting_link: str
    bot_name: str
    steps: tuple[Step, ...] = field(default_factory=tuple)

    @property
    def duration(self) -> float:
        return sum(step.after for step in self.steps)


def format_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with a `Z`, whole seconds: the provider example's format."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def step_from_dict(data: Mapping[str, Any], *, allow_after: bool = True) -> Step:
    """Validate one control-API step; raises ValueError with a readable message."""
    if not isinstance(data, Mapping):
        raise ValueError("a step must be a JSON object")
    known = {"after", "status", "join", "leave", "error_code", "error_message", "timestamp"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown step fields: {', '.join(unknown)}")
    kinds = [key for key in ("status", "join", "leave") if data.get(key) is not None]
    if len(kinds) != 1:
        raise ValueError("a step needs exactly one of 'status', 'join', 'leave'")
    for key in ("status", "join", "leave", "error_code", "error_message"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise ValueError(f"'{key}' must be a string")
    if kinds[0] != "status" and (data.get("error_code") or data.get("error_message")):
        raise ValueError("'error_code'/'error_message' belong to status steps")
    after = data.get("after", 0.0)
    if "after" in data and not allow_after:
        raise ValueError("'after' is not allowed here")
    if isinstance(after, bool) or not isinstance(after, int | float) or after < 0:
        raise ValueError("'after' must be a number >= 0")
    timestamp = None
    if data.get("timestamp") is not None:
        if not isinstance(data["timestamp"], str):
            raise ValueError("'timestamp' must be an ISO 8601 string")
        try:
            timestamp = parse_timestamp(data["timestamp"])
        except ValueError:
            raise ValueError("'timestamp' must be an ISO 8601 string") from None
    return Step(
        after=float(after),
        status=data.get("status"),
        join=data.get("join"),
        leave=data.get("leave"),
        error_code=data.get("error_code"),
        error_message=data.get("error_message"),
        timestamp=timestamp,
    )


def detect_platform(meeting_link: str) -> str | None:
    """The platform of an HTTPS meeting link, or None when it is not a supported one."""
    try:
        parts = urlsplit(meeting_link)
    except ValueError:
        return None
    host = (parts.hostname or "").lower()
    if parts.scheme != "https" or not host:
        return None
    if host in ("teams.microsoft.com", "teams.live.com"):
        return "teams"
    if host == "zoom.us" or host.endswith(".zoom.us"):
        return "zoom"
    if host == "meet.google.com":
        return "google_meet"
    if host == "webex.com" or host.endswith(".webex.com"):
        return "webex"
    return None


def session_id_for(rng: random.Random) -> str:
    return f"mbsess_{rng.getrandbits(48):012x}"


def meeting_link_for(rng: random.Random, platform: str) -> str:
    if platform == "teams":
        token = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=24))
        return f"https://teams.microsoft.com/l/meetup-join/19%3ameeting_{token}%40thread.v2/0"
    if platform == "zoom":
        return f"https://zoom.us/j/{rng.randrange(10**9, 10**11)}"
    if platform == "google_meet":
        letters = "abcdefghijklmnopqrstuvwxyz"
        code = "-".join("".join(rng.choices(letters, k=n)) for n in (3, 4, 3))
        return f"https://meet.google.com/{code}"
    name = rng.choice(("standup", "design-review", "all-hands", "sprint-planning", "1on1"))
    return f"https://{rng.choice(TEAMS)}.webex.com/meet/{name}"


def choose_kind(rng: random.Random) -> str:
    kinds = [kind for kind, _ in KINDS]
    weights = [weight for _, weight in KINDS]
    return rng.choices(kinds, weights=weights, k=1)[0]


def generate_scenario(
    rng: random.Random,
    *,
    kind: str | None = None,
    platform: str | None = None,
    meeting_link: str | None = None,
    bot_name: str | None = None,
) -> Scenario:
    """A whole meeting's life, drawn from `rng` (the only source of randomness)."""
    kind = kind or choose_kind(rng)
    platform = platform or rng.choice(PLATFORMS)
    meeting_link = meeting_link or meeting_link_for(rng, platform)
    bot_name = bot_name or rng.choice(BOT_NAMES)
    timeline = _timeline(rng, kind)
    return Scenario(kind, platform, meeting_link, bot_name, _relative(timeline))


def _relative(timeline: list[tuple[float, Step]]) -> tuple[Step, ...]:
    """Absolute scenario times -> steps with `after` relative to the previous step."""
    steps: list[Step] = []
    previous = 0.0
    for at, step in sorted(timeline, key=lambda item: item[0]):
        steps.append(
            Step(
                after=round(at - previous, 3),
                status=step.status,
                join=step.join,
                leave=step.leave,
                error_code=step.error_code,
                error_message=step.error_message,
            )
        )
        previous = at
    return tuple(steps)


def _status(status: str) -> Step:
    return Step(status=status)


def _failure(kind: str) -> Step:
    code, message = FAILURES[kind]
    return Step(status="failed", error_code=code, error_message=message)


def _timeline(rng: random.Random, kind: str) -> list[tuple[float, Step]]:
    events: list[tuple[float, Step]] = []
    t = rng.uniform(1.0, 3.0)
    if kind == "launch_failed":
        return [(t + rng.uniform(1.0, 4.0), _failure(kind))]
    events.append((t, _status("joining")))
    if kind in ("invalid_link", "join_timeout"):
        wait = rng.uniform(2.0, 5.0) if kind == "invalid_link" else rng.uniform(20.0, 40.0)
        return [*events, (t + wait, _failure(kind))]
    if kind == "waiting_room" or rng.random() < 0.2:
        t += rng.uniform(1.0, 3.0)
        events.append((t, _status("waiting")))
        if kind == "waiting_room":
            return [*events, (t + rng.uniform(20.0, 45.0), _failure(kind))]
        t += rng.uniform(3.0, 12.0)
    else:
        t += rng.uniform(2.0, 6.0)
    events.append((t, _status("active")))
    if kind == "audio":
        return [*events, (t + rng.uniform(5.0, 20.0), _failure(kind))]
    t += rng.uniform(1.0, 3.0)
    events.append((t, _status("recording")))
    if kind == "long":
        duration = rng.uniform(900.0, 2400.0)
    elif kind in ("removed", "meeting_ended"):
        duration = rng.uniform(20.0, 120.0)
    else:
        duration = rng.uniform(60.0, 360.0)
    end = t + duration
    ends_abruptly = kind in ("removed", "meeting_ended")
    events.extend(_participants(rng, start=t, end=end, everyone_leaves=not ends_abruptly))
    if ends_abruptly:
        return [*events, (end, _failure(kind))]
    t = end + rng.uniform(1.0, 3.0)
    events.append((t, _status("leaving")))
    events.append((t + rng.uniform(1.0, 3.0), _status("completed")))
    return events


def _participants(
    rng: random.Random, *, start: float, end: float, everyone_leaves: bool
) -> list[tuple[float, Step]]:
    """Joins, leaves and rejoins of a few people between `start` and `end`."""
    events: list[tuple[float, Step]] = []
    span = end - start
    for name in rng.sample(PARTICIPANT_NAMES, rng.randint(2, 6)):
        joined = start + rng.uniform(0.5, max(1.0, span * 0.3))
        events.append((joined, Step(join=name)))
        if rng.random() < 0.25:  # drops out and comes back
            left = joined + rng.uniform(5.0, max(6.0, span * 0.3))
            back = left + rng.uniform(3.0, 30.0)
            if back < end - 1.0:
                events.append((left, Step(leave=name)))
                events.append((back, Step(join=name)))
        if rng.random() < 0.15 and everyone_leaves:  # leaves early for good
            gone = joined + rng.uniform(span * 0.5, span * 0.8)
            if gone < end - 1.0 and all(at < gone for at, s in events if s.join == name):
                events.append((gone, Step(leave=name)))
                continue
        if everyone_leaves:
            last_join = max(at for at, s in events if s.join == name)
            gone = max(end - rng.uniform(0.0, min(10.0, span * 0.1)), last_join + 0.5)
            events.append((gone, Step(leave=name)))
    return events
