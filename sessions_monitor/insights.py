"""The Insights page's numbers: what sessions did over a range, in a few aggregate queries.

`parse_query` turns the page's GET parameters into an `InsightsQuery` (a range in UTC and
exact-match filters); `read_insights` runs the aggregates on indexed columns
(`session_insights_idx`: started_at, status, platform) and returns plain dataclasses that
`insights_svg` draws and the page's tables print. Every bar knows the session-list URL of
the sessions behind it (`list_url`).

Buckets follow `started_at`: a session counts in the bucket it started in, whatever it did
later. Hourly for ranges up to 48 h, daily otherwise, both in UTC.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.core.cache import cache
from django.db import connection
from django.db.models import (
    Aggregate,
    Count,
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Q,
    QuerySet,
)
from django.db.models.functions import TruncDay, TruncHour
from django.urls import reverse

from sessions_monitor.list_filters import CUSTOM_RANGE, RANGES
from sessions_monitor.models import MeetingSession
from sessions_monitor.presentation import failure_explanation, format_duration, platform_label

DEFAULT_RANGE = "24h"
CUSTOM = CUSTOM_RANGE
MAX_CUSTOM = timedelta(days=400)
HOURLY_UP_TO = timedelta(hours=48)
TOP_ERROR_CODES = 10
OTHER = "other"
FILTER_MAX_CHARS = 200

COMPLETED = "completed"
FAILED = "failed"

# (label, lower bound, upper bound) of in-meeting durations; upper exclusive, None: open.
DURATION_BUCKETS: tuple[tuple[str, timedelta, timedelta | None], ...] = (
    ("< 5 min", timedelta(0), timedelta(minutes=5)),
    ("5–15 min", timedelta(minutes=5), timedelta(minutes=15)),
    ("15–30 min", timedelta(minutes=15), timedelta(minutes=30)),
    ("30–60 min", timedelta(minutes=30), timedelta(hours=1)),
    ("1–2 h", timedelta(hours=1), timedelta(hours=2)),
    ("> 2 h", timedelta(hours=2), None),
)


class InvalidRange(ValueError):
    """A custom range the page cannot show; the message says why, for the form."""


@dataclass(frozen=True)
class InsightsQuery:
    """What the page shows: sessions that started in [start, end) and match every filter set."""

    range: str
    start: datetime
    end: datetime
    platform: str = ""
    bot: str = ""
    error_code: str = ""
    from_text: str = ""
    to_text: str = ""
    error: str = ""

    @property
    def hourly(self) -> bool:
        return self.end - self.start <= HOURLY_UP_TO

    @property
    def label(self) -> str:
        if self.error:
            return RANGES[DEFAULT_RANGE][0].capitalize()
        if self.range in RANGES:
            return RANGES[self.range][0].capitalize()
        return "Custom range"

    @property
    def span_text(self) -> str:
        return f"{_minute(self.start)} – {_minute(self.end)} UTC"

    @property
    def has_filters(self) -> bool:
        return bool(self.platform or self.bot or self.error_code)

    def sessions(self) -> QuerySet[MeetingSession]:
        """The sessions behind the whole page (no ordering: aggregates only)."""
        found = MeetingSession.objects.filter(
            started_at__gte=self.start, started_at__lt=self.end
        ).order_by()
        if self.platform:
            found = found.filter(platform=self.platform)
        if self.bot:
            found = found.filter(bot_name=self.bot)
        if self.error_code:
            found = found.filter(error_code=self.error_code)
        return found

    def list_url(
        self,
        *,
        start: datetime | None = None,
        end: datetime | None = None,
        status: str = "",
        **overrides: str,
    ) -> str:
        """The session list of the sessions behind a bar: this query's filters, narrowed by
        the bar's own (its time span, a status, a platform or error code)."""
        params: dict[str, str] = {"filter": "all"}
        if status:
            params["status"] = status
        values = {
            "platform": self.platform,
            "bot": self.bot,
            "error_code": self.error_code,
            **overrides,
        }
        params.update({key: value for key, value in values.items() if value})
        params["from"] = iso_utc(max(start or self.start, self.start))
        params["to"] = iso_utc(min(end or self.end, self.end))
        return f"{reverse('session-list')}?{urlencode(params)}"


