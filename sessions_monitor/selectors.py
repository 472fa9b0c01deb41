"""Every read of the app: pages, live frames, admin, CSV export, stream, widget, relay, health.

Each returns plain data (dicts, lists, `presentation` dataclasses), never lazy querysets, so
async code can call them via `database_sync_to_async`. The exceptions say so: the admin's
search filter, and the CSV export's rows, which must stay lazy to be streamed.

One field list per shape: `EVENT_FIELDS` (a stored event), `SESSION_FIELDS` (a session as the
pages show it), `SUMMARY_FIELDS` (as the channel layer carries it), `PRESENCE_FIELDS`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import Count, Max, Min, OuterRef, Q, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from sessions_monitor import presentation, timeline
from sessions_monitor.list_filters import ListFilters
from sessions_monitor.models import (
    EventKind,
    MeetingSession,
    Presence,
    SessionEvent,
    StreamState,
)
from sessions_monitor.presentation import (
    FILTERS,
    LOST_CONTACT,
    Freshness,
    PresenceRow,
    SessionDetail,
    SessionView,
    TimelineEvent,
)
from sessions_monitor.upstream.events import TERMINAL_STATUSES

# Kinds that exist in the upstream's contract and so go out on our re-served stream.
STREAMED_KINDS = frozenset(
    {EventKind.STATUS, EventKind.JOINED, EventKind.LEFT, EventKind.CLOSE, EventKind.GAP}
)

# Every column of a stored event that anything shows or sends; the payload last.
EVENT_FIELDS: tuple[str, ...] = (
    "seq",
    "kind",
    "status",
    "previous_status",
    "participant_name",
    "error_code",
    "error_message",
    "upstream_timestamp",
    "received_at",
    "note",
    "gap_started_at",
    "raw",
)
# The same without the payload (kilobytes a row), for what never shows it.
EVENT_FIELDS_NO_PAYLOAD = EVENT_FIELDS[:-1]
SESSION_FIELDS = presentation.SESSION_VIEW_FIELDS
# A `sessions.summary`: the session as the pages show it, and the relay's view of its link.
SUMMARY_FIELDS: tuple[str, ...] = (
    *SESSION_FIELDS,
    "first_seen_at",
    "stream_error_code",
    "stream_alive_at",
    "watched",
    "peak_participants",
)
PRESENCE_FIELDS = ("participant_name", "joined_at", "left_at", "join_seq")


def isoformat(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a `Z`, the upstream's own timestamp style."""
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _plain(value: Any) -> Any:
    return isoformat(value) if isinstance(value, datetime) else value


# --- events ---------------------------------------------------------------------------------


def plain_event(row: Mapping[str, Any]) -> dict[str, Any]:
    """The plain form of a stored event (`EVENT_FIELDS` values): broadcast payload, stream
    source. `timestamp` is the upstream's own name for its time."""
    plain = {name: _plain(row[name]) for name in EVENT_FIELDS}
    plain["timestamp"] = plain["upstream_timestamp"]
    return plain


def event_to_dict(event: SessionEvent) -> dict[str, Any]:
    return plain_event({name: getattr(event, name) for name in EVENT_FIELDS})


def _stored_events(
    session_id: str,
    after_seq: int = 0,
    *,
    kinds: Iterable[str] | None = None,
    columns: tuple[str, ...] = EVENT_FIELDS,
) -> QuerySet[SessionEvent, dict[str, Any]]:
    events = SessionEvent.objects.filter(session_id=session_id, seq__gt=after_seq)
    if kinds is not None:
        events = events.filter(kind__in=list(kinds))
    rows: QuerySet[SessionEvent, dict[str, Any]] = events.order_by("seq").values(*columns)
    return rows


