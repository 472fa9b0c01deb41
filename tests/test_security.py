"""Security hardening (issue 9), in process: defaults, tokens, headers, origins, limits,
access that ends when it is revoked. Server-level checks (slow clients, the mounted
simulator, streams against a real `serve`) are in tests/e2e/test_security_server.py."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Permission, User
from django.core.management import call_command
from django.test import Client
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from sessions_monitor import consumers, embed, embed_consumers, limits, services, streams, tokens
from sessions_monitor.models import EmbedRevocation
from tests.support import ROOT, login_cookie, make_session

SID = "mbsess_sec0001"


def application() -> Any:
    from meetingdash.asgi import build_application

    return build_application()


# --- safe defaults ------------------------------------------------------------------------------


def settings_in_subprocess(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "MEETINGDASH_"))}
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "meetingdash.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_debug_is_off_unless_asked_for_and_then_a_secret_key_is_required() -> None:
    forgotten = settings_in_subprocess()
    assert forgotten.returncode != 0
    assert "DJANGO_SECRET_KEY must be set" in forgotten.stderr

    production = settings_in_subprocess(DJANGO_SECRET_KEY="s3cret-" + "x" * 40)
    assert production.returncode == 0, production.stderr
    assert production.stdout.strip() == "False"


def test_the_public_development_key_is_refused_with_debug_off() -> None:
    from meetingdash.settings import DEV_SECRET_KEY

    result = settings_in_subprocess(DJANGO_DEBUG="0", DJANGO_SECRET_KEY=DEV_SECRET_KEY)
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY must be set to a secret value" in result.stderr


@pytest.mark.django_db
def test_check_deploy_flags_a_mounted_simulator(settings: Any, capsys: Any) -> None:
    from django.core.management.base import SystemCheckError

    settings.MEETINGBUDDY_API_URL = ""
    settings.MEETINGDASH_SIMULATOR = True
    settings.MEETINGDASH_SIMULATOR_TOKEN = ""
    with pytest.raises(SystemCheckError) as raised:
        call_command("check", "--deploy", "--tag", "security")
    assert "meetingdash.E001" in str(raised.value)
    assert "meetingdash.W001" in str(raised.value)
    settings.MEETINGDASH_SIMULATOR = False
    call_command("check", "--deploy", "--tag", "security", "--fail-level", "ERROR")


# --- widget tokens ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_widget_token_with_a_huge_expiry_is_a_403_not_a_500(client: Client) -> None:
    from django.core import signing

    make_session(SID)
    for payload in (
        {"sid": SID, "exp": 10**30},
        {"sid": SID, "exp": -(10**30)},
        {"sid": SID, "exp": 2**40, "iat": 10**40},
        {"sid": SID, "exp": "soon"},
        {"sid": SID, "exp": True},
    ):
        token = signing.dumps(payload, salt=embed.SALT)
        response = client.get(f"/embed/sessions/{SID}/", {"token": token})
        assert response.status_code == 403, payload
        assert "not valid" in response.content.decode()


@given(st.text(max_size=300))
@hypothesis_settings(max_examples=200, deadline=None)
def test_reading_any_text_as_a_widget_token_raises_only_invalid_token(text: str) -> None:
    with pytest.raises(embed.InvalidEmbedToken):
        embed.read_token(text)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)


@given(
    st.dictionaries(
        st.sampled_from(["sid", "exp", "iat", "x"]), json_values | st.integers(), max_size=4
    )
)
@hypothesis_settings(max_examples=200, deadline=None)
def test_any_signed_payload_is_a_grant_or_invalid_never_a_crash(payload: dict[str, Any]) -> None:
    from django.core import signing

    token = signing.dumps(payload, salt=embed.SALT)
    try:
        grant = embed.read_token(token)
    except embed.InvalidEmbedToken:
        return
    assert grant.session_id == payload["sid"]


@pytest.mark.django_db
def test_revoked_widget_links_get_the_refused_page_and_newer_ones_work(client: Client) -> None:
    make_session(SID)
    make_session("mbsess_sec0002")
    old_mine, old_other = embed.make_token(SID), embed.make_token("mbsess_sec0002")
    time.sleep(0.002)  # issued-at has millisecond resolution
    services.revoke_widget_links(session_ids=[SID])
    assert client.get(f"/embed/sessions/{SID}/", {"token": old_mine}).status_code == 403
    assert client.get("/embed/sessions/mbsess_sec0002/", {"token": old_other}).status_code == 200
    time.sleep(0.002)
    fresh = embed.make_token(SID)
    assert client.get(f"/embed/sessions/{SID}/", {"token": fresh}).status_code == 200

    time.sleep(0.002)
    services.revoke_widget_links(session_ids=None)
    for session_id, token in ((SID, fresh), ("mbsess_sec0002", old_other)):
        response = client.get(f"/embed/sessions/{session_id}/", {"token": token})
        assert response.status_code == 403
        assert "not valid" in response.content.decode()


@pytest.mark.django_db
def test_an_admin_revokes_every_widget_link_from_the_changelist(admin_client: Client) -> None:
    import re

    make_session(SID)
    token = embed.make_token(SID)
    changelist = admin_client.get("/admin/sessions_monitor/meetingsession/").content.decode()
    link = re.search(r'href="([^"]+revoke-all-widget-links/)"', changelist)
    assert link is not None, "the changelist offers the revoke-all page"
    confirm = admin_client.get(link.group(1))
    assert confirm.status_code == 200 and "Revoke every widget link" in confirm.content.decode()
    assert not EmbedRevocation.objects.exists(), "GET only asks"
    done = admin_client.post(link.group(1))
    assert done.status_code == 302
    revocation = EmbedRevocation.objects.get()
    assert revocation.session_id is None and revocation.revoked_by is not None
    assert Client().get(f"/embed/sessions/{SID}/", {"token": token}).status_code == 403


@pytest.mark.django_db
def test_staff_without_the_embed_permission_cannot_revoke(client: Client) -> None:
    staff = User.objects.create_user("staff2", password="pw-staff-123", is_staff=True)
    staff.user_permissions.add(Permission.objects.get(codename="view_meetingsession"))
    client.force_login(staff)
    response = client.post("/admin/sessions_monitor/meetingsession/revoke-all-widget-links/")
    assert response.status_code == 403
    assert not EmbedRevocation.objects.exists()


# --- bytes on our stream ------------------------------------------------------------------------

SPLITLINES_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"


def test_line_separators_in_names_are_escaped_in_data() -> None:
    frame = streams.sse_frame(
        SID,
        {
            "seq": 3,
            "kind": "joined",
            "participant_name": "Eve\u2028event: status\u2029data: x\x85",
            "timestamp": None,
            "received_at": "2026-01-01T00:00:00Z",
        },
    ).decode()
    # Any line splitter sees the same lines as the SSE parser (which splits on \n only).
    assert frame.splitlines() == frame.split("\n")[:-1]
    data = json.loads(frame.split("data: ", 1)[1])
    assert data["participant_name"] == "Eve\u2028event: status\u2029data: x\x85"


@given(st.text(), st.text(), st.text(), st.text())
@hypothesis_settings(max_examples=300, deadline=None)
def test_no_field_value_can_break_a_line_in_the_framing(
    status: str, name: str, code: str, message: str
) -> None:
    for event in (
        {"seq": 1, "kind": "status", "status": status, "previous_status": name},
        {"seq": 2, "kind": "joined", "participant_name": name},
        {"seq": 3, "kind": "close", "note": message},
    ):
        event = {"error_code": code, "error_message": message, "received_at": None, **event}
        frame = streams.sse_frame(SID, event).decode()
        body = frame.removesuffix("\n\n")
        # Exactly the three fields, each on its own line, whatever splitter a client uses.
        assert not any(ch in body.replace("\n", "") for ch in SPLITLINES_BREAKS)
        assert [line.split(":", 1)[0] for line in body.splitlines()] == ["id", "event", "data"]


# --- headers and hosts on every route --------------------------------------------------------------


async def asgi_get(path: str, **kwargs: Any) -> httpx.Response:
    transport = httpx.ASGITransport(app=application(), client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.get(path, **kwargs)


@pytest.mark.django_db(transaction=True)
async def test_the_stream_route_gets_the_security_headers() -> None:
    response = await asgi_get(f"/v1/meeting-buddy/sessions/{SID}/stream")
    assert response.status_code == 401
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.django_db(transaction=True)
async def test_the_stream_refuses_plain_http_when_https_is_required(settings: Any) -> None:
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 3600
    response = await asgi_get(f"/v1/meeting-buddy/sessions/{SID}/stream")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "HTTPS_REQUIRED"
    assert "strict-transport-security" not in response.headers

    transport = httpx.ASGITransport(app=application())
    async with httpx.AsyncClient(transport=transport, base_url="https://127.0.0.1") as client:
        secure = await client.get(f"/v1/meeting-buddy/sessions/{SID}/stream")
    assert secure.status_code == 401
    assert secure.headers["strict-transport-security"].startswith("max-age=3600")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "path", ["/v1/meeting-buddy/sessions/mbsess_x/stream", "/healthz", "/accounts/login/"]
)
async def test_requests_for_a_foreign_host_are_refused_on_every_route(path: str) -> None:
    response = await asgi_get(path, headers={"Host": "evil.example"})
    assert response.status_code == 400


@pytest.mark.django_db(transaction=True)
async def test_the_simulator_mount_validates_the_host_too() -> None:
    from meetingdash.asgi import build_application
    from sessions_monitor.simulator import Simulator

    simulator = Simulator(initial_sessions=0, arrivals=False, token="sim-token")
    app = build_application(simulator_app=simulator.asgi_app, simulator_hosts=("127.0.0.1",))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        sessions = "/_simulator/v1/meeting-buddy/sessions"
        foreign = await client.get(sessions, headers={"Host": "evil.example"})
        anonymous = await client.get(sessions)
        allowed = await client.get(sessions, headers={"Authorization": "Bearer sim-token"})
    assert (foreign.status_code, anonymous.status_code, allowed.status_code) == (400, 401, 200)


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/", "/"])
def test_pages_and_the_admin_carry_a_strict_csp(admin_client: Client, path: str) -> None:
    response = Client().get(path) if "login" in path else admin_client.get(path)
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "frame-ancestors 'none'" in policy


@pytest.mark.django_db
def test_password_reset_is_not_offered(client: Client) -> None:
    assert client.get("/accounts/password_reset/").status_code == 404


async def ws_connect(headers: list[tuple[bytes, bytes]], path: str = "/ws/sessions/") -> Any:
    communicator = WebsocketCommunicator(application(), path, headers=headers)
    connected, _ = await communicator.connect()
    return communicator, connected


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (b"http://127.0.0.1:8000", True),
        (b"http://127.0.0.1:9999", False),  # same host, another port: another app
        (b"https://127.0.0.1:8000", False),  # another scheme
        (b"http://evil.example", False),
        (b"null", False),
        (b"https://trusted.example", True),  # CSRF_TRUSTED_ORIGINS
    ],
)
async def test_the_websocket_origin_must_match_scheme_host_and_port(
    fresh_channel_layer: Any, settings: Any, origin: bytes, allowed: bool
) -> None:
    settings.CSRF_TRUSTED_ORIGINS = ["https://trusted.example"]
    user = await User.objects.acreate(username="origin-user")
    cookie = await database_sync_to_async(login_cookie)(user)
    headers = [(b"host", b"127.0.0.1:8000"), (b"origin", origin), (b"cookie", cookie)]
    communicator, connected = await ws_connect(headers)
    assert connected is allowed
    await communicator.disconnect()


# --- failed logins ------------------------------------------------------------------------------


def post_login(client: Client, path: str, username: str, password: str) -> str:
    response = client.post(
        path, {"username": username, "password": password}, REMOTE_ADDR="10.0.0.7"
    )
    return response.content.decode()


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_failed_logins_are_throttled_per_username(settings: Any, path: str) -> None:
    from django.core.cache import cache

    cache.clear()
    settings.MEETINGDASH_LOGIN_FAILURES_PER_USERNAME = 3
    User.objects.create_user("mallory-target", password="right-password-123", is_staff=True)
    client = Client()
    for _ in range(3):
        assert "Too many failed logins" not in post_login(client, path, "mallory-target", "wrong")
    page = post_login(client, path, "mallory-target", "right-password-123")
    assert "Too many failed logins" in page
    assert "_auth_user_id" not in client.session
    # Another account from another address is unaffected.
    User.objects.create_user("bystander", password="right-password-123", is_staff=True)
    other = Client()
    response = other.post(path, {"username": "bystander", "password": "right-password-123"})
    assert response.status_code == 302


@pytest.mark.django_db
def test_failed_logins_are_throttled_per_address(settings: Any) -> None:
    from django.core.cache import cache

    cache.clear()
    settings.MEETINGDASH_LOGIN_FAILURES_PER_IP = 4
    User.objects.create_user("victim", password="right-password-123")
    client = Client()
    for n in range(4):
        post_login(client, "/accounts/login/", f"guess-{n}", "wrong")
    assert "Too many failed logins" in post_login(
        client, "/accounts/login/", "victim", "right-password-123"
    )


def test_the_rate_limit_window_counts_then_refuses_then_resets() -> None:
    verdicts = [
        limits.hit("test", "k", limit=2, window=60, now=1_000_000.0).allowed for _ in range(3)
    ]
    assert verdicts == [True, True, False]
    assert limits.hit("test", "k", limit=2, window=60, now=1_000_061.0).allowed


# --- access that ends when it is revoked (sockets) -----------------------------------------------


@pytest.fixture
def quick_checks(settings: Any) -> None:
    """Keepalive 1 s, so access is re-checked every 0.5 s."""
    settings.MEETINGDASH_KEEPALIVE_SECONDS = 1.0


async def live_socket(user: User, path: str = f"/ws/sessions/{SID}/") -> tuple[Any, Client]:
    """A page socket with a real session cookie, and the Client that owns the session."""
    client = Client()
    await database_sync_to_async(client.force_login)(user)
    cookie = f"sessionid={client.cookies['sessionid'].value}".encode()
    communicator = WebsocketCommunicator(
        application(), path, headers=[(b"cookie", cookie), (b"origin", b"http://testserver")]
    )
    communicator.scope["headers"].append((b"host", b"testserver"))
    connected, _ = await communicator.connect()
    assert connected
    return communicator, client


async def closed_code(communicator: WebsocketCommunicator, within: float = 5.0) -> int:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        output = await communicator.receive_output(timeout=deadline - time.monotonic())
        if output["type"] == "websocket.close":
            return int(output["code"])
    raise AssertionError("the socket stayed open")


@pytest.mark.django_db(transaction=True)
async def test_logging_out_closes_the_open_page_socket(
    fresh_channel_layer: Any, quick_checks: None, settings: Any, caplog: Any
) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    await database_sync_to_async(make_session)(SID)
    user = await User.objects.acreate(username="leaver")
    communicator, client = await live_socket(user)
    await database_sync_to_async(client.post)("/accounts/logout/")
    # (on the logger itself: building the ASGI app re-ran Django's logging setup)
    consumers.logger.addHandler(caplog.handler)
    try:
        assert await closed_code(communicator) == consumers.CLOSE_FORBIDDEN
    finally:
        consumers.logger.removeHandler(caplog.handler)
    # Closed by the periodic access check (every half keepalive), not by anything slower.
    assert f"access ended for user:{user.pk}" in caplog.text


@pytest.mark.django_db(transaction=True)
async def test_deactivating_a_user_closes_the_open_page_socket(
    fresh_channel_layer: Any, quick_checks: None, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    user = await User.objects.acreate(username="deactivated")
    communicator, _client = await live_socket(user, "/ws/sessions/")
    await communicator.send_to(text_data=json.dumps({"filter": "live"}))
    await communicator.receive_from(timeout=5)  # the list
    user.is_active = False
    await user.asave()
    assert await closed_code(communicator) == consumers.CLOSE_FORBIDDEN


@pytest.mark.django_db(transaction=True)
async def test_a_user_over_the_open_page_limit_is_told_so(
    fresh_channel_layer: Any, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.MEETINGDASH_MAX_PAGES_PER_USER = 2
    user = await User.objects.acreate(username="tabby")
    first, _ = await live_socket(user, "/ws/sessions/")
    second, _ = await live_socket(user, "/ws/sessions/")
    third, _ = await live_socket(user, "/ws/sessions/")
    assert await closed_code(third) == consumers.CLOSE_TOO_MANY
    await first.disconnect()
    fourth, _ = await live_socket(user, "/ws/sessions/")
    await fourth.send_to(text_data=json.dumps({"filter": "live"}))
    assert "list-region" in await fourth.receive_from(timeout=5)
    for communicator in (second, fourth):
        await communicator.disconnect()


def widget_socket(token: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application(),
        f"/ws/embed/sessions/{SID}/?token={token}",
        headers=[(b"host", b"testserver"), (b"origin", b"http://testserver")],
    )


@pytest.mark.django_db(transaction=True)
async def test_revoking_a_widget_link_closes_its_open_widgets_saying_so(
    fresh_channel_layer: Any, quick_checks: None, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    await database_sync_to_async(make_session)(SID)
    token = embed.make_token(SID)
    communicator = widget_socket(token)
    connected, _ = await communicator.connect()
    assert connected
    assert "embed-badge" in await communicator.receive_from(timeout=5)
    await asyncio.sleep(0.01)  # issued-at has millisecond resolution
    await database_sync_to_async(services.revoke_widget_links)(session_ids=[SID])
    frame = await communicator.receive_from(timeout=5)
    while frame == consumers.KEEPALIVE:
        frame = await communicator.receive_from(timeout=5)
    assert "was revoked" in frame
    assert await closed_code(communicator) == embed_consumers.CLOSE_REVOKED


@pytest.mark.django_db(transaction=True)
async def test_one_widget_link_may_hold_only_so_many_sockets(
    fresh_channel_layer: Any, settings: Any
) -> None:
    settings.ALLOWED_HOSTS = ["testserver"]
    settings.MEETINGDASH_MAX_WIDGETS_PER_TOKEN = 2
    await database_sync_to_async(make_session)(SID)
    token = embed.make_token(SID)
    sockets = [widget_socket(token) for _ in range(3)]
    for communicator in sockets:
        connected, _ = await communicator.connect()
        assert connected
        await communicator.receive_from(timeout=5)
    assert await closed_code(sockets[2]) == embed_consumers.CLOSE_TOO_MANY
    for communicator in sockets[:2]:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_revoked_api_token_is_no_longer_valid_on_the_next_check() -> None:
    from sessions_monitor import access

    user = await User.objects.acreate(username="programmer")
    row, plain = await database_sync_to_async(tokens.create_token)(user=user)
    credential = access.Credential("token", str(row.pk), user_id=user.pk)
    assert await database_sync_to_async(access.check_now)(credential)
    await database_sync_to_async(tokens.revoke)(row)
    assert not await database_sync_to_async(access.check_now)(credential)
