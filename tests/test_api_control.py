"""The API for programs (api_views.py): start and stop bots with an API token, through the
application as `serve` builds it, against the real simulator over a real socket.

Runs on PostgreSQL too when DATABASE_URL names one (the whole suite does then)."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from meetingdash.asgi import build_application
from sessions_monitor import tokens
from sessions_monitor.models import ControlAction, ControlKind, ControlOutcomeKind, MeetingSession
from tests.simulator_helpers import new_session_id
from tests.support import free_port

pytestmark = pytest.mark.django_db(transaction=True)

MEET_LINK = "https://meet.google.com/abc-defg-hij"
START = "/v1/meeting-buddy/sessions"


def stop_path(session_id: str) -> str:
    return f"/v1/meeting-buddy/sessions/{session_id}/stop"


def _token_for(*, may_control: bool) -> str:
    user = User.objects.create_user(f"prog-{uuid.uuid4().hex[:6]}")
    if may_control:
        user.user_permissions.add(Permission.objects.get(codename="control_session"))
    return tokens.create_token(user=user, name="script")[1]


@pytest.fixture
async def api(upstream: Any) -> Any:
    """`call(method, path, token=None, json=None, content=None)` through our ASGI app."""
    app = build_application()

    async def call(
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.request(method, path, headers=headers, **kwargs)

    return call


@pytest.fixture
async def operator_token() -> str:
    return await database_sync_to_async(_token_for)(may_control=True)


@pytest.fixture
async def viewer_token() -> str:
    return await database_sync_to_async(_token_for)(may_control=False)


def assert_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["success"] is False and body["error"]["status"] == status
    assert body["error"]["code"] and body["error"]["message"] and body["error"]["trace_id"]
    error: dict[str, Any] = body["error"]
    return error


def test_the_routes_have_their_names() -> None:
    assert reverse("api-session-start") == START
    assert reverse("api-session-stop", args=["mbsess_x1"]) == stop_path("mbsess_x1")


async def test_no_token_or_a_bad_one_is_401(api: Any, upstream: Any) -> None:
    before = upstream.control.stats()["requests_total"]
    missing = await api("POST", START, json={"meeting_link": MEET_LINK})
    bad = await api("POST", START, token="mdk_not-a-token", json={"meeting_link": MEET_LINK})
    for response in (missing, bad):
        assert_envelope(response, 401)
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert_envelope(await api("POST", stop_path(new_session_id())), 401)
    assert upstream.control.stats()["requests_total"] == before
    assert not await ControlAction.objects.aexists()


async def test_a_cookie_login_is_not_enough(api: Any) -> None:
    from tests.support import login_cookie

    user = await User.objects.acreate(username=f"cookie-{uuid.uuid4().hex[:6]}")
    cookie = (await database_sync_to_async(login_cookie)(user)).decode()
    response = await api(
        "POST", START, json={"meeting_link": MEET_LINK}, headers={"cookie": cookie}
    )
    assert_envelope(response, 401)


async def test_a_token_without_the_permission_is_403(
    api: Any, upstream: Any, viewer_token: str
) -> None:
    before = upstream.control.stats()["requests_total"]
    response = await api("POST", START, token=viewer_token, json={"meeting_link": MEET_LINK})
    assert assert_envelope(response, 403)["code"] == "INSUFFICIENT_PERMISSIONS"
    assert upstream.control.stats()["requests_total"] == before


async def test_start_answers_201_with_the_session_and_stop_200(
    api: Any, upstream: Any, operator_token: str
) -> None:
    response = await api(
        "POST",
        START,
        token=operator_token,
        json={"meeting_link": MEET_LINK, "bot_name": "Notes", "transcription_language": "de"},
    )
    assert response.status_code == 201, response.text
    session = response.json()
    session_id = session["session_id"]
    assert session["status"] == "initializing" and session["bot_name"] == "Notes"
    assert session["transcription_language"] == "de" and session["platform"] == "google_meet"
    async with httpx.AsyncClient(headers=upstream.headers) as client:
        asked = await client.get(upstream.url(f"/v1/meeting-buddy/sessions/{session_id}"))
    upstream_view = asked.json()
    assert upstream_view["bot_name"] == "Notes"
    assert (await MeetingSession.objects.aget(pk=session_id)).watched

    stopped = await api("POST", stop_path(session_id), token=operator_token)
    assert stopped.status_code == 200, stopped.text
    assert stopped.json()["session_id"] == session_id
    assert stopped.json()["status"] == "completed"
    again = await api("POST", stop_path(session_id), token=operator_token)
    assert again.status_code == 200 and again.json()["status"] == "completed"

    rows = [row async for row in ControlAction.objects.order_by("requested_at", "id")]
    assert [(row.action, row.outcome) for row in rows] == [
        (ControlKind.SEND, ControlOutcomeKind.DONE),
        (ControlKind.STOP, ControlOutcomeKind.DONE),
        (ControlKind.STOP, ControlOutcomeKind.NO_OP),
    ]
    assert {row.via for row in rows} == {"api"}


async def test_a_bad_link_is_422_with_the_field(api: Any, operator_token: str) -> None:
    response = await api(
        "POST", START, token=operator_token, json={"meeting_link": "https://example.com/x"}
    )
    error = assert_envelope(response, 422)
    assert error["details"]["field"] == "meeting_link"
    assert "HTTPS link" in error["details"]["fields"]["meeting_link"]
    assert error["message"].startswith("Meeting Buddy did not accept this")
    [audit] = [row async for row in ControlAction.objects.all()]
    assert audit.via == "api" and audit.upstream_status == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'{"bot_name": "x"}', "meeting_link"),
        (b'{"meeting_link": 5}', "meeting_link"),
        (
            b'{"meeting_link": "https://zoom.us/j/1", "transcription_enabled": "yes"}',
            "transcription_enabled",
        ),
    ],
)
async def test_malformed_requests_are_422_without_asking_upstream(
    api: Any, upstream: Any, operator_token: str, body: bytes, field: str | None
) -> None:
    before = upstream.control.stats()["requests_total"]
    response = await api(
        "POST",
        START,
        token=operator_token,
        content=body,
        headers={"content-type": "application/json"},
    )
    error = assert_envelope(response, 422)
    assert error["details"].get("field") == field
    assert upstream.control.stats()["requests_total"] == before


async def test_unsupported_fields_are_422(api: Any, operator_token: str) -> None:
    response = await api(
        "POST",
        START,
        token=operator_token,
        json={"meeting_link": MEET_LINK, "recording_mode": "audio_video"},
    )
    error = assert_envelope(response, 422)
    assert "recording_mode" in error["message"]


async def test_rate_limited_is_429_with_retry_after(
    api: Any, upstream: Any, operator_token: str
) -> None:
    upstream.control.set_faults(control_fail_next={"count": 1, "status": 429, "retry_after": 9})
    response = await api("POST", START, token=operator_token, json={"meeting_link": MEET_LINK})
    error = assert_envelope(response, 429)
    assert response.headers["retry-after"] == "9"
    assert error["message"] == "Meeting Buddy is busy: try again in 9 s."


async def test_upstream_unavailable_is_503(api: Any, upstream: Any, operator_token: str) -> None:
    session_id = new_session_id()
    upstream.control.create_session(session_id=session_id, manual=True)
    upstream.control.set_faults(control_fail_next={"count": 1, "status": 503, "retry_after": 4})
    response = await api("POST", stop_path(session_id), token=operator_token)
    assert_envelope(response, 503)
    assert response.headers["retry-after"] == "4"


async def test_upstream_unreachable_is_503(api: Any, operator_token: str, settings: Any) -> None:
    settings.MEETINGBUDDY_API_URL = f"http://127.0.0.1:{free_port()}"
    down = await api("POST", START, token=operator_token, json={"meeting_link": MEET_LINK})
    error = assert_envelope(down, 503)
    assert error["message"] == "Meeting Buddy is unavailable right now: try again shortly."


async def test_our_upstream_credentials_refused_is_502_not_401(
    api: Any, operator_token: str, settings: Any, caplog: Any
) -> None:
    secret = "mb-secret-" + "y" * 24
    settings.MEETINGBUDDY_API_TOKEN = secret
    caplog.set_level(logging.DEBUG)
    response = await api("POST", START, token=operator_token, json={"meeting_link": MEET_LINK})
    error = assert_envelope(response, 502)
    assert "credentials for Meeting Buddy were refused" in error["message"]
    assert secret not in response.text and secret not in caplog.text
    assert operator_token not in caplog.text


async def test_stop_of_an_unknown_session_is_404(api: Any, operator_token: str) -> None:
    response = await api("POST", stop_path(new_session_id()), token=operator_token)
    assert assert_envelope(response, 404)["message"] == "Meeting Buddy does not know this session."


async def test_stop_of_a_malformed_id_is_422(api: Any, operator_token: str) -> None:
    response = await api("POST", stop_path("not-a-session"), token=operator_token)
    assert assert_envelope(response, 422)["code"] == "INVALID_SESSION_ID_FORMAT"


async def test_get_is_405(api: Any, operator_token: str) -> None:
    for path in (START, stop_path(new_session_id())):
        response = await api("GET", path, token=operator_token)
        assert_envelope(response, 405)
        assert response.headers["allow"] == "POST"
