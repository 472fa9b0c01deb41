"""How the dashboard shows things: labels, tones, durations, freshness, the detail page.

Plain functions over plain values, so templates only format and every rule here has a unit
test (`tests/test_presentation.py`). No reads: `selectors` reads and builds these values,
`timeline` turns them into the SVG geometry.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.conf import settings
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from sessions_monitor.models import EventKind
from sessions_monitor.upstream import TERMINAL_STATUSES

if TYPE_CHECKING:
    from sessions_monitor.timeline import TimelineGeometry

# --- statuses -----------------------------------------------------------------------------

# status -> (label, tone). Tones map to CSS classes `tone-<tone>`; the label is always shown,
# so colour never carries the meaning alone.
_STATUSES: dict[str, tuple[str, str]] = {
    "initializing": ("Initializing", "pending"),
    "joining": ("Joining", "pending"),
    "waiting": ("In waiting room", "pending"),
    "active": ("In meeting", "live"),
    "recording": ("Recording", "live"),
    "leaving": ("Leaving", "pending"),
    "completed": ("Completed", "done"),
    "failed": ("Failed", "bad"),
}

FILTERS: dict[str, str] = {
    "live": "Live",
    "attention": "Needs attention",
    "ended": "Ended",
    "failed": "Failed",
    "all": "All",
}
LOST_CONTACT = "failed"  # the stream_state of a link that will not come back by itself


def status_label(status: str) -> str:
    if not status:
        return "Unknown"
    known = _STATUSES.get(status)
    return known[0] if known else status.replace("_", " ").capitalize()


def status_tone(status: str) -> str:
    known = _STATUSES.get(status)
    return known[1] if known else "unknown"


def status_category(status: str, stream_state: str = "") -> str:
    """Which list filter a session belongs to: `live`, `attention` (not ended, but its link
    failed for good: nobody will tell us when it ends), `ended` or `failed`."""
    if status == "failed":
        return "failed"
    if status in TERMINAL_STATUSES:
        return "ended"
    if stream_state == LOST_CONTACT:
        return "attention"
    return "live"


def matches_filter(status: str, filter_name: str, stream_state: str = "") -> bool:
    if filter_name == "all":
        return True
    if filter_name == "ended":
        return status in TERMINAL_STATUSES
    return status_category(status, stream_state) == filter_name


# --- platforms and links ------------------------------------------------------------------

_PLATFORMS = {
    "teams": "Microsoft Teams",
    "msteams": "Microsoft Teams",
    "zoom": "Zoom",
    "google_meet": "Google Meet",
    "meet": "Google Meet",
    "webex": "Webex",
}


def platform_label(platform: str) -> str:
    if not platform:
        return "Unknown platform"
    return _PLATFORMS.get(platform.lower(), platform.replace("_", " ").title())


def link_host(url: str) -> str:
    """The host of a meeting link, for a compact column; '' when there is none."""
    try:
        host = urlsplit(url.strip()).hostname
    except ValueError:
        return ""
    return host or ""


# --- time ---------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    """`45 s`, `3 min 05 s`, `1 h 02 min`, `2 d 3 h`; `—` when unknown."""
    if seconds is None:
        return "—"
    total = max(0, int(seconds))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def format_age(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = (now - moment).total_seconds()
    if seconds < 2:
        return "just now"
    return f"{format_duration(seconds)} ago"


def clock(moment: datetime | None) -> str:
    """HH:MM:SS in the site's time zone."""
    if moment is None:
        return "—"
    return timezone.localtime(moment).strftime("%H:%M:%S")


def session_duration(
    started_at: datetime | None, ended_at: datetime | None, now: datetime
) -> float | None:
    if started_at is None:
        return None
    return ((ended_at or now) - started_at).total_seconds()


