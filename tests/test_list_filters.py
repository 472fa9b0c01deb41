"""The session list's tools: parsing, each filter and sort on stored rows, the live list's
`matches` against the queryset's `apply`, the CSV export of a filter, and the live socket
honouring the filters."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.db import connection
from django.http import QueryDict
from django.test import AsyncClient, Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessions_monitor.csv_export import SESSION_CSV_COLUMNS
from sessions_monitor.list_filters import ListFilters, parse_moment
from sessions_monitor.messages import SESSIONS_GROUP
from sessions_monitor.models import MeetingSession
from sessions_monitor.routing import websocket_urlpatterns
from sessions_monitor.selectors import listed_sessions, session_summary
from tests.support import login_cookie, make_session, service_missing

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def q(text: str) -> QueryDict:
    return QueryDict(text)


@pytest.fixture
def alice(db: Any) -> User:
    return User.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def client_alice(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def session(session_id: str, **fields: Any) -> MeetingSession:
    """A stored session started at `started` (default: an hour before NOW)."""
    started = fields.pop("started", NOW - timedelta(hours=1))
    return make_session(session_id, started_at=started, **fields)


def ids(filters: ListFilters, now: datetime = NOW) -> list[str]:
    return list(listed_sessions(filters, now).values_list("session_id", flat=True))


# --- parsing --------------------------------------------------------------------------------


def test_defaults_are_the_list_as_it_was() -> None:
    filters = ListFilters.from_params(q(""))
    assert filters == ListFilters()
    assert (filters.filter, filters.sort, filters.errors) == ("live", "-started", ())
    assert filters.to_params() == {"filter": "live"}
    assert not filters.narrowed and filters.summary == "Live"


def test_every_param_round_trips_through_to_params() -> None:
    text = (
        "filter=failed&q=sales&status=failed&platform=zoom&bot=Note+taker"
        "&error_code=JOIN_TIMEOUT&from=2026-11-01&to=2026-12-01T10:30&sort=-duration"
    )
    filters = ListFilters.from_params(q(text))
    assert filters.errors == ()
    assert filters.start == datetime(2026, 11, 1, tzinfo=UTC)
    assert filters.end == datetime(2026, 12, 1, 10, 30, tzinfo=UTC)
    assert ListFilters.from_params(q(filters.query_string)) == filters
    assert filters.to_params()["bot"] == "Note taker"
    assert filters.chip_suffix.startswith("&q=sales&status=failed")
    assert "filter=" not in filters.chip_suffix
    assert filters.summary == (
        "Failed · Failed · zoom · Note taker · JOIN_TIMEOUT · from 2026-11-01T00:00:00Z"
        " · until 2026-12-01T10:30:00Z · matching “sales” · sorted: longest first"
    )


def test_the_issue_example_summary() -> None:
    filters = ListFilters.from_params(
        q("filter=failed&platform=zoom&error_code=JOIN_TIMEOUT&range=7d")
    )
    assert filters.summary == "Failed · zoom · JOIN_TIMEOUT · last 7 days"


def test_a_narrowing_link_without_a_tab_shows_all() -> None:
    assert ListFilters.from_params(q("status=failed")).filter == "all"
    assert ListFilters.from_params(q("filter=live&status=failed")).filter == "live"
    assert ListFilters.from_params(q("sort=duration")).filter == "live"
    assert ListFilters.from_params(q("filter=nonsense")).filter == "live"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01", datetime(2026, 12, 1, tzinfo=UTC)),
        ("2026-12-01T09:15", datetime(2026, 12, 1, 9, 15, tzinfo=UTC)),
        ("2026-12-01 09:15:30", datetime(2026, 12, 1, 9, 15, 30, tzinfo=UTC)),
        ("2026-12-01T09:15:00Z", datetime(2026, 12, 1, 9, 15, tzinfo=UTC)),
        ("2026-12-01T11:15:00+02:00", datetime(2026, 12, 1, 9, 15, tzinfo=UTC)),
        ("2026-02-30", None),
        ("yesterday", None),
        ("", None),
    ],
)
def test_dates_and_datetimes_are_read_as_utc(text: str, expected: datetime | None) -> None:
    assert parse_moment(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("from=2026-13-01", "“From” is not a date or time"),
        ("to=soon", "“To” is not a date or time"),
        ("from=2026-12-02&to=2026-12-01", "“From” must be before “To”"),
        ("range=1y", "Unknown time range “1y”"),
        ("sort=name", "Unknown sort “name”"),
    ],
)
def test_bad_values_are_refused_with_a_message_and_ignored(text: str, message: str) -> None:
    filters = ListFilters.from_params(q(text))
    assert len(filters.errors) == 1 and filters.errors[0].startswith(message)
    assert (filters.start, filters.end, filters.range, filters.sort) == (
        None,
        None,
        "",
        "-started",
    )


def test_a_preset_range_wins_over_custom_dates_and_moves_with_now() -> None:
    filters = ListFilters.from_params(q("range=24h&from=2020-01-01"))
    assert filters.start is None and filters.range == "24h"
    assert filters.window(NOW) == (NOW - timedelta(hours=24), None)
    assert filters.to_params() == {"filter": "all", "range": "24h"}


@pytest.mark.parametrize("text", ["from=2026-13-01", "sort=name", "range=1y"])
def test_a_bad_value_is_a_message_on_the_page_not_a_500(client_alice: Client, text: str) -> None:
    session("mbsess_shown")
    response = client_alice.get("/?filter=all&" + text)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="field-error" role="alert"' in html
    assert 'id="session-mbsess_shown"' in html  # the rest of the filter still applies


# --- each filter and sort on stored rows ------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("filter=all&platform=zoom", {"z_ok", "z_fail", "never"}),
        ("filter=all&status=failed", {"z_fail", "t_fail"}),
        ("filter=failed&platform=teams", {"t_fail"}),
        ("filter=all&bot=Notetaker", {"t_fail"}),
        ("filter=all&bot=notetaker", set()),  # exact, case and all
        ("filter=all&error_code=JOIN_TIMEOUT", {"z_fail"}),
        ("filter=live&platform=zoom", {"z_ok"}),
        ("filter=all&range=24h", {"z_ok", "z_fail", "t_fail"}),
        ("filter=all&range=7d", {"z_ok", "z_fail", "t_fail", "old"}),
        ("filter=all&from=2026-12-04T10:00", {"z_ok", "z_fail", "t_fail"}),
        ("filter=all&to=2026-12-04T10:00", {"old"}),
        ("filter=all&from=2026-11-30&to=2026-12-04T11:00", {"old", "t_fail"}),
    ],
)
def test_each_filter_on_real_rows(text: str, expected: set[str]) -> None:
    session("mbsess_z_ok", platform="zoom", bot_name="Buddy")
    session(
        "mbsess_z_fail",
        platform="zoom",
        status="failed",
        error_code="JOIN_TIMEOUT",
        ended_at=NOW,
    )
    session(
        "mbsess_t_fail",
        platform="teams",
        status="failed",
        bot_name="Notetaker",
        error_code="MEETING_ENDED",
        started=NOW - timedelta(hours=1, minutes=30),
        ended_at=NOW,
    )
    session("mbsess_old", platform="webex", status="completed", started=NOW - timedelta(days=3))
    session("mbsess_never", platform="zoom", status="completed", started=None)
    expected_ids = {f"mbsess_{name}" for name in expected}
    filters = ListFilters.from_params(q(text))
    assert filters.errors == ()
    assert set(ids(filters)) == expected_ids
    assert {s.session_id for s in MeetingSession.objects.all() if _matches(filters, s)} == (
        expected_ids
    )


def test_from_is_inclusive_and_to_exclusive(db: Any) -> None:
    at = datetime(2026, 12, 1, tzinfo=UTC)
    session("mbsess_at", started=at)
    session("mbsess_before", started=at - timedelta(microseconds=1))
    assert ids(ListFilters.from_params(q("filter=all&from=2026-12-01"))) == ["mbsess_at"]
    assert ids(ListFilters.from_params(q("filter=all&to=2026-12-01"))) == ["mbsess_before"]


def _sorting_rows() -> None:
    # started (minutes before NOW), ended after (minutes) or still running, status
    rows = {
        "a": (60, 10, "completed"),
        "b": (50, None, "active"),  # runs: duration 50 min as of NOW
        "c": (40, 45, "failed"),  # impossible but stored: 45 min
        "d": (30, 1, "joining"),
    }
    for name, (started, lasted, status) in rows.items():
        start = NOW - timedelta(minutes=started)
        ended = None if lasted is None else start + timedelta(minutes=lasted)
        session(f"mbsess_{name}", started=start, ended_at=ended, status=status)
    session("mbsess_null", started=None, status="waiting")


SORTED = {
    "": ["d", "c", "b", "a", "null"],
    "-started": ["d", "c", "b", "a", "null"],
    "started": ["a", "b", "c", "d", "null"],
    "duration": ["d", "a", "c", "b", "null"],
    "-duration": ["b", "c", "a", "d", "null"],
    "status": ["d", "null", "b", "a", "c"],
    "-status": ["c", "a", "b", "null", "d"],
}


def check_sorts() -> None:
    _sorting_rows()
    for sort, expected in SORTED.items():
        filters = ListFilters.from_params(q(f"filter=all&sort={sort}"))
        assert ids(filters) == [f"mbsess_{name}" for name in expected], sort


@pytest.mark.django_db
def test_sorts_with_a_null_start_last() -> None:
    check_sorts()


@pytest.mark.django_db
def test_the_page_renders_in_the_chosen_order_and_says_which(client_alice: Client) -> None:
    _sorting_rows()
    html = client_alice.get("/?filter=all&sort=-duration").content.decode()
    positions = [html.index(f'id="session-mbsess_{name}"') for name in SORTED["-duration"]]
    assert positions == sorted(positions)
    assert "Longest first." in html


# --- the page keeps every param ------------------------------------------------------------------


@pytest.mark.django_db
def test_params_survive_pagination_tabs_search_and_the_live_hello(client_alice: Client) -> None:
    for n in range(30):
        session(f"mbsess_p{n:02d}", platform="zoom", started=NOW - timedelta(minutes=n))
    session("mbsess_teams", platform="teams")
    text = "filter=all&platform=zoom&range=30d&sort=started"
    html = client_alice.get(f"/?{text}").content.decode()
    kept = "platform=zoom&amp;range=30d&amp;sort=started"
    assert f'href="?filter=all&amp;{kept}&amp;page=2" rel="next"' in html  # pagination
    assert f'href="?filter=failed&amp;{kept}"' in html  # a tab
    assert f'href="/sessions/export.csv?filter=all&amp;{kept}"' in html  # the CSV link
    assert '<input type="hidden" name="platform" value="zoom">' in html  # the live hello
    assert '<input type="hidden" name="sort" value="started">' in html
    assert '<option value="zoom" selected>zoom</option>' in html  # the search form keeps it
    assert '<option value="teams">teams</option>' in html  # platforms present
    assert "mbsess_teams" not in html
    assert "Clear filters" in html and 'href="?filter=all"' in html
    assert "All · zoom · last 30 days · sorted: oldest started first" in html


@pytest.mark.django_db
def test_the_htmx_answer_is_the_list_and_the_chips_and_says_the_params_changed(
    client_alice: Client,
) -> None:
    session("mbsess_hx", platform="zoom")
    response = client_alice.get(
        "/?filter=all&q=&platform=zoom&bot=&from=&sort=-started", headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="list-region"')
    assert '<fieldset id="filter-chips" class="filters" hx-swap-oob="true">' in html
    assert '<input type="hidden" name="platform" value="zoom">' in html
    assert response["HX-Trigger-After-Settle"] == "list-params-changed"
    assert response["HX-Push-Url"] == "/?filter=all&platform=zoom"  # no empty fields
    assert "HX-Request" in response["Vary"]


# --- the live list agrees with the first render -------------------------------------------------


def _matches(filters: ListFilters, stored: MeetingSession) -> bool:
    """`matches` on the summary as the channel layer carries it (through JSON)."""
    return filters.matches(json.loads(json.dumps(session_summary(stored))), NOW)


STARTS = st.one_of(
    st.none(),
    st.sampled_from(
        [
            NOW - timedelta(hours=24),
            NOW - timedelta(days=7),
            datetime(2026, 12, 1, tzinfo=UTC),
            datetime(2026, 12, 3, 6, tzinfo=UTC),
        ]
    ),
    st.integers(min_value=-40 * 86400, max_value=86400).map(lambda s: NOW + timedelta(seconds=s)),
)
SESSIONS = st.lists(
    st.fixed_dictionaries(
        {
            "status": st.sampled_from(
                ["initializing", "active", "recording", "completed", "failed", "", "odd"]
            ),
            "stream_state": st.sampled_from(["live", "failed", "retrying", "idle", "ended"]),
            "platform": st.sampled_from(["zoom", "teams", "google_meet", ""]),
            "bot_name": st.sampled_from(["Buddy", "buddy", "Notetaker", ""]),
            "error_code": st.sampled_from(["", "JOIN_TIMEOUT", "MEETING_ENDED"]),
            "started_at": STARTS,
            "ended_after": st.one_of(st.none(), st.integers(min_value=0, max_value=7200)),
        }
    ),
    max_size=14,
)
PARAMS = st.fixed_dictionaries(
    {
        "filter": st.sampled_from(["live", "attention", "ended", "failed", "all"]),
        "status": st.sampled_from(["", "active", "failed", "completed", "odd"]),
        "platform": st.sampled_from(["", "zoom", "teams"]),
        "bot": st.sampled_from(["", "Buddy", "Notetaker"]),
        "error_code": st.sampled_from(["", "JOIN_TIMEOUT"]),
        "range": st.sampled_from(["", "24h", "7d", "30d"]),
        "from": st.sampled_from(["", "2026-12-01", "2026-12-03T06:00", "2026-11-27T12:00Z"]),
        "to": st.sampled_from(["", "2026-12-04", "2026-12-03T06:00", "2026-12-05"]),
    }
)


@pytest.mark.django_db
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=SESSIONS, params=PARAMS)
def test_matches_agrees_with_apply_for_generated_sessions(
    rows: list[dict[str, Any]], params: dict[str, str]
) -> None:
    check_matches_agree(rows, params)


def check_matches_agree(rows: list[dict[str, Any]], params: dict[str, str]) -> None:
    MeetingSession.objects.all().delete()
    stored = []
    for n, row in enumerate(rows):
        fields = dict(row)
        after = fields.pop("ended_after")
        start = fields["started_at"]
        fields["ended_at"] = (
            None if after is None or start is None else start + timedelta(seconds=after)
        )
        stored.append(make_session(f"mbsess_h{n:02d}", **fields))
    filters = ListFilters.from_params(params)
    applied = set(ids(filters))
    matched = {s.session_id for s in stored if _matches(filters, s)}
    assert applied == matched, filters


# --- CSV export -----------------------------------------------------------------------------


def _body(response: Any) -> str:
    """A streamed (sync) response's whole body."""
    return b"".join(response.streaming_content).decode()