def events_after(session_id: str, after_seq: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
    """Stored events with seq > after_seq, in order, at most `limit`, in their plain form."""
    return [plain_event(row) for row in _stored_events(session_id, after_seq)[:limit]]


def read_events(
    session_id: str, after_seq: int = 0, limit: int | None = None
) -> list[TimelineEvent]:
    """The same events as the event log shows them."""
    rows = _stored_events(session_id, after_seq)
    return [presentation.timeline_event(row) for row in (rows[:limit] if limit else rows)]


def last_stored_seq(session_id: str) -> int:
    """The highest stored event seq of a session (0 when none)."""
    last = (
        SessionEvent.objects.filter(session_id=session_id)
        .order_by("-seq")
        .values_list("seq", flat=True)
        .first()
    )
    return int(last or 0)


def _event_span(session_id: str) -> tuple[datetime, datetime] | None:
    """The first and the last moment of any event (as `TimelineEvent.at`), without reading
    the events out."""
    at = Coalesce("upstream_timestamp", "received_at")
    span = SessionEvent.objects.filter(session_id=session_id).aggregate(first=Min(at), last=Max(at))
    return None if span["first"] is None else (span["first"], span["last"])


# --- sessions ---------------------------------------------------------------------------------


def _summary(row: Mapping[str, Any]) -> dict[str, Any]:
    summary = {name: _plain(row[name]) for name in SUMMARY_FIELDS}
    summary["is_terminal"] = row["status"] in TERMINAL_STATUSES
    return summary


def session_summary(session: MeetingSession) -> dict[str, Any]:
    """Fields of one session that lists and badges show; also the `sessions.summary` body."""
    return _summary({name: getattr(session, name) for name in SUMMARY_FIELDS})


def session_snapshot(session_id: str) -> dict[str, Any] | None:
    row = MeetingSession.objects.filter(pk=session_id).values(*SUMMARY_FIELDS).first()
    return None if row is None else _summary(row)


def read_session(session_id: str, now: datetime | None = None) -> SessionView | None:
    snapshot = session_snapshot(session_id)
    return None if snapshot is None else presentation.session_view(snapshot, now)


# --- the detail page ----------------------------------------------------------------------------


def _presences(session_id: str, now: datetime) -> list[PresenceRow]:
    """Every presence interval, each with the note of the event that announced its join."""
    join_note = SessionEvent.objects.filter(
        session_id=OuterRef("session_id"), seq=OuterRef("join_seq"), kind=EventKind.JOINED
    ).values("note")[:1]
    rows = (
        Presence.objects.filter(session_id=session_id)
        .order_by("joined_at", "join_seq")
        .annotate(note=Subquery(join_note))
        .values(*PRESENCE_FIELDS, "leave_seq", "note")
    )
    return [presentation.presence_row(row, now) for row in rows]


def read_detail(session_id: str, now: datetime | None = None) -> SessionDetail | None:
    """One session with its events and presence: the whole page.

    Not one transaction (SQLite runs ours as BEGIN IMMEDIATE, which would block the relay):
    the page's watermark is the last event actually read, so the rows and the watermark
    always agree; the header may be a step ahead and converges on the next live message.
    """
    session = read_session(session_id, now)
    if session is None:
        return None
    events = read_events(session_id)
    presences = _presences(session_id, session.now)
    transitions = [e for e in events if e.kind == EventKind.STATUS]
    geometry = timeline.session_geometry(
        session,
        transitions,
        presences,
        gaps=[e for e in events if e.kind == EventKind.GAP],
        span=(min(e.at for e in events), max(e.at for e in events)) if events else None,
    )
    return SessionDetail(session, events, presences, transitions, geometry)


def read_live_regions(
    session_id: str, regions: Iterable[str], now: datetime | None = None
) -> SessionDetail | None:
    """What the live regions named in `regions` show, and only that: the event log is not
    read (a live frame appends the new rows itself), events only for the transitions and
    the timeline, and only their status changes and gaps.

    The regions render exactly as from `read_detail` for the same stored state.
    """
    wanted = frozenset(regions)
    session = read_session(session_id, now)
    if session is None:
        return None
    presences = _presences(session_id, session.now)
    marks: list[TimelineEvent] = []
    if wanted & {"transitions", "svg"}:
        rows = _stored_events(
            session_id, kinds=(EventKind.STATUS, EventKind.GAP), columns=EVENT_FIELDS_NO_PAYLOAD
        )
        marks = [presentation.timeline_event(row) for row in rows]
    transitions = [e for e in marks if e.kind == EventKind.STATUS]
    geometry = None
    if "svg" in wanted:
        geometry = timeline.session_geometry(
            session,
            transitions,
            presences,
            gaps=[e for e in marks if e.kind == EventKind.GAP],
            span=_event_span(session_id),
        )
    return SessionDetail(session, [], presences, transitions, geometry)


# --- the list page ------------------------------------------------------------------------------


def filter_queryset(filter_name: str) -> QuerySet[MeetingSession]:
    """The sessions of one list filter (see `presentation.status_category`)."""
    return ListFilters(filter=filter_name).apply(MeetingSession.objects.all())


def _searched(sessions: QuerySet[MeetingSession], query: str) -> QuerySet[MeetingSession]:
    """Search: ids, bots, links, participants, error codes and messages."""
    if not query:
        return sessions
    people = Presence.objects.filter(participant_name__icontains=query).values("session_id")
    return sessions.filter(
        Q(session_id__icontains=query)
        | Q(bot_name__icontains=query)
        | Q(meeting_link__icontains=query)
        | Q(error_code__icontains=query)
        | Q(error_message__icontains=query)
        | Q(session_id__in=people)
    )


def listed_sessions(filters: ListFilters, now: datetime | None = None) -> QuerySet[MeetingSession]:
    """Every session the list shows for these filters, in its order (lazy: the CSV export
    streams it)."""
    now = now or timezone.now()
    sessions = _searched(filters.apply(MeetingSession.objects.all(), now), filters.query)
    return sessions.order_by(*filters.ordering(now))


def search_sessions(
    *,
    filter_name: str,
    query: str,
    page_number: str | int | None,
    per_page: int = 25,
    filters: ListFilters | None = None,
) -> Page[SessionView]:
    """The list page: its filters and search, newest started first by default: a stable
    order, so rows never jump on an update."""
    filters = filters or ListFilters(filter=filter_name, query=query)
    ordered = listed_sessions(filters).values(*SESSION_FIELDS)
    page = Paginator(ordered, per_page).get_page(page_number)
    now = timezone.now()
    page.object_list = [presentation.session_view(row, now) for row in page.object_list]
    return page


def filter_counts() -> dict[str, int]:
    """How many sessions each filter chip stands for (one aggregate query)."""
    live = ~Q(status__in=TERMINAL_STATUSES)
    lost = Q(stream_state=LOST_CONTACT)
    counts = MeetingSession.objects.aggregate(
        live=Count("pk", filter=live & ~lost),
        attention=Count("pk", filter=live & lost),
        ended=Count("pk", filter=Q(status__in=TERMINAL_STATUSES)),
        failed=Count("pk", filter=Q(status="failed")),
        all=Count("pk"),
    )
    return {key: int(value or 0) for key, value in counts.items()}


def recently_ended(
    minutes: int,
    limit: int = 10,
    now: datetime | None = None,
    filters: ListFilters | None = None,
) -> list[SessionView]:
    """Sessions that ended (or failed) within the last `minutes`, newest first: Live keeps
    showing them, so a failure never just disappears from it. With `filters`, only those
    they let through (whatever the tab)."""
    now = now or timezone.now()
    sessions = MeetingSession.objects.filter(
        status__in=TERMINAL_STATUSES, ended_at__gte=now - timedelta(minutes=minutes)
    )
    if filters is not None:
        sessions = filters.beside_tab.apply(sessions, now)
    rows = sessions.order_by("-ended_at", "session_id").values(*SESSION_FIELDS)[:limit]
    return [presentation.session_view(row, now) for row in rows]


def read_overall_upstream(now: datetime | None = None) -> Freshness:
    """The list page's upstream badge over every watched session that has not ended."""
    now = now or timezone.now()
    rows = (
        MeetingSession.objects.filter(watched=True)
        .exclude(status__in=TERMINAL_STATUSES)
        .values("stream_state", "stream_state_since", "stream_retry_at", "stream_error")
    )
    return presentation.overall_upstream(
        presentation.upstream_freshness(
            row["stream_state"],
            since=row["stream_state_since"],
            retry_at=row["stream_retry_at"],
            error=row["stream_error"],
            now=now,
        )
        for row in rows
    )


def list_page(
    *,
    filter_name: str,
    query: str,
    page_number: str | int | None,
    per_page: int = 25,
    filters: ListFilters | None = None,
) -> dict[str, Any]:
    """Everything the list page shows, for its first render and for live (re)loads."""
    minutes = presentation.recent_minutes()
    counts = filter_counts()
    filters = filters or ListFilters(filter=filter_name, query=query)
    return {
        "page_obj": search_sessions(
            filter_name=filters.filter,
            query=filters.query,
            page_number=page_number,
            per_page=per_page,
            filters=filters,
        ),
        "filter": filters.filter,
        "query": filters.query,
        "tools": filters,
        "filters": [(key, label, counts[key]) for key, label in FILTERS.items()],
        "recent": recently_ended(minutes, filters=filters),
        "recent_minutes": minutes,
        "overall": read_overall_upstream(),
    }


MAX_BOT_CHOICES = 500


def list_tool_choices() -> dict[str, list[str]]:
    """The values present, for the list's filter bar: platforms, error codes, bot names."""

    def present(column: str, limit: int | None = None) -> list[str]:
        values = (
            MeetingSession.objects.exclude(**{column: ""})
            .order_by(column)
            .values_list(column, flat=True)
            .distinct()
        )
        return list(values[:limit] if limit else values)

    return {
        "platforms": present("platform"),
        "error_codes": present("error_code"),
        "bot_names": present("bot_name", MAX_BOT_CHOICES),
    }


def session_export_rows(
    filters: ListFilters, columns: tuple[str, ...], now: datetime | None = None
) -> QuerySet[MeetingSession, dict[str, Any]]:
    """The sessions of the list's current filter, every page, for the CSV export: lazy, to
    be streamed in chunks (values(), which stays lazy for aiterator(), see `export_rows`)."""
    rows: QuerySet[MeetingSession, dict[str, Any]] = listed_sessions(filters, now).values(*columns)
    return rows


# --- admin ----------------------------------------------------------------------------------------


def admin_session_search(term: str) -> Q:
    """What one admin search term matches (a filter, not a read). Prefix matches only: each
    branch is an index range scan on PostgreSQL (pattern-ops indexes), where "contains"
    would read every row of 100k.

    Participants are matched by an uncorrelated subquery, evaluated once, not by a join, which
    would repeat a session once per matching presence row.
    """
    if term.startswith("mbsess_"):
        return Q(session_id__startswith=term)
    if term.startswith(("http://", "https://")):
        return Q(meeting_link__startswith=term)
    # order_by(): the models' default orderings would otherwise join and sort inside.
    bots = MeetingSession.objects.filter(bot_name__istartswith=term).order_by()
    people = Presence.objects.filter(participant_name__istartswith=term).order_by()
    # One IN over a UNION of two index range scans: PostgreSQL joins the (small) id set to the
    # sessions by primary key. `bot OR id IN (...)` would instead test every session row.
    return Q(session_id__in=bots.values("session_id").union(people.values("session_id")))


def table_row_estimate(queryset: Any) -> int | None:
    """The planner's row estimate of an unfiltered PostgreSQL table's queryset, else None."""
    if not isinstance(queryset, QuerySet):
        return None
    connection = connections[queryset.db]
    query = queryset.query
    if connection.vendor != "postgresql" or query.where or query.distinct or query.combinator:
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass",
            [queryset.model._meta.db_table],
        )
        row = cursor.fetchone()
    # reltuples is -1 for a table never vacuumed or analysed yet.
    return int(row[0]) if row and row[0] >= 0 else None


