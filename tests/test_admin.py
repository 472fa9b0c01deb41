"""The Django admin over session history: read-only, fast at size, exports, tokens."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
from collections.abc import Iterable

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection, connections
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from sessions_monitor import admin as session_admin
from sessions_monitor.models import ApiToken, MeetingSession, Presence, SessionEvent
from tests.support import make_session, service_missing

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
CHANGELIST = "admin:sessions_monitor_meetingsession_changelist"
EVENTS = "admin:sessions_monitor_sessionevent_changelist"
PRESENCES = "admin:sessions_monitor_presence_changelist"


def change_url(session_id: str) -> str:
    return reverse("admin:sessions_monitor_meetingsession_change", args=[session_id])


def make_history(
    number: int,
    *,
    status: str = "completed",
    platform: str = "zoom",
    error_code: str = "",
    participants: Iterable[str] = ("Alice",),
    events: int = 0,
    started: dt.datetime | None = None,
) -> MeetingSession:
    """Session number `number` with its history: status events, joins and presences, and
    `events` stream notes; it ended half an hour after it started."""
    started = started or T0 + dt.timedelta(hours=number)
    session = make_session(
        f"mbsess_s{number:05d}",
        bot_name=f"Bot {number}",
        meeting_link=f"https://zoom.us/j/{900000 + number}",
        platform=platform,
        status=status,
        status_since=None,
        error_code=error_code,
        started_at=started,
        ended_at=started + dt.timedelta(minutes=30),
        last_event_at=started + dt.timedelta(minutes=30),
        stream_state="idle",
        watched=False,
        peak_participants=len(tuple(participants)),
    )
    seq = 0
    rows = []
    for status_name in ("joining", "active", status):
        seq += 1
        rows.append(
            SessionEvent(
                session=session,
                seq=seq,
                kind="status",
                status=status_name,
                error_code=error_code if status_name == "failed" else "",
                upstream_timestamp=started + dt.timedelta(minutes=seq),
            )
        )
    for offset, name in enumerate(participants):
        seq += 1
        rows.append(
            SessionEvent(
                session=session,
                seq=seq,
                kind="joined",
                participant_name=name,
                upstream_timestamp=started + dt.timedelta(minutes=5 + offset),
            )
        )
        Presence.objects.create(
            session=session,
            participant_name=name,
            joined_at=started + dt.timedelta(minutes=5 + offset),
            left_at=started + dt.timedelta(minutes=25),
            join_seq=seq,
        )
    for _ in range(events):
        seq += 1
        rows.append(
            SessionEvent(
                session=session,
                seq=seq,
                kind="stream",
                note=f"note {seq}",
                received_at=started + dt.timedelta(seconds=seq),
            )
        )
    SessionEvent.objects.bulk_create(rows)
    MeetingSession.objects.filter(pk=session.pk).update(last_seq=seq)
    return session


@pytest.fixture
def staff_viewer(django_user_model: type[User]) -> User:
    """Staff with view (and change) permissions on history, but no delete permission."""
    user = django_user_model.objects.create_user("viewer", password="pw", is_staff=True)
    codenames = [
        f"{action}_{model}"
        for action in ("view", "change", "add")
        for model in ("meetingsession", "sessionevent", "presence")
    ]
    user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
    return user


def login(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- lists, filters, search, the session page ------------------------------------------------


def test_it_lists_sessions_with_their_columns(admin_client: Client) -> None:
    make_history(1, status="failed", error_code="MEETING_NOT_FOUND")
    response = admin_client.get(reverse(CHANGELIST), {"_facets": "1"})
    assert response.status_code == 200
    assert not response.context["cl"].add_facets, "no per-choice COUNTs at 100k rows"
    body = response.content.decode()
    for text in ("mbsess_s00001", "Bot 1", "zoom", "failed", "MEETING_NOT_FOUND", "30 min 00 s"):
        assert text in body


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"status__exact": "failed"}, {"mbsess_s00002"}),
        ({"platform__exact": "teams"}, {"mbsess_s00003"}),
        ({"error_code__exact": "JOIN_TIMEOUT"}, {"mbsess_s00002"}),
        (
            {
                "started_at__gte": "2026-03-02 00:00:00+00:00",
                "started_at__lt": "2026-03-03 00:00:00+00:00",
            },
            {"mbsess_s00001", "mbsess_s00002", "mbsess_s00003"},
        ),
        ({"started_at__year": "2025"}, {"mbsess_s00004"}),
    ],
)
def test_it_filters_sessions(
    admin_client: Client, query: dict[str, str], expected: set[str]
) -> None:
    make_history(1)
    make_history(2, status="failed", error_code="JOIN_TIMEOUT")
    make_history(3, platform="teams")
    make_history(4, started=dt.datetime(2025, 6, 1, tzinfo=dt.UTC))
    response = admin_client.get(reverse(CHANGELIST), query)
    assert response.status_code == 200
    shown = {session.session_id for session in response.context["cl"].result_list}
    assert shown == expected


@pytest.mark.parametrize(
    ("term", "expected"),
    [
        ("mbsess_s00002", {"mbsess_s00002"}),
        ("mbsess_s0000", {"mbsess_s00001", "mbsess_s00002", "mbsess_s00003"}),
        ("bot 3", {"mbsess_s00003"}),
        ("https://zoom.us/j/900001", {"mbsess_s00001"}),
        ("carol", {"mbsess_s00002"}),
        ("Ali", {"mbsess_s00001", "mbsess_s00002"}),
        ('"Alice Again"', {"mbsess_s00002"}),
        ("nobody-like-this", set()),
    ],
)
def test_it_searches_id_bot_link_and_participant(
    admin_client: Client, term: str, expected: set[str]
) -> None:
    make_history(1, participants=["Alice", "Bob"])
    make_history(2, participants=["Alice", "Carol", "Alice Again"])
    make_history(3, participants=["Dave"])
    response = admin_client.get(reverse(CHANGELIST), {"q": term})
    assert response.status_code == 200
    shown = [session.session_id for session in response.context["cl"].result_list]
    assert len(shown) == len(set(shown)), "a participant match must not repeat a session"
    assert set(shown) == expected
    assert response.context["cl"].date_hierarchy is None, "no date drill-down while searching"


def test_the_session_page_shows_timeline_inlines_and_links(admin_client: Client) -> None:
    session = make_history(1, status="failed", error_code="JOIN_TIMEOUT", participants=["Alice"])
    response = admin_client.get(change_url(session.session_id))
    assert response.status_code == 200
    body = response.content.decode()
    assert "<svg" in body and "Alice" in body
    assert reverse("session-detail", args=[session.session_id]) in body
    assert "session__session_id__exact=mbsess_s00001" in body
    # Viewing the page mints nothing: the widget link is made on request.
    assert "?token=" not in body and "&lt;iframe" not in body
    assert 'href="/embed/sessions/mbsess_s00001/snippet/"' in body
    # Read-only: no save buttons, no editable inputs for history.
    assert 'name="_save"' not in body
    assert 'name="bot_name"' not in body


def test_the_session_page_caps_the_event_inline(admin_client: Client) -> None:
    session = make_history(1, events=130)
    response = admin_client.get(change_url(session.session_id))
    body = response.content.decode()
    cap = session_admin.INLINE_EVENT_CAP
    assert [event.seq for event in response.context["events"]] == list(range(1, cap + 1))
    assert body.count('href="/admin/sessions_monitor/sessionevent/') >= cap
    assert f"first {cap} of {130 + 4}" in body
    assert f"All {130 + 4} events" in body


def test_the_session_page_query_count_does_not_grow_with_events(admin_client: Client) -> None:
    small = make_history(1, events=5)
    big = make_history(2, events=300)
    admin_client.get(change_url(small.session_id))  # warm caches (content types, sessions)
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(change_url(small.session_id)).status_code == 200
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get(change_url(big.session_id)).status_code == 200
    assert len(many) == len(few)


def test_events_and_presence_have_their_own_pages(admin_client: Client) -> None:
    make_history(1, participants=["Alice"])
    make_history(2, participants=["Bob"], status="failed")
    events = admin_client.get(reverse(EVENTS), {"session__session_id__exact": "mbsess_s00002"})
    assert events.status_code == 200
    listed = list(events.context["cl"].result_list)
    assert {e.session_id for e in listed} == {"mbsess_s00002"}
    assert [e.seq for e in listed] == sorted(e.seq for e in listed), "one session: seq order"
    by_kind = admin_client.get(reverse(EVENTS), {"kind__exact": "joined"})
    assert {e.participant_name for e in by_kind.context["cl"].result_list} == {"Alice", "Bob"}
    searched = admin_client.get(reverse(EVENTS), {"q": "bo"})
    assert [e.participant_name for e in searched.context["cl"].result_list] == ["Bob"]
    presences = admin_client.get(reverse(PRESENCES), {"q": "mbsess_s00001"})
    assert [p.participant_name for p in presences.context["cl"].result_list] == ["Alice"]
    still_here = admin_client.get(reverse(PRESENCES), {"open": "yes"})
    assert list(still_here.context["cl"].result_list) == []
    event = SessionEvent.objects.filter(session_id="mbsess_s00001").first()
    assert event is not None
    page = admin_client.get(reverse("admin:sessions_monitor_sessionevent_change", args=[event.pk]))
    assert page.status_code == 200 and "mbsess_s00001" in page.content.decode()


# --- who may see and change what ---------------------------------------------------------------


@pytest.mark.parametrize("who", ["anonymous", "non_staff"])
@pytest.mark.parametrize("page", [CHANGELIST, EVENTS, PRESENCES, "change"])
def test_non_staff_and_anonymous_are_sent_to_the_admin_login(
    django_user_model: type[User], who: str, page: str
) -> None:
    session = make_history(1)
    client = Client()
    if who == "non_staff":
        user = django_user_model.objects.create_user("plain", password="pw")
        user.user_permissions.set(Permission.objects.all())
        client.force_login(user)
    url = change_url(session.session_id) if page == "change" else reverse(page)
    response = client.get(url)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_nobody_edits_or_adds_history_not_even_a_superuser(admin_client: Client) -> None:
    session = make_history(1)
    event = SessionEvent.objects.filter(session=session).first()
    assert event is not None
    edit = admin_client.post(change_url(session.session_id), {"bot_name": "Changed"})
    assert edit.status_code == 403
    assert admin_client.get(reverse("admin:sessions_monitor_meetingsession_add")).status_code == 403
    event_edit = admin_client.post(
        reverse("admin:sessions_monitor_sessionevent_change", args=[event.pk]), {"note": "x"}
    )
    assert event_edit.status_code == 403
    session.refresh_from_db()
    event.refresh_from_db()
    assert session.bot_name == "Bot 1" and event.status == "joining" and event.note == ""


def test_deleting_history_needs_the_explicit_delete_permission(staff_viewer: User) -> None:
    session = make_history(1)
    client = login(staff_viewer)
    delete_url = reverse("admin:sessions_monitor_meetingsession_delete", args=[session.pk])
    assert client.get(delete_url).status_code == 403
    assert client.post(delete_url, {"post": "yes"}).status_code == 403
    bulk = client.post(
        reverse(CHANGELIST),
        {"action": "delete_selected", "_selected_action": [session.pk], "post": "yes"},
    )
    assert bulk.status_code in (200, 302)
    assert MeetingSession.objects.filter(pk=session.pk).exists()
    assert SessionEvent.objects.filter(session_id=session.pk).count() == 4

    staff_viewer.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["delete_meetingsession", "delete_sessionevent", "delete_presence"]
        )
    )
    client = login(User.objects.get(pk=staff_viewer.pk))
    assert client.post(delete_url, {"post": "yes"}).status_code == 302
    assert not MeetingSession.objects.filter(pk=session.pk).exists()
    assert not SessionEvent.objects.filter(session_id=session.pk).exists()


# --- actions -----------------------------------------------------------------------------------


def parse_csv(content: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(content.decode())))


def expected_rows(session_ids: list[str]) -> list[tuple[str, int]]:
    return list(
        SessionEvent.objects.filter(session_id__in=session_ids)
        .order_by("session_id", "seq")
        .values_list("session_id", "seq")
    )


def test_csv_export_streams_every_event_of_the_selected_sessions_in_order(
    admin_client: Client,
) -> None:
    make_history(1, events=40)
    make_history(2, participants=["=cmd|' /C calc'!A0", "Bob"], events=5)
    make_history(3, events=7)
    chosen = ["mbsess_s00003", "mbsess_s00001"]
    response = admin_client.post(
        reverse(CHANGELIST), {"action": "export_events_csv", "_selected_action": chosen}
    )
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"].startswith("text/csv")
    rows = parse_csv(b"".join(response.streaming_content))  # type: ignore[attr-defined]
    assert [(row["session_id"], int(row["seq"])) for row in rows] == expected_rows(chosen)
    assert len(rows) == 44 + 11

    other = admin_client.post(
        reverse(CHANGELIST), {"action": "export_events_csv", "_selected_action": ["mbsess_s00002"]}
    )
    content = b"".join(other.streaming_content)  # type: ignore[attr-defined]
    names = [row["participant_name"] for row in parse_csv(content)]
    assert "'=cmd|' /C calc'!A0" in names, "formula-looking cells are neutralised"


@pytest.mark.django_db(transaction=True)
async def test_csv_export_streams_asynchronously_under_asgi(
    async_client, django_user_model
) -> None:
    from asgiref.sync import sync_to_async

    @sync_to_async
    def setup() -> None:
        django_user_model.objects.create_superuser("root", password="pw")
        make_history(1, events=3)
        make_history(2, events=2500)

    await setup()
    await async_client.aforce_login(await django_user_model.objects.aget(username="root"))
    response = await async_client.post(
        reverse(CHANGELIST),
        {"action": "export_events_csv", "_selected_action": ["mbsess_s00002", "mbsess_s00001"]},
    )
    assert response.status_code == 200
    assert response.is_async, "under ASGI the export must be an async stream (no buffering)"
    chunks = [chunk async for chunk in response.streaming_content]
    rows = parse_csv(b"".join(chunks))
    expected = await sync_to_async(expected_rows)(["mbsess_s00001", "mbsess_s00002"])
    assert [(row["session_id"], int(row["seq"])) for row in rows] == expected
    await sync_to_async(connections.close_all)()  # the streaming thread's connection


def test_watch_and_unwatch_actions_flag_the_sessions(admin_client: Client) -> None:
    make_history(1, status="active")
    make_history(2, status="active")
    admin_client.post(
        reverse(CHANGELIST),
        {"action": "watch_sessions", "_selected_action": ["mbsess_s00001", "mbsess_s00002"]},
    )
    assert set(MeetingSession.objects.filter(watched=True).values_list("pk", flat=True)) == {
        "mbsess_s00001",
        "mbsess_s00002",
    }
    admin_client.post(
        reverse(CHANGELIST), {"action": "unwatch_sessions", "_selected_action": ["mbsess_s00002"]}
    )
    assert list(MeetingSession.objects.filter(watched=True).values_list("pk", flat=True)) == [
        "mbsess_s00001"
    ]


def test_watching_needs_the_change_permission(django_user_model: type[User]) -> None:
    make_history(1, status="active")
    viewer = django_user_model.objects.create_user("onlyview", password="pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_meetingsession"))
    client = login(viewer)
    page = client.get(reverse(CHANGELIST))
    actions = dict(page.context["action_form"].fields["action"].choices)
    assert "watch_sessions" not in actions and "export_events_csv" in actions
    client.post(
        reverse(CHANGELIST), {"action": "watch_sessions", "_selected_action": ["mbsess_s00001"]}
    )
    assert not MeetingSession.objects.get(pk="mbsess_s00001").watched


# --- API tokens --------------------------------------------------------------------------------


def test_a_new_api_token_is_shown_once_and_only_its_hash_is_stored(
    admin_client: Client, admin_user: User
) -> None:
    response = admin_client.post(
        reverse("admin:sessions_monitor_apitoken_add"), {"user": admin_user.pk, "name": "ci"}
    )
    assert response.status_code == 200
    raw = response.context["raw_token"]
    assert raw in response.content.decode()
    assert "no-store" in response["Cache-Control"]
    token = ApiToken.objects.get()
    assert token.name == "ci" and token.user == admin_user
    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in {token.token_hash, token.prefix, token.name}
    page = admin_client.get(
        reverse("admin:sessions_monitor_apitoken_change", args=[token.pk])
    ).content.decode()
    assert raw not in page and token.token_hash not in page


def test_tokens_can_be_revoked_and_show_last_use(admin_client: Client, admin_user: User) -> None:
    from sessions_monitor import tokens

    used, raw = tokens.create_token(user=admin_user, name="used")
    tokens.create_token(user=admin_user, name="other")
    assert tokens.authenticate(raw) is not None
    page = admin_client.get(reverse("admin:sessions_monitor_apitoken_changelist"))
    assert page.status_code == 200
    used.refresh_from_db()
    assert used.last_used_at is not None
    admin_client.post(
        reverse("admin:sessions_monitor_apitoken_changelist"),
        {"action": "revoke_tokens", "_selected_action": [used.pk]},
    )
    used.refresh_from_db()
    assert used.revoked_at is not None
    assert tokens.authenticate(raw) is None
    assert ApiToken.objects.filter(revoked_at__isnull=True).count() == 1


def test_the_open_or_closed_filters_split_presences_and_tokens(
    admin_client: Client, admin_user: User
) -> None:
    from sessions_monitor import services, tokens
    from sessions_monitor.upstream.events import ParticipantJoined, ParticipantLeft

    for event in (
        ParticipantJoined("mbsess_filters", "Alice", None),
        ParticipantJoined("mbsess_filters", "Bob", None),
        ParticipantLeft("mbsess_filters", "Bob", None),
    ):
        services.record_event(session_id="mbsess_filters", event=event, broadcast=False)
    revoked, _ = tokens.create_token(user=admin_user, name="revoked")
    tokens.create_token(user=admin_user, name="active")
    tokens.revoke(revoked)

    def listed(url: str, params: dict[str, str], attribute: str) -> list[str]:
        rows = admin_client.get(reverse(url), params).context["cl"].result_list
        return sorted(getattr(row, attribute) for row in rows)

    assert listed(PRESENCES, {"open": "yes"}, "participant_name") == ["Alice"]
    assert listed(PRESENCES, {"open": "no"}, "participant_name") == ["Bob"]
    assert listed(PRESENCES, {}, "participant_name") == ["Alice", "Bob"]
    tokens_url = "admin:sessions_monitor_apitoken_changelist"
    assert listed(tokens_url, {"state": "active"}, "name") == ["active"]
    assert listed(tokens_url, {"state": "revoked"}, "name") == ["revoked"]


# --- it stays cheap at size --------------------------------------------------------------------


def count_changelist_queries(client: Client, url: str, params: dict[str, str]) -> int:
    client.get(url, params)  # warm per-process caches (content types, permissions)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url, params)
    assert response.status_code == 200
    return len(queries)


@pytest.mark.parametrize(
    "params", [{"all": ""}, {"all": "", "status__exact": "completed"}, {"all": "", "q": "Ali"}]
)
def test_changelist_query_count_is_the_same_for_10_and_200_sessions(
    admin_client: Client, params: dict[str, str]
) -> None:
    for number in range(10):
        make_history(number)
    with_10 = count_changelist_queries(admin_client, reverse(CHANGELIST), params)
    assert len(admin_client.get(reverse(CHANGELIST), params).context["cl"].result_list) == 10
    for number in range(10, 200):
        make_history(number, participants=["Alice", "Bob"])
    with_200 = count_changelist_queries(admin_client, reverse(CHANGELIST), params)
    assert len(admin_client.get(reverse(CHANGELIST), params).context["cl"].result_list) == 200
    assert with_200 == with_10


def test_event_list_query_count_does_not_grow_with_rows(admin_client: Client) -> None:
    make_history(1, events=5)
    small = count_changelist_queries(admin_client, reverse(EVENTS), {})
    for number in range(2, 12):
        make_history(number, events=20)
    assert count_changelist_queries(admin_client, reverse(EVENTS), {}) == small


@pytest.mark.postgres
def test_big_unfiltered_event_list_uses_the_estimate_not_count_star(
    admin_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    if connection.vendor != "postgresql":
        service_missing("needs PostgreSQL (DATABASE_URL=postgres://...)")
    make_history(1, events=400)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE sessions_monitor_sessionevent")
    monkeypatch.setattr(session_admin.EstimatedCountPaginator, "estimate_above", 100)
    with CaptureQueriesContext(connection) as queries:
        response = admin_client.get(reverse(EVENTS))
    assert response.status_code == 200
    sql = [query["sql"] for query in queries]
    assert any("pg_class" in statement for statement in sql)
    assert not any(
        "COUNT(*)" in statement and "sessions_monitor_sessionevent" in statement
        for statement in sql
    )
    assert 350 <= response.context["cl"].result_count <= 450
    # A filtered list keeps its exact count.
    filtered = admin_client.get(reverse(EVENTS), {"kind__exact": "status"})
    assert filtered.context["cl"].result_count == 3


def test_durations_and_dashboard_links() -> None:
    running = MeetingSession(session_id="mbsess_run", status="active", started_at=timezone.now())
    assert session_admin.session_duration(running) in ("0 s", "1 s")
    unknown = MeetingSession(session_id="mbsess_x", status="failed", started_at=T0)
    assert session_admin.session_duration(unknown) == "—"
    assert session_admin.dashboard_url("mbsess_abc") == "/sessions/mbsess_abc/"


# --- reached by the admin's own links (quoted primary keys) ---------------------------------------

QUOTED_IDS = ["mbsess_AB12cd", "mbsess_5F_x", "mbsess_plain"]


def _with_id(session_id: str) -> MeetingSession:
    session = make_history(len(session_id), participants=["Alice", "Bob"])
    MeetingSession.objects.filter(pk=session.pk).update(session_id=session_id)
    SessionEvent.objects.filter(session_id=session.pk).update(session_id=session_id)
    Presence.objects.filter(session_id=session.pk).update(session_id=session_id)
    MeetingSession.objects.filter(pk=session.pk).delete()
    return MeetingSession.objects.get(pk=session_id)


def _links(html: str, pattern: str) -> list[str]:
    import re

    return re.findall(pattern, html)


@pytest.mark.parametrize("session_id", QUOTED_IDS)
def test_the_session_page_reached_from_the_changelist_shows_its_history(
    admin_client: Client, session_id: str
) -> None:
    _with_id(session_id)
    changelist = admin_client.get("/admin/sessions_monitor/meetingsession/").content.decode()
    hrefs = _links(changelist, r'<th class="field-session_id"><a href="([^"]+)"')
    assert len(hrefs) == 1
    page = admin_client.get(hrefs[0])
    assert page.status_code == 200
    body = page.content.decode()
    assert 'id="session-timeline"' in body and "<svg" in body
    assert len(page.context["events"]) == 5 and len(page.context["presences"]) == 2


@pytest.mark.parametrize("changelist", ["sessionevent", "presence"])
def test_the_session_link_of_events_and_presences_leads_to_the_session_page(
    admin_client: Client, changelist: str
) -> None:
    _with_id("mbsess_AB12cd")
    rows = admin_client.get(f"/admin/sessions_monitor/{changelist}/").content.decode()
    hrefs = set(_links(rows, r'<a href="(/admin/sessions_monitor/meetingsession/[^"]+)"'))
    assert len(hrefs) == 1
    page = admin_client.get(hrefs.pop())
    assert page.status_code == 200
    assert page.context["original"].session_id == "mbsess_AB12cd"
    assert len(page.context["events"]) == 5
