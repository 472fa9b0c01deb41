"""The Insights page: range parsing, the aggregates on a known data set (SQLite and
PostgreSQL), the page's tables and charts, and the sessions behind every bar."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from sessions_monitor import insights, insights_svg
from sessions_monitor.insights import InsightsQuery, parse_query, read_insights
from sessions_monitor.models import MeetingSession
from tests.support import service_missing

pytestmark = pytest.mark.django_db

DAY = datetime(2026, 1, 1, tzinfo=UTC)
ONE_DAY = {"range": "custom", "from": "2026-01-01", "to": "2026-01-01"}
NOW = datetime(2026, 12, 4, 12, 30, 15, tzinfo=UTC)


def at(hour: int, minute: int = 0) -> datetime:
    return DAY + timedelta(hours=hour, minutes=minute)


def add(
    session_id: str,
    started: datetime,
    status: str,
    *,
    platform: str = "zoom",
    bot: str = "Buddy",
    error_code: str = "",
    to_meeting: float | None = None,
    in_meeting: float | None = None,
) -> None:
    """A session that started at `started`; `to_meeting` seconds later it was in the meeting,
    and `in_meeting` seconds after that it ended."""
    in_at = started + timedelta(seconds=to_meeting) if to_meeting is not None else None
    ended = None
    if status in ("completed", "failed"):
        ended = (in_at + timedelta(seconds=in_meeting or 0)) if in_at else started
    MeetingSession.objects.create(
        session_id=session_id,
        started_at=started,
        status=status,
        platform=platform,
        bot_name=bot,
        error_code=error_code,
        in_meeting_at=in_at,
        ended_at=ended,
    )


@pytest.fixture
def known() -> None:
    """Six sessions on 2026-01-01 (hours 9, 10, 13) and two just outside that day."""
    add("mbsess_a", at(9, 5), "completed", to_meeting=30, in_meeting=600)
    add("mbsess_b", at(9, 20), "completed", platform="teams", to_meeting=60, in_meeting=2400)
    add("mbsess_c", at(9, 59), "failed", error_code="JOIN_TIMEOUT", bot="Scribe")
    add("mbsess_d", at(10, 0), "failed", platform="teams", error_code="WAITING_ROOM_TIMEOUT")
    add("mbsess_e", at(10, 30), "active", to_meeting=90)
    add("mbsess_f", at(13), "completed", platform="google_meet", to_meeting=120, in_meeting=10800)
    add("mbsess_before", DAY - timedelta(seconds=1), "completed", to_meeting=5, in_meeting=5)
    add("mbsess_after", DAY + timedelta(days=1), "failed", error_code="JOIN_TIMEOUT")


def one_day(**filters: str) -> InsightsQuery:
    return parse_query({**ONE_DAY, **filters}, NOW)


# --- range parsing ----------------------------------------------------------------------------


def test_fixed_ranges_end_with_the_bucket_that_holds_now() -> None:
    day = parse_query({}, NOW)
    assert (day.range, day.hourly) == ("24h", True)
    assert day.start == datetime(2026, 12, 3, 13, tzinfo=UTC)
    assert day.end == datetime(2026, 12, 4, 13, tzinfo=UTC)
    week = parse_query({"range": "7d"}, NOW)
    assert week.hourly is False
    assert (week.start, week.end) == (
        datetime(2026, 11, 28, tzinfo=UTC),
        datetime(2026, 12, 5, tzinfo=UTC),
    )
    month = parse_query({"range": "30d"}, NOW)
    assert month.end - month.start == timedelta(days=30)
    assert parse_query({"range": "forever"}, NOW).range == "24h"


def test_custom_ranges_take_dates_and_iso_datetimes_in_utc() -> None:
    day = one_day()
    assert (day.start, day.end, day.hourly) == (DAY, DAY + timedelta(days=1), True)
    span = parse_query(
        {"range": "custom", "from": "2026-01-01T10:00:00+02:00", "to": "2026-01-03T00:00"}, NOW
    )
    assert span.start == datetime(2026, 1, 1, 8, tzinfo=UTC)
    assert span.end == datetime(2026, 1, 3, tzinfo=UTC)
    assert span.hourly is True  # 40 h
    assert (
        parse_query({"range": "custom", "from": "2026-01-01", "to": "2026-01-03"}, NOW).hourly
        is False
    )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"from": "", "to": "2026-01-02"}, "needs both a start (From) and an end (To)"),
        ({"from": "yesterday", "to": "2026-01-02"}, "“yesterday” is not a date (YYYY-MM-DD)"),
        ({"from": "2026-01-05", "to": "2026-01-02"}, "The start (From) must be before the end"),
        ({"from": "2026-01-02T10:00Z", "to": "2026-01-02T10:00Z"}, "must be before the end"),
        ({"from": "2024-01-01", "to": "2026-01-02"}, "at most 400 days (this one spans 733)"),
        ({"from": "2026-01-01", "to": "9999-12-31"}, "“9999-12-31” is out of range."),
        ({"from": "2026-02-30", "to": "2026-03-02"}, "“2026-02-30” is not a date"),
    ],
)
def test_invalid_custom_ranges_say_why_and_fall_back_to_24h(
    params: dict[str, str], message: str
) -> None:
    query = parse_query({"range": "custom", "platform": "zoom", **params}, NOW)
    assert message in query.error
    assert query.range == "custom" and query.from_text == params["from"].strip()
    assert query.end - query.start == timedelta(hours=24) and query.platform == "zoom"


def test_exactly_400_days_is_allowed() -> None:
    query = parse_query({"range": "custom", "from": "2025-01-01", "to": "2026-02-04"}, NOW)
    assert query.error == "" and query.end - query.start == timedelta(days=400)


# --- the aggregates -----------------------------------------------------------------------------


def check_known_day(result: insights.Insights) -> None:
    assert len(result.buckets) == 24
    by_hour = {b.start.hour: b for b in result.buckets if b.started}
    assert set(by_hour) == {9, 10, 13}
    nine, ten, one = by_hour[9], by_hour[10], by_hour[13]
    assert (nine.started, nine.completed, nine.failed) == (3, 2, 1)
    assert nine.failure_rate == pytest.approx(1 / 3)
    assert (ten.started, ten.completed, ten.failed, ten.failure_rate) == (2, 0, 1, 1.0)
    assert (one.started, one.completed, one.failed, one.failure_rate) == (1, 1, 0, 0.0)
    assert result.buckets[0].failure_rate is None
    assert (result.started, result.completed, result.failed) == (6, 3, 2)
    assert result.failure_rate == pytest.approx(2 / 5)
    assert [(e.key, e.count) for e in result.errors] == [
        ("JOIN_TIMEOUT", 1),
        ("WAITING_ROOM_TIMEOUT", 1),
    ]
    assert [(p.platform, p.started, p.completed, p.failed) for p in result.platforms] == [
        ("zoom", 3, 1, 1),
        ("teams", 2, 1, 1),
        ("google_meet", 1, 1, 0),
    ]
    # Time to in-meeting: 30, 60, 90, 120 s; percentile_cont interpolates.
    assert result.in_meeting_count == 4
    assert result.median_to_meeting == timedelta(seconds=75)
    assert result.p90_to_meeting == timedelta(seconds=111)
    # In the meeting for 10 min, 40 min and 3 h (the active one has not ended).
    assert [d.count for d in result.durations] == [0, 1, 0, 1, 0, 1]


def test_aggregates_of_a_known_day(known: None) -> None:
    check_known_day(read_insights(one_day()))


@pytest.mark.postgres
def test_aggregates_of_a_known_day_on_postgresql(known: None) -> None:
    if connection.vendor != "postgresql":
        service_missing("needs PostgreSQL (DATABASE_URL=postgres://...)")
    check_known_day(read_insights(one_day()))


def test_percentiles_are_percentile_cont() -> None:
    values = [timedelta(seconds=s) for s in (10, 20, 30, 40, 100)]
    assert insights.interpolated_percentile(values, 0.5) == timedelta(seconds=30)
    assert insights.interpolated_percentile(values, 0.9) == timedelta(seconds=76)
    assert insights.interpolated_percentile(values[:1], 0.9) == timedelta(seconds=10)
    assert insights.interpolated_percentile([], 0.5) is None


def test_filters_narrow_every_aggregate(known: None) -> None:
    zoom = read_insights(one_day(platform="zoom"))
    assert (zoom.started, zoom.completed, zoom.failed) == (3, 1, 1)
    assert [p.platform for p in zoom.platforms] == ["zoom"]
    assert zoom.median_to_meeting == timedelta(seconds=60)  # 30 and 90
    scribe = read_insights(one_day(bot="Scribe"))
    assert (scribe.started, scribe.failed, scribe.in_meeting_count) == (1, 1, 0)
    assert scribe.median_to_meeting is None and scribe.median_text == "—"
    assert read_insights(one_day(bot="scribe")).started == 0  # exact, as the list's bot=
    code = read_insights(one_day(error_code="WAITING_ROOM_TIMEOUT"))
    assert (code.started, code.failed, [e.key for e in code.errors]) == (
        1,
        1,
        ["WAITING_ROOM_TIMEOUT"],
    )


def test_axis_maxima_are_round() -> None:
    assert [insights_svg.nice_ceiling(v) for v in (0, 1, 2.2, 3, 7, 11, 218, 251, 999)] == [
        1,
        1,
        5,
        5,
        10,
        20,
        250,
        500,
        1000,
    ]


def test_top_ten_error_codes_then_other() -> None:
    start = datetime(2026, 2, 1, tzinfo=UTC)
    rows = []
    for code_index in range(12):
        for n in range(12 - code_index):
            rows.append(
                MeetingSession(
                    session_id=f"mbsess_e{code_index:02d}x{n:02d}",
                    started_at=start + timedelta(minutes=code_index * 20 + n),
                    status="failed",
                    error_code=f"CODE_{code_index:02d}",
                )
            )
    MeetingSession.objects.bulk_create(rows)
    errors = read_insights(
        parse_query({"range": "custom", "from": "2026-02-01", "to": "2026-02-01"}, NOW)
    ).errors
    assert [e.key for e in errors] == [f"CODE_{i:02d}" for i in range(10)] + ["other"]
    assert [e.count for e in errors] == [12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 3]
    assert errors[-1].label == "Other (2 codes)"
    assert "error_code" not in parse_qs(urlsplit(errors[-1].url).query)


def test_daily_buckets_clip_to_a_custom_range(known: None) -> None:
    query = parse_query(
        {"range": "custom", "from": "2025-12-31T12:00Z", "to": "2026-01-03T06:00Z"}, NOW
    )
    result = read_insights(query)
    assert [(b.start, b.end) for b in result.buckets] == [
        (datetime(2025, 12, 31, 12, tzinfo=UTC), DAY),
        (DAY, DAY + timedelta(days=1)),
        (DAY + timedelta(days=1), DAY + timedelta(days=2)),
        (DAY + timedelta(days=2), datetime(2026, 1, 3, 6, tzinfo=UTC)),
    ]
    assert [b.started for b in result.buckets] == [1, 6, 1, 0]


# --- the page ---------------------------------------------------------------------------------


class Page(HTMLParser):
    """The links of the page's charts (with their tooltip) and the cells of its tables."""

    def __init__(self) -> None:
        super().__init__()
        self.bars: list[tuple[str, str, str]] = []  # (chart id, href, title)
        self.tables: dict[str, list[list[str]]] = {}
        self.styles = 0
        self._chart = ""
        self._href = ""
        self._title: list[str] | None = None
        self._table = ""
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.styles += "style" in attributes
        if tag == "svg":
            self._chart = attributes.get("id") or ""
        elif tag == "a" and self._chart:
            self._href = attributes.get("href") or ""
        elif tag == "title" and self._href:
            self._title = []
        elif tag == "table":
            self._table = attributes.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._chart = ""
        elif tag == "title" and self._title is not None:
            self.bars.append((self._chart, self._href, "".join(self._title)))
            self._title = None
        elif tag == "a":
            self._href = ""
        elif tag == "table":
            self._table = ""
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._title is not None:
            self._title.append(data)
        if self._cell is not None:
            self._cell.append(data)