def first_status_changes(session_id: str, limit: int) -> list[TimelineEvent]:
    """The first `limit` status events (for the admin's bounded timeline)."""
    rows = _stored_events(session_id, kinds=(EventKind.STATUS,), columns=EVENT_FIELDS_NO_PAYLOAD)
    return [presentation.timeline_event(row) for row in rows[:limit]]


def first_event_rows(session_id: str, limit: int) -> list[dict[str, Any]]:
    """The first `limit` events with their primary keys, without payloads (admin inline)."""
    rows = SessionEvent.objects.filter(session_id=session_id).order_by("seq")
    return list(rows.values("pk", *EVENT_FIELDS_NO_PAYLOAD)[:limit])


def first_presence_rows(session_id: str, limit: int) -> list[dict[str, Any]]:
    """The first `limit` presence intervals with their primary keys (admin inline)."""
    rows = Presence.objects.filter(session_id=session_id).order_by("joined_at", "join_seq")
    return list(rows.values("pk", *PRESENCE_FIELDS)[:limit])


def history_counts(session_id: str) -> tuple[int, int]:
    """How many events and presence intervals a session has stored."""
    return (
        SessionEvent.objects.filter(session_id=session_id).count(),
        Presence.objects.filter(session_id=session_id).count(),
    )


def export_rows(
    session_ids: Iterable[str], columns: tuple[str, ...]
) -> QuerySet[SessionEvent, dict[str, Any]]:
    """The events of these sessions for the CSV export: lazy, to be streamed in chunks."""
    # (session_id, seq) is the unique index: the scan is ordered and needs no sort.
    # values(), not values_list(): Django 5.2's values_list iterable runs its query eagerly,
    # which breaks aiterator() (SynchronousOnlyOperation); values() stays lazy.
    rows: QuerySet[SessionEvent, dict[str, Any]] = (
        SessionEvent.objects.filter(session_id__in=list(session_ids))
        .order_by("session_id", "seq")
        .values(*columns)
    )
    return rows