def iso_utc(moment: datetime) -> str:
    """`2026-12-04T18:00:00Z` (microseconds kept when there are any)."""
    text = moment.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _minute(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def _floor(moment: datetime, hourly: bool) -> datetime:
    moment = moment.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    return moment if hourly else moment.replace(hour=0)


def _clean(value: str | None) -> str:
    return (value or "").strip()[:FILTER_MAX_CHARS]


def parse_moment(text: str, *, end_of_day: bool = False) -> datetime:
    """A date (`2026-12-01`) or an ISO datetime; naive means UTC. A date as the end of a
    range means the end of that day (the next midnight), so `from=to=` one date is one day."""
    text = text.strip()
    if not text:
        raise InvalidRange("missing")
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(0), tzinfo=UTC)
            return moment + timedelta(days=1) if end_of_day else moment
        parsed = datetime.fromisoformat(text.replace("z", "Z"))
    except OverflowError:
        raise InvalidRange(f"“{text}” is out of range") from None
    except ValueError:
        raise InvalidRange(f"“{text}” is not a date (YYYY-MM-DD) or an ISO date and time") from None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def custom_range(from_text: str, to_text: str) -> tuple[datetime, datetime]:
    """[start, end) of a custom range, or InvalidRange with the reason."""
    if not from_text.strip() or not to_text.strip():
        raise InvalidRange("A custom range needs both a start (From) and an end (To).")
    try:
        start = parse_moment(from_text)
        end = parse_moment(to_text, end_of_day=True)
    except InvalidRange as exc:
        raise InvalidRange(f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
    if start >= end:
        raise InvalidRange("The start (From) must be before the end (To).")
    if end - start > MAX_CUSTOM:
        raise InvalidRange(
            f"A custom range can span at most {MAX_CUSTOM.days} days "
            f"(this one spans {math.ceil((end - start) / timedelta(days=1))})."
        )
    return start, end


def parse_query(params: Mapping[str, str], now: datetime) -> InsightsQuery:
    """The page's GET parameters as a query. An invalid custom range keeps what was typed and
    says why in `error`; the page then shows the default range."""
    filters = {
        "platform": _clean(params.get("platform")),
        "bot": _clean(params.get("bot")),
        "error_code": _clean(params.get("error_code")),
    }
    name = params.get("range", DEFAULT_RANGE)
    if name == CUSTOM:
        from_text, to_text = _clean(params.get("from")), _clean(params.get("to"))
        try:
            start, end = custom_range(from_text, to_text)
        except InvalidRange as exc:
            fallback = parse_query({**filters, "range": DEFAULT_RANGE}, now)
            return replace(
                fallback, range=CUSTOM, from_text=from_text, to_text=to_text, error=str(exc)
            )
        return InsightsQuery(CUSTOM, start, end, from_text=from_text, to_text=to_text, **filters)
    if name not in RANGES:
        name = DEFAULT_RANGE
    span = RANGES[name][1]
    hourly = span <= HOURLY_UP_TO
    # Whole buckets: the range ends with the bucket (hour or UTC day) that holds `now`.
    end = _floor(now, hourly) + (timedelta(hours=1) if hourly else timedelta(days=1))
    return InsightsQuery(name, end - span, end, **filters)


# --- the numbers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    start: datetime
    end: datetime
    started: int
    completed: int
    failed: int

    @property
    def ended(self) -> int:
        return self.completed + self.failed

    @property
    def failure_rate(self) -> float | None:
        """failed / (completed + failed); None when nothing ended."""
        return self.failed / self.ended if self.ended else None


@dataclass(frozen=True)
class Tally:
    """One bar of a breakdown: its label, its number and the sessions behind it."""

    key: str
    label: str
    count: int
    url: str
    title: str = ""


@dataclass(frozen=True)
class PlatformRow:
    platform: str
    label: str
    started: int
    completed: int
    failed: int
    url: str
    failed_url: str

    @property
    def failure_rate(self) -> float | None:
        ended = self.completed + self.failed
        return self.failed / ended if ended else None


@dataclass(frozen=True)
class Insights:
    query: InsightsQuery
    buckets: list[Bucket]
    errors: list[Tally]
    platforms: list[PlatformRow]
    durations: list[Tally]
    in_meeting_count: int
    median_to_meeting: timedelta | None
    p90_to_meeting: timedelta | None

    @property
    def started(self) -> int:
        return sum(b.started for b in self.buckets)

    @property
    def completed(self) -> int:
        return sum(b.completed for b in self.buckets)

    @property
    def failed(self) -> int:
        return sum(b.failed for b in self.buckets)

    @property
    def failure_rate(self) -> float | None:
        ended = self.completed + self.failed
        return self.failed / ended if ended else None

    @property
    def median_text(self) -> str:
        return format_duration(_seconds(self.median_to_meeting))

    @property
    def p90_text(self) -> str:
        return format_duration(_seconds(self.p90_to_meeting))

    def bucket_url(self, bucket: Bucket, status: str = "") -> str:
        return self.query.list_url(start=bucket.start, end=bucket.end, status=status)


def _seconds(value: timedelta | None) -> float | None:
    return None if value is None else value.total_seconds()


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f} %"