def _csv_rows(body: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(body))
    assert tuple(reader.fieldnames or ()) == SESSION_CSV_COLUMNS
    return list(reader)


def check_csv_export_is_the_filter(client: Client) -> None:
    for n in range(40):  # more than a page
        session(
            f"mbsess_c{n:02d}",
            platform="zoom" if n % 2 else "teams",
            status="failed" if n % 3 else "active",
            error_code="JOIN_TIMEOUT" if n % 3 else "",
            ended_at=NOW if n % 3 else None,
            started=NOW - timedelta(minutes=n),
        )
    text = "status=failed&platform=zoom&sort=started"
    response = client.get(f"/sessions/export.csv?{text}")
    assert response.status_code == 200
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"].startswith('attachment; filename="sessions-')
    assert response.streaming
    rows = _csv_rows(_body(response))
    expected = ids(ListFilters.from_params(q(text)))
    assert len(expected) > 10
    assert [row["session_id"] for row in rows] == expected  # every page, in the list's order
    first = MeetingSession.objects.get(pk=expected[0])
    assert rows[0]["platform"] == "zoom" and rows[0]["status"] == "failed"
    assert rows[0]["error_code"] == "JOIN_TIMEOUT"
    assert first.started_at is not None and first.ended_at is not None
    assert rows[0]["started_at"] == first.started_at.isoformat()
    lasted = (first.ended_at - first.started_at).total_seconds()
    assert rows[0]["duration_seconds"] == str(int(lasted))


