"""The CSV export of stored events (the admin's "Export events" action), streamed.

Under ASGI the rows come from an async iterator (`aiter_events_csv`), under WSGI from a sync
one: either way a big export is never held in memory.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest, StreamingHttpResponse
from django.utils import timezone

from sessions_monitor import selectors

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


def events_csv_response(request: HttpRequest, session_ids: list[str]) -> StreamingHttpResponse:
    # Under ASGI, Django buffers a *sync* streaming iterator completely before sending it;
    # an async iterator is what keeps a big export streamed there.
    content: Iterator[str] | AsyncIterator[str] = (
        aiter_events_csv(session_ids)
        if isinstance(request, ASGIRequest)
        else iter_events_csv(session_ids)
    )
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    response = StreamingHttpResponse(content, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="session-events-{stamp}.csv"'
    response["Cache-Control"] = "no-store"
    return response