def _bucket_starts(query: InsightsQuery) -> list[datetime]:
    step = timedelta(hours=1) if query.hourly else timedelta(days=1)
    moment = _floor(query.start, query.hourly)
    starts = []
    while moment < query.end:
        starts.append(moment)
        moment += step
    return starts


@dataclass(frozen=True)
class Group:
    """One row of the page's one GROUP BY: sessions of one bucket, platform, status and code."""

    bucket: datetime
    platform: str
    status: str
    error_code: str
    count: int


def grouped(query: InsightsQuery) -> list[Group]:
    """Sessions per (bucket, platform, status, error code): one scan of the range gives the
    buckets, the platforms and the error codes (a few thousand rows at most)."""
    trunc = TruncHour if query.hourly else TruncDay
    rows = (
        query.sessions()
        .annotate(bucket=trunc("started_at", tzinfo=UTC))
        .values("bucket", "platform", "status", "error_code")
        .annotate(n=Count("pk"))
        .order_by()
    )
    return [
        Group(
            row["bucket"].astimezone(UTC),
            row["platform"],
            row["status"],
            row["error_code"] if row["status"] == FAILED else "",
            row["n"],
        )
        for row in rows
    ]


def time_buckets(query: InsightsQuery, groups: Sequence[Group]) -> list[Bucket]:
    """Started / completed / failed per hour or UTC day, every bucket of the range (empty
    ones too); the first and last are clipped to the range."""
    counts: dict[datetime, list[int]] = {}
    for group in groups:
        started, completed, failed = counts.setdefault(group.bucket, [0, 0, 0])
        counts[group.bucket] = [
            started + group.count,
            completed + (group.count if group.status == COMPLETED else 0),
            failed + (group.count if group.status == FAILED else 0),
        ]
    step = timedelta(hours=1) if query.hourly else timedelta(days=1)
    return [
        Bucket(max(start, query.start), min(start + step, query.end), *counts.get(start, [0, 0, 0]))
        for start in _bucket_starts(query)
    ]


def error_codes(query: InsightsQuery, groups: Sequence[Group]) -> list[Tally]:
    """Failed sessions by error code, most first: the top ten, then the rest as "other"."""
    by_code: dict[str, int] = {}
    for group in groups:
        if group.status == FAILED:
            by_code[group.error_code] = by_code.get(group.error_code, 0) + group.count
    counts = sorted(by_code.items(), key=lambda item: (-item[1], item[0]))
    bars = [
        Tally(
            code,
            code or "(no code)",
            n,
            query.list_url(status=FAILED, error_code=code)
            if code
            else query.list_url(status=FAILED),
            failure_explanation(code) if code else "Failed without an error code",
        )
        for code, n in counts[:TOP_ERROR_CODES]
    ]
    rest = counts[TOP_ERROR_CODES:]
    if rest:
        bars.append(
            Tally(
                OTHER,
                f"Other ({len(rest)} codes)",
                sum(n for _, n in rest),
                query.list_url(status=FAILED),
                "Every other error code; the link opens all failed sessions of the range",
            )
        )
    return bars


def platforms(query: InsightsQuery, groups: Sequence[Group]) -> list[PlatformRow]:
    by_platform: dict[str, list[int]] = {}
    for group in groups:
        started, completed, failed = by_platform.setdefault(group.platform, [0, 0, 0])
        by_platform[group.platform] = [
            started + group.count,
            completed + (group.count if group.status == COMPLETED else 0),
            failed + (group.count if group.status == FAILED else 0),
        ]
    ordered = sorted(by_platform.items(), key=lambda item: (-item[1][0], item[0]))
    return [
        PlatformRow(
            platform,
            platform_label(platform),
            started,
            completed,
            failed,
            query.list_url(platform=platform),
            query.list_url(platform=platform, status=FAILED),
        )
        for platform, (started, completed, failed) in ordered
    ]