@pytest.mark.django_db
def test_the_csv_export_is_exactly_the_filtered_sessions(client_alice: Client) -> None:
    check_csv_export_is_the_filter(client_alice)


@pytest.mark.django_db
def test_the_csv_export_is_formula_safe(client_alice: Client) -> None:
    session("mbsess_evil", bot_name='=HYPERLINK("http://x","y")', error_code="+SUM(1)")
    session("mbsess_dash", bot_name="-2+3", error_code="@cmd")
    response = client_alice.get("/sessions/export.csv?filter=all&sort=started")
    rows = {r["session_id"]: r for r in _csv_rows(_body(response))}
    assert rows["mbsess_evil"]["bot_name"] == '\'=HYPERLINK("http://x","y")'
    assert rows["mbsess_evil"]["error_code"] == "'+SUM(1)"
    assert rows["mbsess_dash"]["bot_name"] == "'-2+3"
    assert rows["mbsess_dash"]["error_code"] == "'@cmd"


@pytest.mark.django_db
def test_the_csv_export_needs_a_login_and_refuses_bad_params(client_alice: Client) -> None:
    session("mbsess_secret")
    anonymous = Client().get("/sessions/export.csv?filter=all")
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/accounts/login/?next=/sessions/export.csv")
    refused = client_alice.get("/sessions/export.csv?from=someday")
    assert refused.status_code == 400
    assert "“From” is not a date or time" in refused.content.decode()