def as_datetime(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return parse_datetime(value)


# --- failures -----------------------------------------------------------------------------

FAILURE_EXPLANATIONS: dict[str, str] = {
    "MEETING_NOT_FOUND": "The meeting link does not lead to a meeting: it may have been "
    "mistyped, deleted, or not started yet.",
    "INVALID_MEETING_LINK": "The meeting link is not a valid link for a supported platform "
    "(Microsoft Teams, Zoom, Google Meet, Webex).",
    "UNSUPPORTED_PLATFORM": "The meeting runs on a platform Meeting Buddy cannot join.",
    "MEETING_ENDED": "The meeting had already ended when the bot tried to join.",
    "ADMISSION_DENIED": "Someone in the meeting declined to let the bot in.",
    "ADMISSION_TIMEOUT": "The bot waited in the lobby and nobody admitted it in time.",
    "WAITING_ROOM_TIMEOUT": "The bot waited in the lobby and nobody admitted it in time.",
    "JOIN_TIMEOUT": "The bot could not get into the meeting in time (slow or blocked network, "
    "or the platform did not respond).",
    "AUTHENTICATION_REQUIRED": "The meeting only admits signed-in users of its organization, "
    "so the bot could not join as a guest.",
    "BOT_REMOVED": "A participant or the host removed the bot from the meeting.",
    "REMOVED_BY_HOST": "The host removed the bot from the meeting.",
    "RECORDING_NOT_ALLOWED": "The meeting's settings do not allow recording or transcription.",
    "RECORDING_PERMISSION_DENIED": "The host did not grant permission to record.",
    "AUDIO_RELAY_ERROR": "The bot lost its audio connection and could not restore it.",
    "BOT_LAUNCH_FAILED": "Meeting Buddy could not start a bot for this session, so it never "
    "tried to join. This is on the provider's side; starting the session again usually works.",
    "MEETING_ENDED_UNEXPECTEDLY": "The meeting ended (or everyone was disconnected) while the "
    "bot was still recording; what was captured up to then is kept.",
    "AUDIO_CAPTURE_FAILED": "The bot was in the meeting but could not capture any audio, "
    "for example because the platform blocked it or nobody's audio reached the bot.",
    "CAPACITY_EXCEEDED": "Meeting Buddy had no free bot capacity at the time.",
    "RATE_LIMITED": "Too many sessions were started in a short time; try again later.",
    "INTERNAL_ERROR": "Meeting Buddy had an internal error. Retrying usually helps; if it "
    "keeps happening, report the session id to the provider.",
}

UNKNOWN_FAILURE = (
    "Meeting Buddy did not explain this error code. The upstream message above is the best "
    "information available."
)


def failure_explanation(code: str) -> str:
    return (
        FAILURE_EXPLANATIONS.get(code.strip().upper(), UNKNOWN_FAILURE)
        if code
        else ("The session failed without an error code.")
    )


# --- freshness ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Freshness:
    """One freshness badge: the state, a short text, and whether the data it covers is stale."""

    state: str
    text: str
    tone: str
    stale: bool
    stale_since: datetime | None = None
    retry_at: datetime | None = None
    detail: str = ""
    retry_in: int | None = None


def upstream_freshness(
    stream_state: str,
    *,
    since: datetime | None,
    retry_at: datetime | None,
    error: str = "",
    terminal: bool = False,
    now: datetime,
) -> Freshness:
    """The upstream link badge of one session: live / retrying in N s / stale since / ended /
    lost contact (a permanent error: it will not come back by itself, so it never claims to)."""
    if stream_state == "live":
        return Freshness("live", "Upstream live", "live", False)
    if stream_state == "ended" or terminal:
        return Freshness("ended", "Upstream ended", "done", False)
    if stream_state == LOST_CONTACT:
        return Freshness(
            "failed",
            "Lost contact",
            "bad",
            True,
            stale_since=since,
            detail=lost_contact_reason(error),
        )
    if stream_state == "retrying":
        wait = None if retry_at is None else max(0, round((retry_at - now).total_seconds()))
        text = "Upstream retrying" if wait is None else f"Upstream retrying in {wait} s"
        return Freshness(
            "retrying",
            text,
            "warn",
            True,
            stale_since=since,
            retry_at=retry_at,
            detail=error,
            retry_in=wait,
        )
    if stream_state == "connecting":
        return Freshness("connecting", "Upstream connecting", "warn", True, stale_since=since)
    return Freshness("idle", "Not watched", "unknown", True, stale_since=since)


LOST_CONTACT_REASONS = {
    "not_found": "Meeting Buddy no longer knows this session.",
    "forbidden": "Meeting Buddy does not let MeetingDash's token read this session.",
    "unauthorized": "Meeting Buddy refused MeetingDash's token.",
    "invalid_session_id": "Meeting Buddy says this is not a valid session id.",
}


def lost_contact_reason(error: str) -> str:
    """Plain words for why a link failed for good (`error` is the failure's kind)."""
    kind = error.split(":", 1)[0].strip()
    known = LOST_CONTACT_REASONS.get(kind)
    if known:
        return known
    return (
        f"Meeting Buddy refused the status stream ({error})."
        if error
        else "Meeting Buddy refused the status stream."
    )


_WORST_FIRST = ("retrying", "connecting", "idle", "live", "ended")


def overall_upstream(states: Iterable[Freshness]) -> Freshness:
    """The list page's single upstream badge: the worst link still being retried among the
    given ones. Links that lost contact are counted beside it, never as "coming back"."""
    collected = list(states)
    lost = sum(1 for item in collected if item.state == "failed")
    collected = [item for item in collected if item.state != "failed"]
    overall = _worst(collected)
    if not lost:
        return overall
    suffix = f"{lost} lost contact"
    if overall.state in ("none", "live"):
        return Freshness("lost", suffix, "bad", False, detail="Needs attention: see that filter.")
    return Freshness(
        overall.state,
        f"{overall.text} · {suffix}",
        overall.tone,
        overall.stale,
        overall.stale_since,
        overall.retry_at,
    )


def _worst(collected: list[Freshness]) -> Freshness:
    if not collected:
        return Freshness("none", "Upstream idle: no live session watched", "unknown", False)
    for state in _WORST_FIRST:
        matching = [item for item in collected if item.state == state]
        if not matching:
            continue
        if state in ("live", "ended"):
            return Freshness("live", "Upstream live", "live", False)
        worst = matching[0]
        stale_since = min((m.stale_since for m in matching if m.stale_since), default=None)
        count = len(matching)
        text = worst.text if count == 1 else f"{count} upstream links {worst.state}"
        return Freshness(state, text, worst.tone, True, stale_since, worst.retry_at)
    return Freshness("live", "Upstream live", "live", False)  # pragma: no cover


# --- the detail page ---------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEvent:
    """One stored event as the event log shows it."""

    seq: int
    kind: str
    status: str
    previous_status: str
    participant_name: str
    error_code: str
    error_message: str
    at: datetime
    received_at: datetime
    raw: str
    note: str
    gap_started_at: datetime | None = None
    upstream_at: datetime | None = None  # Meeting Buddy's own timestamp, when it sent one

    @property
    def status_label(self) -> str:
        return status_label(self.status)

    @property
    def kind_label(self) -> str:
        return EventKind(self.kind).label if self.kind in EventKind.values else self.kind

    @property
    def tone(self) -> str:
        if self.kind == EventKind.STATUS:
            return status_tone(self.status)
        return {"joined": "live", "left": "pending", "anomaly": "bad", "gap": "warn"}.get(
            self.kind, "unknown"
        )

    @property
    def raw_pretty(self) -> str:
        """The raw payload, indented when it is JSON, as received when it is not."""
        try:
            return json.dumps(json.loads(self.raw), indent=2, ensure_ascii=False)
        except (ValueError, TypeError):
            return self.raw

    @property
    def summary(self) -> str:
        if self.kind == EventKind.STATUS:
            before = f"{status_label(self.previous_status)} → " if self.previous_status else ""
            return f"{before}{status_label(self.status)}"
        if self.kind == EventKind.JOINED:
            return f"{self.participant_name} joined"
        if self.kind == EventKind.LEFT:
            return f"{self.participant_name} left"
        if self.kind == EventKind.CLOSE:
            return "Upstream closed the stream"
        if self.kind == EventKind.GAP:
            since = (
                f"for {format_duration((self.received_at - self.gap_started_at).total_seconds())}"
                if self.gap_started_at
                else "since an unknown time"
            )
            return f"No upstream connection {since}: events in between may be missing"
        return self.note or self.kind_label


def timeline_event(data: Mapping[str, Any]) -> TimelineEvent:
    """From the plain event dict (hub message data or `SessionEvent` values)."""
    received = as_datetime(data.get("received_at")) or timezone.now()
    at = as_datetime(data.get("upstream_timestamp") or data.get("timestamp")) or received
    return TimelineEvent(
        seq=int(data["seq"]),
        kind=str(data.get("kind", "")),
        status=str(data.get("status") or ""),
        previous_status=str(data.get("previous_status") or ""),
        participant_name=str(data.get("participant_name") or ""),
        error_code=str(data.get("error_code") or ""),
        error_message=str(data.get("error_message") or ""),
        at=at,
        received_at=received,
        raw=str(data.get("raw") or ""),
        note=str(data.get("note") or ""),
        gap_started_at=as_datetime(data.get("gap_started_at")),
        upstream_at=as_datetime(data.get("upstream_timestamp") or data.get("timestamp")),
    )


@dataclass(frozen=True)
class PresenceRow:
    """One presence interval; a rejoin is another row."""

    name: str
    joined_at: datetime
    left_at: datetime | None
    join_seq: int
    stayed: str
    how_joined: str = ""  # "" (a join we saw), "present when watching began", "seen after a gap"
    leave_seq: int | None = None

    @property
    def joined_label(self) -> str:
        return self.how_joined.capitalize() if self.how_joined else "Joined"


def how_joined(note: str) -> str:
    """How we learnt of a join: from the stream, or inferred from the session object."""
    if note.startswith("already in the meeting"):
        return "present when watching began"
    if note.startswith("seen after a gap"):
        return "seen after a gap"
    return ""


@dataclass
class SessionView:
    """Everything the session row, header, panels and badges show for one session."""

    session_id: str
    bot_name: str
    platform: str
    meeting_link: str
    status: str
    previous_status: str
    status_since: datetime | None
    error_code: str
    error_message: str
    failed_from_status: str
    started_at: datetime | None
    last_event_at: datetime | None
    ended_at: datetime | None
    stream_state: str
    stream_state_since: datetime | None
    stream_error: str
    stream_retry_at: datetime | None
    last_seq: int
    participants_present: int
    now: datetime
    # The status_since of the status the watchdog found it stuck in (None: not stuck).
    stuck_since: datetime | None = None

    @property
    def status_label(self) -> str:
        return status_label(self.status)

    @property
    def is_stuck(self) -> bool:
        return self.stuck_since is not None and not self.is_terminal

    @property
    def stuck_for(self) -> str:
        """How long it has been in the status it is stuck in ('' when not stuck)."""
        if not self.is_stuck:
            return ""
        return format_duration(session_duration(self.stuck_since, None, self.now))

    @property
    def tone(self) -> str:
        return status_tone(self.status)

    @property
    def platform_label(self) -> str:
        return platform_label(self.platform)

    @property
    def link_host(self) -> str:
        return link_host(self.meeting_link)

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_failed(self) -> bool:
        return self.status == "failed"

    @property
    def lost_contact(self) -> bool:
        """Not ended, but its link failed for good: what we show is only what was last known."""
        return self.stream_state == LOST_CONTACT and not self.is_terminal

    @property
    def display_label(self) -> str:
        return "Lost contact" if self.lost_contact else self.status_label

    @property
    def display_tone(self) -> str:
        return "bad" if self.lost_contact else self.tone

    @property
    def category(self) -> str:
        return status_category(self.status, self.stream_state)

    @property
    def elapsed_until(self) -> datetime | None:
        """Where the duration stops: the end, or when contact was lost (None: it ticks)."""
        if self.ended_at is not None:
            return self.ended_at
        return self.stream_state_since if self.lost_contact else None

    @property
    def duration(self) -> str:
        return format_duration(session_duration(self.started_at, self.elapsed_until, self.now))

    @property
    def last_event_age(self) -> str:
        return format_age(self.last_event_at, self.now)

    @property
    def ended_age(self) -> str:
        return format_age(self.ended_at, self.now)

    @property
    def failed_from_label(self) -> str:
        return status_label(self.failed_from_status) if self.failed_from_status else "—"

    @property
    def failure_explanation(self) -> str:
        return failure_explanation(self.error_code)

    @property
    def upstream(self) -> Freshness:
        return upstream_freshness(
            self.stream_state,
            since=self.stream_state_since,
            retry_at=self.stream_retry_at,
            error=self.stream_error,
            terminal=self.is_terminal,
            now=self.now,
        )


# The columns a SessionView is made of, in one place: its own fields.
SESSION_VIEW_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(SessionView) if f.name != "now")


