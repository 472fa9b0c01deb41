"""The session list's tools: which sessions it shows and in what order, from its GET params.

One parser for every place that reads them: the page (`views`), its live socket's hello
(`consumers`), and the CSV export of the same filter. `ListFilters.apply` narrows a queryset;
`ListFilters.matches` answers the same question for one `sessions.summary` payload, so the live
list lets a session in or out exactly as a fresh render would.

The search box (`q`) also matches participants' names, which a summary does not carry: it is
parsed and carried here, but applied by `selectors.search_sessions`, and the live list keeps
its own rule for it (a shown row stays, a new one must match the summary's text).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, time, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db.models import (
    Case,
    DurationField,
    ExpressionWrapper,
    F,
    IntegerField,
    Q,
    QuerySet,
    Value,
    When,
)
from django.db.models.expressions import OrderBy
from django.db.models.functions import Coalesce
from django.http import QueryDict
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from sessions_monitor import presentation
from sessions_monitor.models import MeetingSession
from sessions_monitor.presentation import FILTERS, LOST_CONTACT
from sessions_monitor.upstream import TERMINAL_STATUSES
from sessions_monitor.upstream.events import STATUSES

RANGES: dict[str, tuple[str, timedelta]] = {
    "24h": ("last 24 hours", timedelta(hours=24)),
    "7d": ("last 7 days", timedelta(days=7)),
    "30d": ("last 30 days", timedelta(days=30)),
}
CUSTOM_RANGE = "custom"  # the form's "custom dates" choice: `from`/`to` decide
DEFAULT_SORT = "-started"
SORTS: dict[str, str] = {
    "-started": "Newest started first",
    "started": "Oldest started first",
    "-duration": "Longest first",
    "duration": "Shortest first",
    "status": "Status (lifecycle order)",
    "-status": "Status (reverse lifecycle order)",
}
# Lifecycle order for `sort=status`; any other status after these, alphabetically.
STATUS_ORDER = STATUSES
MAX_TEXT = 200
# The params that narrow the list beyond its tab; any of them without a `filter` shows "All".
NARROWING = ("status", "platform", "bot", "error_code", "range", "from", "to")
DATE_HELP = "use YYYY-MM-DD or YYYY-MM-DDTHH:MM (UTC)"
HELLO_PARAMS = ("filter", "q", *NARROWING, "sort")


def _text(params: Mapping[str, Any], name: str) -> str:
    return str(params.get(name) or "").strip()[:MAX_TEXT]


def parse_moment(text: str) -> datetime | None:
    """An ISO date (midnight UTC) or datetime (UTC unless it names its offset); None if it
    is neither."""
    try:
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            moment = None if day is None else datetime.combine(day, time.min)
    except ValueError:  # well formed but impossible, e.g. 2026-02-30
        return None
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@dataclass(frozen=True)
class ListFilters:
    """The list's parameters, parsed. `errors` says what was refused (and so ignored)."""

    filter: str = "live"
    query: str = ""
    status: str = ""
    platform: str = ""
    bot: str = ""
    error_code: str = ""
    range: str = ""
    start: datetime | None = None  # `from`, inclusive
    end: datetime | None = None  # `to`, exclusive
    sort: str = DEFAULT_SORT
    errors: tuple[str, ...] = field(default=(), compare=False)
    # What the user typed for from/to, kept for the form even when refused.
    start_text: str = field(default="", compare=False)
    end_text: str = field(default="", compare=False)
    # Every param as received: the live hello repeats them, so the socket's re-render
    # refuses what the first render refused, with the same messages.
    received: tuple[tuple[str, str], ...] = field(default=(), compare=False)

    @classmethod
    def from_params(cls, params: QueryDict | Mapping[str, Any]) -> ListFilters:
        errors: list[str] = []
        narrowed = any(_text(params, name) for name in NARROWING)
        filter_name = _text(params, "filter") or ("all" if narrowed else "live")
        if filter_name not in FILTERS:  # an old or mistyped tab link: Live, as ever
            filter_name = "live"
        range_name = _text(params, "range")
        if range_name and range_name not in RANGES and range_name != CUSTOM_RANGE:
            errors.append(f"Unknown time range “{range_name}”: choose 24h, 7d or 30d.")
            range_name = ""
        start_text, end_text = _text(params, "from"), _text(params, "to")
        start = end = None
        if range_name not in RANGES:
            start = cls._moment(start_text, "From", errors)
            end = cls._moment(end_text, "To", errors)
            if start is not None and end is not None and start >= end:
                errors.append("“From” must be before “To”: the dates were ignored.")
                start = end = None
        sort = _text(params, "sort") or DEFAULT_SORT
        if sort not in SORTS:
            errors.append(f"Unknown sort “{sort}”: showing newest started first.")
            sort = DEFAULT_SORT
        return cls(
            filter=filter_name,
            query=_text(params, "q"),
            status=_text(params, "status"),
            platform=_text(params, "platform"),
            bot=_text(params, "bot"),
            error_code=_text(params, "error_code"),
            range=range_name if range_name in RANGES else "",
            start=start,
            end=end,
            sort=sort,
            errors=tuple(errors),
            start_text=start_text,
            end_text=end_text,
            received=tuple((name, _text(params, name)) for name in HELLO_PARAMS),
        )

    @staticmethod
    def _moment(text: str, label: str, errors: list[str]) -> datetime | None:
        if not text:
            return None
        moment = parse_moment(text)
        if moment is None:
            errors.append(f"“{label}” is not a date or time: {DATE_HELP}. It was ignored.")
        return moment

    # --- params ----------------------------------------------------------------------------

    def to_params(self) -> dict[str, str]:
        """The GET params that give these filters back (defaults left out), in a fixed order."""
        values = {
            "filter": self.filter,
            "q": self.query,
            "status": self.status,
            "platform": self.platform,
            "bot": self.bot,
            "error_code": self.error_code,
            "range": self.range,
            "from": "" if self.start is None else (self.start_text or _iso(self.start)),
            "to": "" if self.end is None else (self.end_text or _iso(self.end)),
            "sort": "" if self.sort == DEFAULT_SORT else self.sort,
        }
        return {name: value for name, value in values.items() if value}

    @property
    def query_string(self) -> str:
        """`to_params` urlencoded (no page): pagination, the CSV link, the URL."""
        return urlencode(self.to_params())

    @property
    def chip_suffix(self) -> str:
        """Everything but the tab, as `&…` to follow `?filter=<tab>` in a chip's link."""
        rest = {k: v for k, v in self.to_params().items() if k != "filter"}
        return "&" + urlencode(rest) if rest else ""

    @property
    def clear_url(self) -> str:
        return "?" + urlencode({"filter": self.filter})

    @property
    def hello(self) -> list[tuple[str, str]]:
        """The live socket's hello fields (besides the page): every param as received (the
        tab as understood), empty ones too."""
        received = dict(self.received) or self.to_params()
        return [
            (name, self.filter if name == "filter" else received.get(name, ""))
            for name in HELLO_PARAMS
        ]

    @property
    def key(self) -> tuple[tuple[str, str], ...]:
        """A hashable identity (single flight, render caches): what it shows, and says."""
        return (*self.to_params().items(), *(("error", error) for error in self.errors))

    # --- what the page says ------------------------------------------------------------------

    @property
    def beside_tab(self) -> ListFilters:
        """The same filters under the All tab (what the "Recently ended" strip obeys)."""
        return replace(self, filter="all")

    @property
    def is_default_sort(self) -> bool:
        return self.sort == DEFAULT_SORT

    @property
    def sort_label(self) -> str:
        return SORTS[self.sort]

    @property
    def status_choices(self) -> list[tuple[str, str]]:
        return [(status, presentation.status_label(status)) for status in STATUS_ORDER]

    @property
    def range_choices(self) -> list[tuple[str, str]]:
        presets = [(name, label.capitalize()) for name, (label, _) in RANGES.items()]
        return [*presets, (CUSTOM_RANGE, "Custom: From / To")]

    @property
    def sort_choices(self) -> list[tuple[str, str]]:
        return list(SORTS.items())

    @property
    def range_choice(self) -> str:
        """The range select's value: a preset, custom (dates given), or '' (any time)."""
        if self.range:
            return self.range
        return CUSTOM_RANGE if (self.start_text or self.end_text) else ""

    @property
    def narrowed(self) -> bool:
        return bool(
            self.status
            or self.platform
            or self.bot
            or self.error_code
            or self.range
            or self.start
            or self.end
            or self.query
            or not self.is_default_sort
        )

    @property
    def summary(self) -> str:
        """The active filters in words: "Failed · zoom · JOIN_TIMEOUT · last 7 days"."""
        parts = [FILTERS[self.filter]]
        if self.status:
            parts.append(presentation.status_label(self.status))
        parts += [text for text in (self.platform, self.bot, self.error_code) if text]
        if self.range:
            parts.append(RANGES[self.range][0])
        if self.start is not None:
            parts.append(f"from {_iso(self.start)}")
        if self.end is not None:
            parts.append(f"until {_iso(self.end)}")
        if self.query:
            parts.append(f"matching “{self.query}”")
        if not self.is_default_sort:
            parts.append(f"sorted: {self.sort_label.lower()}")
        return " · ".join(parts)

    # --- which sessions ----------------------------------------------------------------------

    def _exact(self) -> dict[str, str]:
        """The exact-match columns these filters set (a summary carries the same names)."""
        exact = {
            "status": self.status,
            "platform": self.platform,
            "bot_name": self.bot,
            "error_code": self.error_code,
        }
        return {name: value for name, value in exact.items() if value}

    def window(self, now: datetime | None = None) -> tuple[datetime | None, datetime | None]:
        """The `started_at` window [start, end) as of `now` (a preset range moves with it)."""
        if self.range:
            now = now or timezone.now()
            return now - RANGES[self.range][1], None
        return self.start, self.end

    def apply(
        self, queryset: QuerySet[MeetingSession], now: datetime | None = None
    ) -> QuerySet[MeetingSession]:
        """`queryset` narrowed to these filters (the tab and the exact-match fields and the
        time window; not the search, see the module's note)."""
        live = ~Q(status__in=TERMINAL_STATUSES)
        tab = {
            "live": live & ~Q(stream_state=LOST_CONTACT),
            "attention": live & Q(stream_state=LOST_CONTACT),
            "ended": Q(status__in=TERMINAL_STATUSES),
            "failed": Q(status="failed"),
            "all": Q(),
        }[self.filter]
        exact = self._exact()
        condition = tab & Q(**exact)
        start, end = self.window(now)
        if start is not None:
            condition &= Q(started_at__gte=start)
        if end is not None:
            condition &= Q(started_at__lt=end)
        return queryset.filter(condition)

    def matches(self, summary: Mapping[str, Any], now: datetime | None = None) -> bool:
        """Whether the session of this `sessions.summary` payload passes `apply`."""
        status = str(summary.get("status") or "")
        stream_state = str(summary.get("stream_state") or "")
        if not presentation.matches_filter(status, self.filter, stream_state):
            return False
        exact = self._exact()
        if any(str(summary.get(name) or "") != wanted for name, wanted in exact.items()):
            return False
        start, end = self.window(now)
        if start is None and end is None:
            return True
        started = presentation.as_datetime(summary.get("started_at"))
        if started is None:
            return False
        return (start is None or started >= start) and (end is None or started < end)

    def ordering(self, now: datetime | None = None) -> list[OrderBy | F | str]:
        """The list's `order_by`: a NULL started_at (so a NULL duration) always sorts last;
        ties fall back to the default order, so the order is total and pages never overlap."""
        default: list[OrderBy | F | str] = [
            F("started_at").desc(nulls_last=True),
            "-first_seen_at",
            "session_id",
        ]
        name = self.sort.lstrip("-")
        descending = self.sort.startswith("-")
        if name == "started" and descending:
            return default
        if name == "started":
            return [F("started_at").asc(nulls_last=True), "first_seen_at", "session_id"]
        if name == "duration":
            ends = Coalesce(F("ended_at"), Value(now or timezone.now()))
            expression: ExpressionWrapper[Any] | Case = ExpressionWrapper(
                ends - F("started_at"), output_field=DurationField()
            )
        else:
            expression = Case(
                *(When(status=status, then=Value(n)) for n, status in enumerate(STATUS_ORDER)),
                default=Value(len(STATUS_ORDER)),
                output_field=IntegerField(),
            )
        key = expression.desc(nulls_last=True) if descending else expression.asc(nulls_last=True)
        extra: list[OrderBy | F | str] = []
        if name == "status":
            extra = [F("status").desc() if descending else F("status").asc()]
        return [key, *extra, *default]


def _iso(moment: datetime) -> str:
    text = moment.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text