# --- our stream, the relay, health ----------------------------------------------------------------


@dataclass
class StreamStart:
    """What a new subscriber of our stream is sent before live events."""

    known: bool
    watched: bool = False
    terminal: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    last_seq: int = 0
    resume_from: int | None = None


def stream_start(session_id: str, last_event_id: int | None, limit: int = 10_000) -> StreamStart:
    """History for a (re)connecting subscriber.

    With `last_event_id`: every event after it. Without: the whole history of an ended
    session, or the current status of a live one plus whatever followed it.
    """
    session = (
        MeetingSession.objects.filter(pk=session_id).values("status", "last_seq", "watched").first()
    )
    if session is None:
        return StreamStart(known=False)
    terminal = session["status"] in TERMINAL_STATUSES
    if last_event_id is not None and last_event_id > session["last_seq"]:
        # An id we never issued (another deployment, a reset database): start afresh
        # rather than silently dropping everything up to it.
        last_event_id = None
    if last_event_id is not None:
        after = last_event_id
    elif terminal:
        after = 0
    else:
        latest_status = (
            SessionEvent.objects.filter(session_id=session_id, kind=EventKind.STATUS)
            .order_by("-seq")
            .values_list("seq", flat=True)
            .first()
        )
        after = latest_status - 1 if latest_status is not None else session["last_seq"]
    events = events_after(session_id, after, limit)
    return StreamStart(
        known=True,
        watched=session["watched"],
        terminal=terminal,
        events=events,
        last_seq=events[-1]["seq"] if events else after,
        resume_from=last_event_id,
    )