@pytest.mark.django_db(transaction=True)
async def test_the_csv_export_streams_from_an_async_iterator_under_asgi(alice: User) -> None:
    for n in range(5):
        await database_sync_to_async(session)(f"mbsess_a{n}", platform="webex")
    await database_sync_to_async(session)("mbsess_other", platform="zoom")
    client = AsyncClient()
    await client.aforce_login(alice)
    response: Any = await client.get("/sessions/export.csv?platform=webex")
    assert response.status_code == 200 and response.is_async
    body = b"".join([chunk async for chunk in response.streaming_content]).decode()
    assert sorted(row["session_id"] for row in _csv_rows(body)) == [
        f"mbsess_a{n}" for n in range(5)
    ]


# --- PostgreSQL: the same checks -----------------------------------------------------------------


def _on_postgres() -> None:
    if connection.vendor != "postgresql":
        service_missing("needs PostgreSQL (DATABASE_URL=postgres://...)")


@pytest.mark.postgres
@pytest.mark.django_db
def test_sorts_on_postgresql() -> None:
    _on_postgres()
    check_sorts()


@pytest.mark.postgres
@pytest.mark.django_db
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(rows=SESSIONS, params=PARAMS)
def test_matches_agrees_with_apply_on_postgresql(
    rows: list[dict[str, Any]], params: dict[str, str]
) -> None:
    _on_postgres()
    check_matches_agree(rows, params)


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_csv_export_on_postgresql(client_alice: Client) -> None:
    _on_postgres()
    check_csv_export_is_the_filter(client_alice)