class PercentileCont(Aggregate):
    """PostgreSQL's `percentile_cont(fraction) WITHIN GROUP (ORDER BY expression)`, of a
    duration in seconds: sorting floats is about twice as fast as sorting intervals, and
    aggregates over the same ordered input share one sort."""

    function = "PERCENTILE_CONT"
    template = (
        "%(function)s(%(fraction)s) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM %(expressions)s))"
    )

    def __init__(self, expression: Any, fraction: float, **extra: Any) -> None:
        super().__init__(
            expression, fraction=repr(float(fraction)), output_field=FloatField(), **extra
        )


def interpolated_percentile(ordered: Sequence[timedelta], fraction: float) -> timedelta | None:
    """`percentile_cont` computed in Python: linear interpolation between the two closest
    ranks of the ordered values, so SQLite and PostgreSQL give the same figure."""
    if not ordered:
        return None
    position = fraction * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _delta(seconds: float | None) -> timedelta | None:
    return None if seconds is None else timedelta(seconds=round(float(seconds), 6))


def _duration_filters() -> dict[str, Any]:
    counts = {}
    for index, (_label, low, high) in enumerate(DURATION_BUCKETS):
        condition = Q(in_meeting_for__gte=low)
        if high is not None:
            condition &= Q(in_meeting_for__lt=high)
        counts[f"d{index}"] = Count("pk", filter=condition)
    return counts


def in_meeting(query: InsightsQuery) -> tuple[int, timedelta | None, timedelta | None, list[int]]:
    """How many reached the meeting, the median and p90 of the time from start to in-meeting,
    and the histogram of in-meeting durations (sessions that ended after being in).

    On PostgreSQL the percentiles are `percentile_cont` in the same single query as the
    histogram; on SQLite (no ordered-set aggregates) they are computed here from the
    ordered values (a second query), with the same interpolation.
    """
    reached = (
        query.sessions()
        .filter(in_meeting_at__isnull=False)
        .annotate(
            to_meeting=ExpressionWrapper(
                F("in_meeting_at") - F("started_at"), output_field=DurationField()
            ),
            in_meeting_for=ExpressionWrapper(
                F("ended_at") - F("in_meeting_at"), output_field=DurationField()
            ),
        )
    )
    aggregates: dict[str, Any] = {"n": Count("pk"), **_duration_filters()}
    postgres = connection.vendor == "postgresql"
    if postgres:
        aggregates["p50"] = PercentileCont("to_meeting", 0.5)
        aggregates["p90"] = PercentileCont("to_meeting", 0.9)
    totals = reached.aggregate(**aggregates)
    histogram = [int(totals[f"d{index}"]) for index in range(len(DURATION_BUCKETS))]
    if postgres:
        return int(totals["n"]), _delta(totals["p50"]), _delta(totals["p90"]), histogram
    ordered = list(reached.order_by("to_meeting").values_list("to_meeting", flat=True))
    return (
        int(totals["n"]),
        interpolated_percentile(ordered, 0.5),
        interpolated_percentile(ordered, 0.9),
        histogram,
    )


def read_insights(query: InsightsQuery) -> Insights:
    """Every number on the page: two aggregate queries (three on SQLite)."""
    reached, median, p90, histogram = in_meeting(query)
    groups = grouped(query)
    durations = [
        Tally(
            label,
            label,
            count,
            query.list_url(),
            f"{count} sessions in the meeting for {label}; the link opens every session of "
            "the range (the list does not filter by duration)",
        )
        for (label, _low, _high), count in zip(DURATION_BUCKETS, histogram, strict=True)
    ]
    return Insights(
        query=query,
        buckets=time_buckets(query, groups),
        errors=error_codes(query, groups),
        platforms=platforms(query, groups),
        durations=durations,
        in_meeting_count=reached,
        median_to_meeting=median,
        p90_to_meeting=p90,
    )


CHOICES_CACHE_KEY = "insights:filter-choices"
CHOICES_CACHE_SECONDS = 60


def filter_choices() -> dict[str, list[str]]:
    """The platforms and error codes there are, for the filter form. Two index-only scans
    of every session (~30 ms at 100k on PostgreSQL), so kept a minute in the cache: a new
    platform or code shows in the form within a minute (the filters take any value anyway)."""
    choices = cache.get_or_set(CHOICES_CACHE_KEY, _read_filter_choices, CHOICES_CACHE_SECONDS)
    return choices if isinstance(choices, dict) else _read_filter_choices()


def _read_filter_choices() -> dict[str, list[str]]:
    sessions = MeetingSession.objects.order_by()
    return {
        "platforms": sorted(p for p in sessions.values_list("platform", flat=True).distinct() if p),
        "error_codes": sorted(
            c for c in sessions.values_list("error_code", flat=True).distinct() if c
        ),
    }
