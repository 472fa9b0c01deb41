"""The CSV exports of the admin's session list, streamed: stored events ("Export events"),
and the sessions' audit trail ("Export control actions": one row per send or stop, with who
asked, how, what was asked and what the upstream answered). The audit trail is its own file
rather than a column of the event export: its rows are per action, not per event, and a
summary squeezed into every event row would repeat it thousands of times. The dashboard
list's "Download CSV" uses the same writer and cell rules for the sessions of its filter.

Under ASGI the rows come from an async iterator (`aiter_events_csv`), under WSGI from a sync
one: either way a big export is never held in memory.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.db.models import QuerySet
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from sessions_monitor import presentation, selectors
from sessions_monitor.list_filters import ListFilters
from sessions_monitor.models import ControlAction

# The stored event's columns after its session's id, without the payload and the gap's start.
CSV_COLUMNS: tuple[str, ...] = (
    "session_id",
    *(name for name in selectors.EVENT_FIELDS if name not in ("raw", "gap_started_at")),
)
_FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


class _Echo:
    """csv.writer target that hands each formatted line back instead of buffering it."""

    def write(self, value: str) -> str:
        return value


def _csv_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        return value.isoformat()
    text = str(value)
    # Participant names and error texts come from outside: keep spreadsheets from running them.
    return "'" + text if text.startswith(_FORMULA_PREFIXES) else text


def _csv_line(writer: Any, row: dict[str, Any]) -> str:
    return str(writer.writerow([_csv_cell(row[column]) for column in CSV_COLUMNS]))


def iter_events_csv(session_ids: Iterable[str], *, chunk_size: int = 2000) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield _csv_line(writer, {column: column for column in CSV_COLUMNS})
    for row in selectors.export_rows(session_ids, CSV_COLUMNS).iterator(chunk_size=chunk_size):
        yield _csv_line(writer, row)


async def aiter_events_csv(
    session_ids: Iterable[str], *, chunk_size: int = 2000
) -> AsyncIterator[str]:
    writer = csv.writer(_Echo())
    yield _csv_line(writer, {column: column for column in CSV_COLUMNS})
    rows = selectors.export_rows(session_ids, CSV_COLUMNS)
    async for row in rows.aiterator(chunk_size=chunk_size):
        yield _csv_line(writer, row)


CONTROL_CSV_COLUMNS: tuple[str, ...] = (
    "session_id",
    "requested_at",
    "action",
    "actor_name",
    "via",
    "outcome",
    "upstream_status",
    "upstream_code",
    "message",
    "request",
)


def _control_rows(session_ids: Iterable[str]) -> QuerySet[ControlAction, dict[str, Any]]:
    rows: QuerySet[ControlAction, dict[str, Any]] = (
        ControlAction.objects.filter(session_id__in=list(session_ids))
        .order_by("session_id", "requested_at", "id")
        .values("session_ref", *CONTROL_CSV_COLUMNS[1:])
    )
    return rows


def _control_line(writer: Any, row: dict[str, Any]) -> str:
    row = {**row, "session_id": row["session_ref"], "request": json.dumps(row["request"])}
    return str(writer.writerow([_csv_cell(row[column]) for column in CONTROL_CSV_COLUMNS]))


def iter_control_actions_csv(session_ids: Iterable[str]) -> Iterator[str]:
    writer = csv.writer(_Echo())
    yield str(writer.writerow(CONTROL_CSV_COLUMNS))
    for row in _control_rows(session_ids).iterator(chunk_size=2000):
        yield _control_line(writer, row)


async def aiter_control_actions_csv(session_ids: Iterable[str]) -> AsyncIterator[str]:
    writer = csv.writer(_Echo())
    yield str(writer.writerow(CONTROL_CSV_COLUMNS))
    async for row in _control_rows(session_ids).aiterator(chunk_size=2000):
        yield _control_line(writer, row)


def control_actions_csv_response(
    request: HttpRequest, session_ids: list[str]
) -> StreamingHttpResponse:
    content: Iterator[str] | AsyncIterator[str] = (
        aiter_control_actions_csv(session_ids)
        if isinstance(request, ASGIRequest)
        else iter_control_actions_csv(session_ids)
    )
    return _csv_attachment(content, "session-control-actions")


def events_csv_response(request: HttpRequest, session_ids: list[str]) -> StreamingHttpResponse:
    # Under ASGI, Django buffers a *sync* streaming iterator completely before sending it;
    # an async iterator is what keeps a big export streamed there.
    content: Iterator[str] | AsyncIterator[str] = (
        aiter_events_csv(session_ids)
        if isinstance(request, ASGIRequest)
        else iter_events_csv(session_ids)
    )
    return _csv_attachment(content, "session-events")


# The sessions themselves (the dashboard list's "Download CSV"): the admin session list's
# columns, its duration in whole seconds (ended, or now, minus started; empty when unknown).
SESSION_CSV_COLUMNS: tuple[str, ...] = (
    "session_id",
    "bot_name",
    "platform",
    "status",
    "started_at",
    "ended_at",
    "duration_seconds",
    "peak_participants",
    "error_code",
)
_SESSION_READ_COLUMNS = tuple(c for c in SESSION_CSV_COLUMNS if c != "duration_seconds")


def _session_line(writer: Any, row: dict[str, Any], now: dt.datetime) -> str:
    seconds = presentation.session_duration(row["started_at"], row["ended_at"], now)
    row = {**row, "duration_seconds": None if seconds is None else max(0, int(seconds))}
    return str(writer.writerow([_csv_cell(row[column]) for column in SESSION_CSV_COLUMNS]))


def iter_sessions_csv(filters: ListFilters, *, chunk_size: int = 2000) -> Iterator[str]:
    now = timezone.now()
    writer = csv.writer(_Echo())
    yield str(writer.writerow(SESSION_CSV_COLUMNS))
    rows = selectors.session_export_rows(filters, _SESSION_READ_COLUMNS, now)
    for row in rows.iterator(chunk_size=chunk_size):
        yield _session_line(writer, row, now)


async def aiter_sessions_csv(filters: ListFilters, *, chunk_size: int = 2000) -> AsyncIterator[str]:
    now = timezone.now()
    writer = csv.writer(_Echo())
    yield str(writer.writerow(SESSION_CSV_COLUMNS))
    rows = selectors.session_export_rows(filters, _SESSION_READ_COLUMNS, now)
    async for row in rows.aiterator(chunk_size=chunk_size):
        yield _session_line(writer, row, now)


def sessions_csv_response(request: HttpRequest, filters: ListFilters) -> StreamingHttpResponse:
    """Every session of the list's filter, streamed (async under ASGI, as `events_csv_response`)."""
    content: Iterator[str] | AsyncIterator[str] = (
        aiter_sessions_csv(filters)
        if isinstance(request, ASGIRequest)
        else iter_sessions_csv(filters)
    )
    return _csv_attachment(content, "sessions")


def _csv_attachment(
    content: Iterator[str] | AsyncIterator[str], name: str
) -> StreamingHttpResponse:
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response