# --- the live socket honours the filters ----------------------------------------------------------


@contextlib.asynccontextmanager
async def list_socket(user: User, hello: dict[str, str]) -> Any:
    cookie = await database_sync_to_async(login_cookie)(user)
    app = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
    communicator = WebsocketCommunicator(app, "/ws/sessions/", headers=[(b"cookie", cookie)])
    connected, _ = await communicator.connect()
    assert connected
    try:
        await communicator.send_to(text_data=json.dumps({**hello, "page": "1"}))
        yield communicator
    finally:
        with contextlib.suppress(Exception):
            await communicator.disconnect(timeout=2)


async def frames_until(communicator: WebsocketCommunicator, text: str) -> list[str]:
    frames = [await communicator.receive_from(timeout=5)]
    while text not in frames[-1]:
        frames.append(await communicator.receive_from(timeout=5))
    return frames


async def publish(layer: Any, stored: MeetingSession) -> None:
    await layer.group_send(SESSIONS_GROUP, {"type": "sessions.summary", **session_summary(stored)})


@pytest.mark.django_db(transaction=True)
async def test_the_live_list_lets_in_only_what_the_filters_let_in(
    fresh_channel_layer: Any, alice: User
) -> None:
    now = datetime.now(UTC)
    shown = await database_sync_to_async(session)(
        "mbsess_lz", platform="zoom", started=now - timedelta(minutes=5)
    )
    hello = {"filter": "all", "platform": "zoom", "status": "active", "range": "24h"}
    async with list_socket(alice, hello) as communicator:
        first = await communicator.receive_from(timeout=5)
        assert 'id="session-mbsess_lz"' in first
        assert '<input type="hidden" name="platform" value="zoom">' in first
        teams = await database_sync_to_async(session)("mbsess_lt", platform="teams", started=now)
        old = await database_sync_to_async(session)(
            "mbsess_lold", platform="zoom", started=now - timedelta(days=2)
        )
        zoom = await database_sync_to_async(session)("mbsess_lnew", platform="zoom", started=now)
        for stored in (teams, old, zoom):
            await publish(fresh_channel_layer, stored)
        frames = await frames_until(communicator, "session-mbsess_lnew")
        assert not any("mbsess_lt" in f or "mbsess_lold" in f for f in frames)
        assert "afterbegin:#session-rows" in frames[-1]  # newest first: at the top

        shown.status = "completed"  # no longer "active": it leaves
        await database_sync_to_async(shown.save)()
        await publish(fresh_channel_layer, shown)
        frames = await frames_until(communicator, 'id="session-mbsess_lz" hx-swap-oob="delete"')
        # The chips that come with it keep the filters in their links.
        assert (
            'href="?filter=ended&amp;status=active&amp;platform=zoom&amp;range=24h"' in frames[-1]
        )


