from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from sessions_monitor.models import MeetingSession, Presence, SessionEvent
from tests.support import make_session

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(db: Any) -> User:
    return User.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def client_alice(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def add_event(session: MeetingSession, seq: int, kind: str, **fields: Any) -> SessionEvent:
    session.last_seq = seq
    session.save(update_fields=["last_seq"])
    return SessionEvent.objects.create(
        session=session,
        seq=seq,
        kind=kind,
        upstream_timestamp=timezone.now(),
        raw=f'{{"seq": {seq}}}',
        **fields,
    )


# --- permissions ---------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/", "/sessions/mbsess_a/", "/?filter=failed"])
def test_anonymous_is_sent_to_login(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/?next=")


def test_anonymous_cannot_watch() -> None:
    response = Client().post("/sessions/watch", {"session_id": "mbsess_x"})
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]
    assert not MeetingSession.objects.exists()


def test_inactive_user_is_sent_to_login(alice: User) -> None:
    client = Client()
    client.force_login(alice)
    alice.is_active = False
    alice.save()
    assert client.get("/").status_code == 302


def test_login_page_renders_and_logs_in(alice: User) -> None:
    client = Client()
    page = client.get("/accounts/login/?next=/")
    assert page.status_code == 200
    assert b"Log in to MeetingDash" in page.content and b'name="password"' in page.content
    response = client.post("/accounts/login/", {"username": "alice", "password": "pw-alice-123"})
    assert response.status_code == 302 and response["Location"] == "/"
    bad = Client().post("/accounts/login/", {"username": "alice", "password": "nope"})
    assert bad.status_code == 200 and b'role="alert"' in bad.content


def test_logout_is_a_post_form(client_alice: Client) -> None:
    page = client_alice.get("/")
    assert b'action="/accounts/logout/"' in page.content
    assert client_alice.post("/accounts/logout/").status_code == 302
    assert client_alice.get("/").status_code == 302


# --- list ----------------------------------------------------------------------------------


def test_list_shows_row_fields_and_the_live_channel(client_alice: Client) -> None:
    session = make_session(
        "mbsess_row1", platform="google_meet", meeting_link="https://meet.google.com/a-b-c"
    )
    session.participants_present = 3
    session.save()
    html = client_alice.get("/").content.decode()
    assert 'id="session-mbsess_row1"' in html
    assert "Google Meet" in html and "meet.google.com" in html
    assert "In meeting" in html  # the badge has text, not only colour
    assert 'ws-connect="/ws/sessions/"' in html
    assert 'hx-trigger="htmx:wsOpen from:body, list-params-changed from:body"' in html
    assert 'id="browser-link"' in html and 'id="upstream-link"' in html
    assert 'aria-live="polite"' in html and 'href="#main"' in html
    assert "cdn" not in html.lower()


def test_list_filters(client_alice: Client) -> None:
    make_session("mbsess_live")
    make_session("mbsess_done", status="completed", stream_state="ended")
    make_session("mbsess_bad", status="failed", stream_state="ended")

    def ids(query: str) -> set[str]:
        html = client_alice.get("/" + query).content.decode()
        return {
            sid
            for sid in ("mbsess_live", "mbsess_done", "mbsess_bad")
            if f'id="session-{sid}"' in html
        }

    assert ids("") == {"mbsess_live"}  # live by default
    assert ids("?filter=live") == {"mbsess_live"}
    assert ids("?filter=ended") == {"mbsess_done", "mbsess_bad"}
    assert ids("?filter=failed") == {"mbsess_bad"}
    assert ids("?filter=all") == {"mbsess_live", "mbsess_done", "mbsess_bad"}
    assert ids("?filter=bogus") == {"mbsess_live"}


def test_list_search_by_id_bot_link_and_participant(client_alice: Client) -> None:
    a = make_session("mbsess_alpha", bot_name="Sales bot", meeting_link="https://zoom.us/j/777")
    make_session(
        "mbsess_beta", bot_name="Standup bot", meeting_link="https://teams.microsoft.com/x"
    )
    Presence.objects.create(
        session=a, participant_name="Grace Hopper", joined_at=timezone.now(), join_seq=1
    )

    def ids(q: str) -> set[str]:
        html = client_alice.get("/", {"filter": "all", "q": q}).content.decode()
        return {sid for sid in ("mbsess_alpha", "mbsess_beta") if f'id="session-{sid}"' in html}

    assert ids("alpha") == {"mbsess_alpha"}
    assert ids("standup") == {"mbsess_beta"}
    assert ids("teams.microsoft") == {"mbsess_beta"}
    assert ids("grace") == {"mbsess_alpha"}
    assert ids("nobody-like-this") == set()
    assert "No sessions match" in client_alice.get("/", {"q": "zzz"}).content.decode()


def test_list_paginates_most_recent_activity_first(client_alice: Client) -> None:
    for n in range(30):
        make_session(f"mbsess_p{n:02d}", minutes_ago=n)
    first = client_alice.get("/").content.decode()
    second = client_alice.get("/", {"page": 2}).content.decode()
    assert first.index('id="session-mbsess_p00"') < first.index('id="session-mbsess_p01"')
    assert 'id="session-mbsess_p24"' in first and 'id="session-mbsess_p25"' not in first
    assert 'id="session-mbsess_p25"' in second and "Page 2 of 2" in second
    assert 'name="page" value="2"' in second  # the live hello carries the page


def test_list_partial_for_htmx(client_alice: Client) -> None:
    make_session("mbsess_part")
    response = client_alice.get("/", headers={"HX-Request": "true"})
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="list-region"')
    assert "<html" not in html and 'id="session-mbsess_part"' in html
    assert "HX-Request" in response["Vary"]


# --- watch form ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", ["", "abc", "mbsess_", "mbsess_bad id", "MBSESS_x", "mbsess_" + "a" * 65]
)
def test_watch_rejects_malformed_ids(client_alice: Client, value: str) -> None:
    response = client_alice.post(
        "/sessions/watch", {"session_id": value}, headers={"HX-Request": "true"}
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<form id="watch-form"')
    assert 'role="alert"' in html
    assert not MeetingSession.objects.exists()


def test_watch_without_htmx_renders_the_page_with_the_error(client_alice: Client) -> None:
    response = client_alice.post("/sessions/watch", {"session_id": "nope"})
    assert response.status_code == 400
    assert "That is not a session id" in response.content.decode()
    assert "<html" in response.content.decode()


def test_watch_a_known_session_redirects_to_it(client_alice: Client) -> None:
    make_session("mbsess_known", watched=False)
    response = client_alice.post("/sessions/watch", {"session_id": " mbsess_known "})
    assert response.status_code == 302 and response["Location"] == "/sessions/mbsess_known/"
    assert MeetingSession.objects.get(pk="mbsess_known").watched
    htmx = client_alice.post(
        "/sessions/watch", {"session_id": "mbsess_known"}, headers={"HX-Request": "true"}
    )
    assert htmx["HX-Redirect"] == "/sessions/mbsess_known/"


# transaction=True: the look-up stores through database_sync_to_async, which (as in
# production) closes a connection whose autocommit differs from the settings, as it does
# inside a test transaction on PostgreSQL.
@pytest.mark.django_db(transaction=True)
def test_watch_asks_upstream_about_unknown_ids(
    client_alice: Client, simulator_server: Any, settings: Any
) -> None:
    settings.MEETINGBUDDY_API_URL = simulator_server.base_url
    simulator_server.control.create_session(
        session_id="mbsess_upthere", bot_name="Remote bot", platform="teams", manual=True
    )
    missing = client_alice.post(
        "/sessions/watch", {"session_id": "mbsess_nothere"}, headers={"HX-Request": "true"}
    )
    assert "Meeting Buddy has no session" in missing.content.decode()
    assert not MeetingSession.objects.filter(pk="mbsess_nothere").exists()

    found = client_alice.post("/sessions/watch", {"session_id": "mbsess_upthere"})
    assert found.status_code == 302 and found["Location"] == "/sessions/mbsess_upthere/"
    stored = MeetingSession.objects.get(pk="mbsess_upthere")
    assert stored.watched and stored.bot_name == "Remote bot" and stored.platform == "teams"


@pytest.mark.django_db(transaction=True)
def test_watch_says_when_upstream_cannot_be_reached(client_alice: Client, settings: Any) -> None:
    from tests.support import free_port

    settings.MEETINGBUDDY_API_URL = f"http://127.0.0.1:{free_port()}"
    response = client_alice.post(
        "/sessions/watch", {"session_id": "mbsess_offline"}, headers={"HX-Request": "true"}
    )
    assert "Could not check this id" in response.content.decode()


# --- detail --------------------------------------------------------------------------------


def test_detail_unknown_session_is_404(client_alice: Client) -> None:
    assert client_alice.get("/sessions/mbsess_nope/").status_code == 404


def test_detail_shows_status_people_log_svg_and_watermark(client_alice: Client) -> None:
    s = make_session("mbsess_det", platform="meet")
    add_event(s, 1, "status", status="joining")
    add_event(s, 2, "status", status="active", previous_status="joining")
    add_event(s, 3, "joined", participant_name="Ada")
    add_event(s, 4, "left", participant_name="Ada")
    add_event(s, 5, "joined", participant_name="Ada")
    now = timezone.now()
    Presence.objects.create(
        session=s,
        participant_name="Ada",
        joined_at=now - timedelta(seconds=30),
        left_at=now - timedelta(seconds=20),
        join_seq=3,
        leave_seq=4,
    )
    Presence.objects.create(
        session=s, participant_name="Ada", joined_at=now - timedelta(seconds=10), join_seq=5
    )
    html = client_alice.get("/sessions/mbsess_det/").content.decode()
    assert 'ws-connect="/ws/sessions/mbsess_det/"' in html
    assert 'id="live-after" name="after" value="5"' in html
    assert [f'id="event-{n}"' in html for n in range(1, 6)] == [True] * 5
    assert html.index('id="event-1"') < html.index('id="event-5"')
    assert "Joining → In meeting" in html and "Google Meet" in html
    assert (
        html.count('role="row" id="presence-') >= 2
    )  # two presence intervals: the rejoin is a new row
    assert "<svg" in html and 'class="bar tone-present"' in html
    assert "<details" in html and "&quot;seq&quot;: 5" in html
    assert 'id="failure-panel"' in html and "This session failed" not in html


def test_detail_failure_panel(client_alice: Client) -> None:
    s = make_session(
        "mbsess_fail",
        status="failed",
        error_code="ADMISSION_DENIED",
        error_message="Host said no",
        failed_from_status="waiting",
        stream_state="ended",
    )
    add_event(s, 1, "status", status="failed", error_code="ADMISSION_DENIED")
    html = client_alice.get("/sessions/mbsess_fail/").content.decode()
    assert "This session failed" in html
    assert "ADMISSION_DENIED" in html and "Host said no" in html
    assert "In waiting room" in html  # failed from
    assert "declined to let the bot in" in html


def test_detail_escapes_participant_names(client_alice: Client) -> None:
    s = make_session("mbsess_xss")
    name = "<img src=x onerror=alert(1)>"
    add_event(s, 1, "joined", participant_name=name)
    Presence.objects.create(session=s, participant_name=name, joined_at=timezone.now(), join_seq=1)
    html = client_alice.get("/sessions/mbsess_xss/").content.decode()
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_detail_partial_for_htmx(client_alice: Client) -> None:
    s = make_session("mbsess_hx")
    add_event(s, 1, "status", status="active")
    html = client_alice.get("/sessions/mbsess_hx/", headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in html
    assert 'id="session-header"' in html and 'hx-swap-oob="true"' in html