def session_view(data: Mapping[str, Any], now: datetime | None = None) -> SessionView:
    """From `MeetingSession` values or a `sessions.summary` body (ISO strings accepted)."""
    values: dict[str, Any] = {}
    for name in SESSION_VIEW_FIELDS:
        value = data.get(name)
        if name.endswith(("_since", "_at")):
            values[name] = as_datetime(value)
        elif name in ("last_seq", "participants_present"):
            values[name] = int(value or 0)
        else:
            values[name] = str(value or "")
    return SessionView(**values, now=now or timezone.now())


def presence_row(data: Mapping[str, Any], now: datetime) -> PresenceRow:
    """From `Presence` values, with `note`: the note of the event that announced the join."""
    left_at = data["left_at"]
    return PresenceRow(
        data["participant_name"],
        data["joined_at"],
        left_at,
        data["join_seq"],
        format_duration(((left_at or now) - data["joined_at"]).total_seconds()),
        how_joined(data.get("note") or ""),
        data.get("leave_seq"),
    )


def people_changes(
    detail: SessionDetail, joined: Collection[int | None], left: Collection[int | None]
) -> dict[str, list[PresenceRow]]:
    """What a live frame re-sends of the participants region for these joins and leaves
    (event seqs): only the people concerned, when the page's lists can take them; {} when
    the whole region must go (the first presence, the first or last person present, or an
    event that changed no presence: a duplicate join, a leave of someone never seen)."""
    if not joined and not left:
        return {}
    people_joined = [p for p in detail.presences if p.join_seq in joined]
    people_left = [p for p in detail.presences if p.leave_seq is not None and p.leave_seq in left]
    if len(people_joined) != len(joined) or len(people_left) != len(left):
        return {}
    # What the page holds is the state before this batch, which `detail` (read afterwards) may
    # already have left behind: count from the seqs, not from the rows as they are now.
    first = min(seq for seq in (*joined, *left) if seq is not None)
    listed_before = [p for p in detail.presences if p.join_seq < first]
    present_before = sum(1 for p in listed_before if p.leave_seq is None or p.leave_seq >= first)
    present_after = present_before + len(people_joined) - len(people_left)
    if not present_before or present_after <= 0 or not listed_before:
        return {}
    return {"people_joined": people_joined, "people_left": people_left}