@pytest.mark.django_db(transaction=True)
async def test_the_live_answer_refuses_what_the_first_render_refused(
    fresh_channel_layer: Any, client_alice: Client, alice: User
) -> None:
    html = await database_sync_to_async(client_alice.get)("/?filter=all&from=soon&sort=name")
    page = html.content.decode()
    assert '<input type="hidden" name="from" value="soon">' in page  # the hello repeats it
    hello = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]*)">', page))
    async with list_socket(alice, hello) as communicator:
        frame = (await frames_until(communicator, 'id="list-region"'))[-1]
    for message in ("“From” is not a date or time", "Unknown sort “name”"):
        assert message in page and message in frame


@pytest.mark.django_db(transaction=True)
async def test_a_sorted_live_list_puts_a_new_row_in_its_place(
    fresh_channel_layer: Any, alice: User
) -> None:
    now = datetime.now(UTC)
    for name, minutes in (("long", 50), ("short", 5)):
        await database_sync_to_async(session)(
            f"mbsess_s{name}", started=now - timedelta(minutes=minutes)
        )
    async with list_socket(alice, {"filter": "live", "sort": "-duration"}) as communicator:
        first = await communicator.receive_from(timeout=5)
        assert first.index("mbsess_slong") < first.index("mbsess_sshort")
        middle = await database_sync_to_async(session)(
            "mbsess_smid", started=now - timedelta(minutes=20)
        )
        await publish(fresh_channel_layer, middle)
        frame = (await frames_until(communicator, "session-mbsess_smid"))[-1]
        assert '<section id="list-region"' in frame  # the list afresh, not a row on top
        order = [frame.index(f'id="session-mbsess_s{n}"') for n in ("long", "mid", "short")]
        assert order == sorted(order)
        assert "Longest first." in frame