def parse_page(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def sessions_behind(url: str) -> int:
    """What the session list shows for these parameters (the contract of its filters)."""
    parts = urlsplit(url)
    assert parts.path == reverse("session-list")
    params = {key: values[0] for key, values in parse_qs(parts.query).items()}
    assert params.pop("filter") == "all"
    found = MeetingSession.objects.filter(
        started_at__gte=datetime.fromisoformat(params.pop("from")),
        started_at__lt=datetime.fromisoformat(params.pop("to")),
    )
    for name, column in (
        ("status", "status"),
        ("platform", "platform"),
        ("bot", "bot_name"),
        ("error_code", "error_code"),
    ):
        if name in params:
            found = found.filter(**{column: params.pop(name)})
    assert params == {}, f"unknown parameters {params}"
    return found.count()


@pytest.fixture
def client_in(client: Client) -> Client:
    client.force_login(User.objects.create_user("viewer", password="x"))
    return client


def test_login_required(client: Client) -> None:
    response = client.get(reverse("insights"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def our_queries(client: Client, params: dict[str, str]) -> tuple[str, list[str]]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(reverse("insights"), params)
    assert response.status_code == 200
    sql = [q["sql"] for q in captured.captured_queries if "meetingsession" in q["sql"]]
    return response.content.decode(), sql


def test_the_page_tables_match_the_numbers(known: None, client_in: Client) -> None:
    cache.delete(insights.CHOICES_CACHE_KEY)
    html, ours = our_queries(client_in, ONE_DAY)
    # One GROUP BY, in-meeting (+ its ordered values on SQLite), the form's two choices.
    assert len(ours) == (4 if connection.vendor == "postgresql" else 5), ours
    assert len(our_queries(client_in, ONE_DAY)[1]) == len(ours) - 2  # choices are cached
    for option in ("google_meet", "teams", "zoom", "JOIN_TIMEOUT", "WAITING_ROOM_TIMEOUT"):
        assert f'<option value="{option}">{option}</option>' in html
    page = parse_page(html)
    assert page.styles == 0  # the CSP allows no style= attribute
    hours = {row[0]: row[1:] for row in page.tables["table-time"][1:]}
    assert len(hours) == 24
    assert hours["2026-01-01 09:00"] == ["3", "2", "1", "33.3 %"]
    assert hours["2026-01-01 10:00"] == ["2", "0", "1", "100.0 %"]
    assert hours["2026-01-01 13:00"] == ["1", "1", "0", "0.0 %"]
    assert hours["2026-01-01 00:00"] == ["0", "0", "0", "—"]
    assert page.tables["table-errors"][1:] == [["JOIN_TIMEOUT", "1"], ["WAITING_ROOM_TIMEOUT", "1"]]
    assert page.tables["table-platforms"][1:] == [
        ["Zoom", "3", "1", "50.0 %"],
        ["Microsoft Teams", "2", "1", "50.0 %"],
        ["Google Meet", "1", "0", "0.0 %"],
    ]
    assert [row[1] for row in page.tables["table-durations"][1:]] == ["0", "1", "0", "1", "0", "1"]
    assert re.search(r'id="to-meeting-median">1 min 15 s<', html)
    assert re.search(r'id="to-meeting-p90">1 min 51 s<', html)
    assert re.search(r'id="total-rate">40.0 %<', html)
    for chart in ("chart-time", "chart-rate", "chart-errors", "chart-platforms"):
        assert f'<svg class="chart" id="{chart}"' in html
        assert f'aria-labelledby="{chart}-title {chart}-heading"' in html
        assert f'id="{chart}-heading"' in html


def test_every_bar_opens_the_sessions_behind_it(known: None, client_in: Client) -> None:
    page = parse_page(client_in.get(reverse("insights"), ONE_DAY).content.decode())
    charts = {chart for chart, _href, _title in page.bars}
    assert charts == {
        "chart-time",
        "chart-rate",
        "chart-errors",
        "chart-platforms",
        "chart-durations",
    }
    # 3 buckets × started + 4 segments; 3 rate points; 2 codes; 3 platforms; 3 durations.
    assert len(page.bars) == 7 + 3 + 2 + 3 + 3
    for chart, href, title in page.bars:
        opened = client_in.get(href)
        assert opened.status_code == 200, href
        assert "sessions_monitor/session_list.html" in [t.name for t in opened.templates]
        listed = opened.context["page_obj"].paginator.count
        if chart == "chart-durations":
            # The whole range: the list has no duration filter.
            assert sessions_behind(href) == listed == 6
            continue
        if chart == "chart-rate":
            expected = int(re.search(r"\((\d+) of \d+ ended\)", title)[1])  # type: ignore[index]
        else:
            expected = int(re.search(r": (\d+)", title)[1])  # type: ignore[index]
        assert sessions_behind(href) == listed == expected, (title, href, listed)
    started_9 = next(href for c, href, t in page.bars if t.endswith("09:00–10:00 UTC: 3 started"))
    assert parse_qs(urlsplit(started_9).query) == {
        "filter": ["all"],
        "from": ["2026-01-01T09:00:00Z"],
        "to": ["2026-01-01T10:00:00Z"],
    }


def test_filtered_page_links_keep_the_filters(known: None, client_in: Client) -> None:
    page = parse_page(
        client_in.get(
            reverse("insights"), {**ONE_DAY, "platform": "zoom", "bot": "Buddy"}
        ).content.decode()
    )
    assert page.bars
    for _chart, href, _title in page.bars:
        params = parse_qs(urlsplit(href).query)
        assert params["platform"] == ["zoom"] and params["bot"] == ["Buddy"]
    assert page.tables["table-platforms"][1:] == [["Zoom", "2", "0", "0.0 %"]]


def test_htmx_gets_the_results_partial_and_errors_are_shown(known: None, client_in: Client) -> None:
    response = client_in.get(reverse("insights"), ONE_DAY, headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<div id="insights-results"') and "<html" not in html
    assert response["Vary"] and "HX-Request" in response["Vary"]
    bad = client_in.get(
        reverse("insights"), {"range": "custom", "from": "2026-01-05", "to": "2026-01-01"}
    )
    assert bad.status_code == 200
    text = bad.content.decode()
    assert "The start (From) must be before the end (To). Showing last 24 hours instead." in text
    assert 'value="2026-01-05"' in text  # what was typed is kept


def test_nav_links_to_insights(client_in: Client) -> None:
    html = client_in.get(reverse("session-list")).content.decode()
    assert f'href="{reverse("insights")}"' in html
    page = client_in.get(reverse("insights")).content.decode()
    assert f'<a href="{reverse("insights")}" aria-current="page">Insights</a>' in page