def is_recently_ended(view: SessionView, minutes: int) -> bool:
    return (
        view.is_terminal
        and view.ended_at is not None
        and (view.now - view.ended_at) <= timedelta(minutes=minutes)
    )


def recent_minutes() -> int:
    return int(settings.MEETINGDASH_RECENT_MINUTES)


@dataclass
class SessionDetail:
    """One session as its page shows it.

    A full read (`selectors.read_detail`) fills everything; a read for some live regions
    (`selectors.read_live_regions`) only what those show: no `events` (the log only grows,
    by the rows each live event brings), no `transitions` or `geometry` unless asked for.
    """

    session: SessionView
    events: list[TimelineEvent]
    presences: list[PresenceRow]
    transitions: list[TimelineEvent]
    geometry: TimelineGeometry | None

    @property
    def present(self) -> list[PresenceRow]:
        return [p for p in self.presences if p.left_at is None]

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0


LIVE_LIST_URL = "/ws/sessions/"


def live_detail_url(session_id: str) -> str:
    return f"/ws/sessions/{session_id}/"


# Which detail regions an event of each kind can change (the rest are not re-sent live).
REGIONS_BY_KIND: dict[str, frozenset[str]] = {
    EventKind.STATUS: frozenset({"header", "failure", "transitions", "svg"}),
    EventKind.JOINED: frozenset({"header", "participants", "svg"}),
    EventKind.LEFT: frozenset({"header", "participants", "svg"}),
    EventKind.GAP: frozenset({"svg"}),
    # A link note: a link that failed for good changes the header and the failure panel.
    EventKind.STREAM: frozenset({"header", "failure"}),
}
REGIONS: frozenset[str] = frozenset().union(*REGIONS_BY_KIND.values())


def regions_for(kinds: Iterable[str]) -> frozenset[str]:
    """The regions a batch of events with these kinds can have changed ({} = none)."""
    changed: frozenset[str] = frozenset()
    for kind in kinds:
        changed |= REGIONS_BY_KIND.get(kind, frozenset())
    return changed


def detail_context(detail: SessionDetail, *, after: int | None = None) -> dict[str, Any]:
    """The template context of the detail page and of its live regions.

    `after` is the watermark the page resumes from: by default the last event of the log.
    """
    return {
        "detail": detail,
        "session": detail.session,
        "geometry": detail.geometry,
        "after": detail.last_seq if after is None else after,
        "failed_from_label": detail.session.failed_from_label,
        "live_url": live_detail_url(detail.session.session_id),
        "time_zone": timezone.get_current_timezone_name(),
    }
