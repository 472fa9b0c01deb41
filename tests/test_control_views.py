"""The pages that operate bots (issue 15): "Send a bot" and "Stop bot", against the real
upstream simulator, for users with and without the `control_session` permission."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from sessions_monitor import control
from sessions_monitor.control_views import apply_field_errors
from sessions_monitor.forms import SendBotForm
from sessions_monitor.models import ControlAction, ControlKind, ControlOutcomeKind, MeetingSession
from tests.conftest import SimulatorServer
from tests.support import make_session

# transaction=True: the control service writes through database_sync_to_async, which (as in
# production) closes a connection whose autocommit differs from the settings.
pytestmark = pytest.mark.django_db(transaction=True)

ZOOM = "https://zoom.us/j/5551234567"


def form_data(**fields: str) -> dict[str, str]:
    """What the browser posts: the select always sends a language; an unticked box, nothing."""
    return {"meeting_link": ZOOM, "transcription_language": "en", **fields}


def sid() -> str:
    return f"mbsess_ctl{uuid.uuid4().hex[:10]}"


@pytest.fixture
def simulator(simulator_server_module: SimulatorServer, settings: Any) -> Iterator[SimulatorServer]:
    settings.MEETINGBUDDY_API_URL = simulator_server_module.base_url
    yield simulator_server_module
    simulator_server_module.control.reset_faults()


@pytest.fixture
def operator() -> User:
    user = User.objects.create_user("olga-operator", password="pw-operator-123")
    user.user_permissions.add(
        Permission.objects.get(
            content_type__app_label="sessions_monitor", codename="control_session"
        )
    )
    return user


def client_for(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def as_operator(operator: User) -> Client:
    return client_for(operator)


@pytest.fixture
def as_viewer() -> Client:
    return client_for(User.objects.create_user("vic-viewer", password="pw-viewer-123"))


def upstream_session(simulator: SimulatorServer, session_id: str) -> dict[str, Any]:
    response = httpx.get(simulator.url(f"/v1/meeting-buddy/sessions/{session_id}"), timeout=5)
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def running_session(simulator: SimulatorServer, **fields: Any) -> str:
    """A bot in a meeting, upstream (manual: it stays there) and stored here."""
    session_id = sid()
    simulator.control.create_session(session_id=session_id, manual=True, meeting_link=ZOOM)
    simulator.control.emit(session_id, status="active")
    make_session(session_id, status="active", **fields)
    return session_id


# --- sending a bot -----------------------------------------------------------------------------


def test_the_send_form_offers_the_upstream_s_options_with_its_defaults(as_operator: Client) -> None:
    page = as_operator.get("/sessions/new/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'name="meeting_link"' in html and 'value="Meeting Buddy"' in html
    assert (
        '<input type="checkbox" name="transcription_enabled" id="id_transcription_enabled" checked>'
        in html
    )
    assert '<option value="en" selected>English</option>' in html
    assert '<option value="ja">Japanese</option>' in html
    assert 'href="/sessions/new/" aria-current="page"' in html  # the nav says where we are


def test_a_link_that_is_not_a_meeting_is_a_field_error_and_nothing_is_sent(
    as_operator: Client, simulator: SimulatorServer
) -> None:
    before = simulator.control.stats()["requests_total"]
    page = as_operator.post(
        "/sessions/new/",
        {
            "meeting_link": "http://example.com/call",
            "bot_name": "Scribe",
            "transcription_language": "de",
        },
    )
    html = page.content.decode()
    assert page.status_code == 400
    assert 'id="meeting-link-error" role="alert"' in html and control.MSG_BAD_LINK in html
    assert 'aria-invalid="true"' in html
    assert 'value="http://example.com/call"' in html and 'value="Scribe"' in html  # kept
    assert '<option value="de" selected>German</option>' in html
    assert not ControlAction.objects.exists()
    assert simulator.control.stats()["requests_total"] == before


def test_a_good_link_sends_the_bot_and_opens_its_live_page(
    as_operator: Client, simulator: SimulatorServer
) -> None:
    response = as_operator.post(
        "/sessions/new/",
        {
            "meeting_link": f"  {ZOOM}  ",
            "bot_name": "Standup scribe",
            "transcription_language": "fr",
        },  # transcription_enabled unticked
    )
    assert response.status_code == 303
    session_id = response["Location"].removeprefix("/sessions/").removesuffix("/")
    assert response["Location"] == f"/sessions/{session_id}/"
    stored = MeetingSession.objects.get(pk=session_id)
    assert stored.watched and stored.bot_name == "Standup scribe" and stored.platform == "zoom"
    upstream = upstream_session(simulator, session_id)
    assert upstream["meeting_link"] == ZOOM and upstream["bot_name"] == "Standup scribe"
    assert upstream["transcription_enabled"] is False
    assert upstream["transcription_language"] == "fr"
    action = ControlAction.objects.get(session_id=session_id)
    assert (action.action, action.outcome, action.actor_name, action.via) == (
        ControlKind.SEND,
        ControlOutcomeKind.DONE,
        "olga-operator",
        "page",
    )

    page = as_operator.get(response["Location"]).content.decode()
    assert 'class="message message-success" role="status">Bot sent' in page
    assert 'id="audit-title">Actions on this bot' in page and "olga-operator" in page
    assert "Stop bot" in page  # not ended: the operator may stop it from here


def test_an_empty_bot_name_gets_meeting_buddy_s_default(
    as_operator: Client, simulator: SimulatorServer
) -> None:
    response = as_operator.post(
        "/sessions/new/",
        form_data(bot_name=" ", transcription_enabled="on"),
    )
    assert response.status_code == 303
    session_id = response["Location"].split("/")[2]
    upstream = upstream_session(simulator, session_id)
    assert upstream["bot_name"] == "Meeting Buddy" and upstream["transcription_enabled"] is True


def test_a_busy_upstream_is_said_above_the_form_with_when_to_try_again(
    as_operator: Client, simulator: SimulatorServer
) -> None:
    simulator.control.set_faults(control_fail_next={"status": 429, "retry_after": 7})
    page = as_operator.post("/sessions/new/", form_data(bot_name="Later bot"))
    html = page.content.decode()
    assert page.status_code == 429 and page["Retry-After"] == "7"
    assert 'id="send-problem" role="alert">Meeting Buddy is busy: try again in 7 s.' in html
    assert f'value="{ZOOM}"' in html and 'value="Later bot"' in html
    action = ControlAction.objects.get()
    assert action.outcome == ControlOutcomeKind.REFUSED and action.upstream_status == 429


def test_an_upstream_that_fails_is_said_above_the_form(
    as_operator: Client, simulator: SimulatorServer
) -> None:
    simulator.control.set_faults(control_fail_next={"status": 500})
    page = as_operator.post("/sessions/new/", form_data())
    assert page.status_code == 400
    assert control.MSG_UNAVAILABLE in page.content.decode()
    assert not MeetingSession.objects.exists()


def test_the_upstream_s_field_errors_go_on_their_fields_and_nothing_above() -> None:
    form = SendBotForm({"meeting_link": ZOOM, "bot_name": "x", "transcription_language": "en"})
    assert form.is_valid()
    result = control.ControlResult(
        outcome=ControlOutcomeKind.REFUSED,
        message="Meeting Buddy did not accept this: the meeting has ended.",
        session_id=None,
        audit=ControlAction(),
        upstream_status=422,
        upstream_body=None,
        field_errors={"meeting_link": "The meeting has ended.", "visibility": "unknown"},
    )
    assert apply_field_errors(form, result) == ""
    assert form.errors["meeting_link"] == ["The meeting has ended."]
    assert "visibility" not in form.errors
    unplaced = control.ControlResult(**{**result.__dict__, "field_errors": {"other": "no"}})
    assert apply_field_errors(form, unplaced) == result.message


# --- stopping a bot ----------------------------------------------------------------------------


def test_the_detail_page_offers_stop_with_a_confirmation_either_way(
    as_operator: Client, simulator: SimulatorServer
) -> None:
    session_id = running_session(simulator)
    html = as_operator.get(f"/sessions/{session_id}/").content.decode()
    assert f'hx-post="/sessions/{session_id}/stop"' in html and "hx-confirm=" in html
    assert f'method="get" action="/sessions/{session_id}/stop"' in html  # without JavaScript

    confirm = as_operator.get(f"/sessions/{session_id}/stop")
    page = confirm.content.decode()
    assert confirm.status_code == 200 and "Stop this bot?" in page
    assert f'method="post" action="/sessions/{session_id}/stop"' in page
    assert upstream_session(simulator, session_id)["status"] == "active"  # a GET stops nothing


def test_stop_asks_the_upstream_then_says_so_on_the_live_page(
    as_operator: Client, simulator: SimulatorServer
) -> None:
    session_id = running_session(simulator)
    response = as_operator.post(f"/sessions/{session_id}/stop")
    assert response.status_code == 303 and response["Location"] == f"/sessions/{session_id}/"
    assert upstream_session(simulator, session_id)["status"] == "completed"
    page = as_operator.get(response["Location"]).content.decode()
    assert 'role="status">Stop requested; the bot is leaving.</li>' in page
    action = ControlAction.objects.get(session_id=session_id)
    assert (action.action, action.outcome, action.upstream_status) == (
        ControlKind.STOP,
        ControlOutcomeKind.DONE,
        200,
    )

    again = as_operator.post(f"/sessions/{session_id}/stop", follow=True).content.decode()
    assert 'class="message message-info" role="status">This bot had already stopped' in again
    assert ControlAction.objects.filter(outcome=ControlOutcomeKind.NO_OP).count() == 1


def test_stop_by_htmx_answers_the_tools_and_the_audit_trail_in_place(
    as_operator: Client, simulator: SimulatorServer
) -> None:
    session_id = running_session(simulator)
    answer = as_operator.post(f"/sessions/{session_id}/stop", headers={"HX-Request": "true"})
    html = answer.content.decode()
    assert answer.status_code == 200
    assert html.lstrip().startswith('<aside id="control-tools"')
    assert 'role="status">Stop requested; the bot is leaving.</p>' in html
    assert "hx-post=" not in html  # stopped: no second button
    assert 'id="audit-trail" class="card audit-card"' in html and 'hx-swap-oob="true"' in html
    assert "<td>Stop a bot</td>" in html and "olga-operator" in html
    assert 'hx-swap-oob="innerHTML:#live-announcer"' in html


def test_a_failed_stop_says_why_and_keeps_the_button(
    as_operator: Client, simulator: SimulatorServer
) -> None:
    session_id = running_session(simulator)
    simulator.control.set_faults(session_id, control_fail_next={"status": 503})
    answer = as_operator.post(f"/sessions/{session_id}/stop", headers={"HX-Request": "true"})
    html = answer.content.decode()
    assert f'role="alert">{control.MSG_UNAVAILABLE}</p>' in html
    assert f'hx-post="/sessions/{session_id}/stop"' in html
    assert upstream_session(simulator, session_id)["status"] == "active"
    plain = as_operator.post(f"/sessions/{session_id}/stop", follow=True).content.decode()
    assert "Stop requested" in plain  # the injected failure was for one call only


def test_an_ended_session_has_no_stop_button_and_its_confirmation_says_so(
    as_operator: Client,
) -> None:
    session_id = sid()
    make_session(session_id, status="completed")
    assert "Stop bot" not in as_operator.get(f"/sessions/{session_id}/").content.decode()
    page = as_operator.get(f"/sessions/{session_id}/stop").content.decode()
    assert "This bot has already stopped" in page and 'method="post"' not in page.split("<main")[1]


def test_stopping_a_session_we_do_not_have_is_404(as_operator: Client) -> None:
    assert as_operator.get("/sessions/mbsess_ctlmissing/stop").status_code == 404
    assert as_operator.post("/sessions/not-a-session/stop").status_code == 404
    assert not ControlAction.objects.exists()


# --- who may -----------------------------------------------------------------------------------


def test_without_the_permission_both_pages_are_403_and_nothing_is_asked(
    as_viewer: Client, simulator: SimulatorServer
) -> None:
    session_id = running_session(simulator)
    assert as_viewer.get("/sessions/new/").status_code == 403
    assert as_viewer.post("/sessions/new/", form_data()).status_code == 403
    assert as_viewer.get(f"/sessions/{session_id}/stop").status_code == 403
    assert as_viewer.post(f"/sessions/{session_id}/stop").status_code == 403
    assert upstream_session(simulator, session_id)["status"] == "active"
    assert not ControlAction.objects.exists()
    assert MeetingSession.objects.count() == 1


def test_without_the_permission_there_is_no_send_link_and_no_stop_button(
    as_viewer: Client, as_operator: Client, simulator: SimulatorServer
) -> None:
    session_id = running_session(simulator)
    assert as_operator.post(f"/sessions/{session_id}/stop").status_code == 303
    for path in ("/", f"/sessions/{session_id}/"):
        html = as_viewer.get(path).content.decode()
        assert "/sessions/new/" not in html and "/stop" not in html
    assert "/sessions/new/" in as_operator.get("/").content.decode()
    # The audit trail is for everyone who can see the session.
    detail = as_viewer.get(f"/sessions/{session_id}/").content.decode()
    assert "<td>Stop a bot</td>" in detail and "olga-operator" in detail


@pytest.mark.parametrize("method", ["get", "post"])
def test_anonymous_is_sent_to_log_in(method: str) -> None:
    for path in ("/sessions/new/", "/sessions/mbsess_ctlanyone/stop"):
        response = getattr(Client(), method)(path)
        assert response.status_code == 302
        assert response["Location"].startswith("/accounts/login/?next=")