@dataclass(frozen=True)
class FollowStart:
    """What a relay needs to know before it starts streaming a session."""

    has_history: bool
    last_known_at: datetime | None  # the last moment anything here was known of its link


def follow_start(session_id: str) -> FollowStart:
    row = (
        MeetingSession.objects.filter(pk=session_id)
        .values("last_seq", "last_event_at", "stream_alive_at")
        .first()
    )
    if row is None or not row["last_seq"]:
        return FollowStart(False, None)
    moments = [m for m in (row["last_event_at"], row["stream_alive_at"]) if m is not None]
    return FollowStart(True, max(moments) if moments else None)


def watched_sessions_to_follow(owner: str | None = None) -> list[str]:
    """Watched sessions the relay should be streaming (not ended, not permanently failed);
    with `owner` (scaled mode), not those another relay's current claim holds."""
    sessions = (
        MeetingSession.objects.filter(watched=True)
        .exclude(status__in=TERMINAL_STATUSES)
        .exclude(stream_state__in=[StreamState.FAILED, StreamState.ENDED])
    )
    if owner is not None:
        claimed_by_another = ~Q(relay_owner__in=["", owner]) & Q(
            relay_claimed_until__gte=timezone.now()
        )
        sessions = sessions.exclude(claimed_by_another)
    return list(sessions.order_by("first_seen_at").values_list("session_id", flat=True))


def links_by_state() -> dict[str, int]:
    """Upstream links by state: every watched session, and any other with a link state."""
    rows = (
        MeetingSession.objects.filter(Q(watched=True) | ~Q(stream_state=StreamState.IDLE))
        .values("stream_state")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return {row["stream_state"]: row["count"] for row in rows}


def watched_count() -> int:
    return MeetingSession.objects.filter(watched=True).count()
