"""The embeddable widget: tokens, the page and its framing rules, its live channel, the command."""

from __future__ import annotations

import asyncio
import re
import time
from io import StringIO
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.core import signing
from django.core.management import CommandError, call_command
from django.test import Client, override_settings

from sessions_monitor import embed, embed_consumers, services
from sessions_monitor.hub import get_hub
from sessions_monitor.messages import SESSIONS_GROUP
from sessions_monitor.routing import websocket_urlpatterns
from sessions_monitor.selectors import session_summary
from tests.support import make_session

SID = "mbsess_embed0001"
OTHER = "mbsess_embed0002"
ALLOWED = "https://intranet.example.com"


def tamper(token: str) -> str:
    """Flip one character of the signature."""
    return token[:-1] + ("A" if token[-1] != "A" else "B")


def widget(client: Client, session_id: str, token: str | None) -> Any:
    query = {} if token is None else {"token": token}
    return client.get(f"/embed/sessions/{session_id}/", query)


# --- tokens ------------------------------------------------------------------------------------


def test_a_token_names_one_session_and_an_expiry() -> None:
    token = embed.make_token(SID, days=3, now=1_000_000.0)
    grant = embed.grant_for(token, SID, now=1_000_000.0 + 3 * 86400 - 1)
    assert grant.session_id == SID
    assert grant.expires_at.timestamp() == 1_000_000 + 3 * 86400


@pytest.mark.parametrize(
    "case", ["expired", "tampered", "other-session", "other-salt", "garbage", "missing"]
)
def test_bad_tokens_are_refused(case: str) -> None:
    token = embed.make_token(SID, days=1)
    now = None
    if case == "expired":
        now = time.time() + 86400 + 1
    elif case == "tampered":
        token = tamper(token)
    elif case == "other-session":
        token = embed.make_token(OTHER, days=1)
    elif case == "other-salt":
        token = signing.dumps({"sid": SID, "exp": int(time.time()) + 999}, salt="something.else")
    elif case == "garbage":
        token = "not-a-token"
    elif case == "missing":
        token = ""
    with pytest.raises(embed.InvalidEmbedToken):
        embed.grant_for(token, SID, now=now)


def test_token_lifetime_defaults_to_the_setting_and_is_bounded() -> None:
    with override_settings(MEETINGDASH_EMBED_TOKEN_DAYS=7):
        grant = embed.read_token(embed.make_token(SID))
    assert 7 * 86400 - 5 < grant.expires_at.timestamp() - time.time() <= 7 * 86400
    with pytest.raises(ValueError):
        embed.make_token(SID, days=0)


def test_only_well_formed_origins_reach_the_csp() -> None:
    with override_settings(
        MEETINGDASH_EMBED_ORIGINS=[ALLOWED, "https://*.corp.example:8443", "x; script-src *"]
    ):
        assert embed.frame_ancestors() == f"'self' {ALLOWED} https://*.corp.example:8443"


# --- the page ------------------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(MEETINGDASH_EMBED_ORIGINS=[ALLOWED])
def test_the_widget_shows_the_badge_and_may_be_framed_only_by_allowed_origins(
    client: Client,
) -> None:
    make_session(
        SID,
        status="failed",
        error_code="JOIN_TIMEOUT",
        bot_name="Standup Buddy",
        participants_present=2,
    )
    response = widget(client, SID, embed.make_token(SID))
    assert response.status_code == 200
    body = response.content.decode()
    assert 'id="embed-badge"' in body and "Failed" in body and "JOIN_TIMEOUT" in body
    assert "2 present" in body and "Standup Buddy" in body
    assert "X-Frame-Options" not in response.headers
    csp = response["Content-Security-Policy"]
    assert f"frame-ancestors 'self' {ALLOWED}" in csp
    assert response["Referrer-Policy"] == "no-referrer"
    assert "<nav" not in body, "no site navigation in the widget"
    assert f"/ws/embed/sessions/{SID}/?token=" in body


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["tampered", "expired", "other-session", "missing"])
def test_a_bad_token_gets_a_403_page_with_no_session_data(client: Client, case: str) -> None:
    make_session(SID, bot_name="Standup Buddy", participants_present=2)
    make_session(OTHER, bot_name="Other Buddy")
    token: str | None = {
        "tampered": tamper(embed.make_token(SID)),
        "expired": embed.make_token(SID, days=1, now=time.time() - 2 * 86400),
        "other-session": embed.make_token(OTHER),
        "missing": None,
    }[case]
    response = widget(client, SID, token)
    assert response.status_code == 403
    body = response.content.decode()
    for secret in (SID, OTHER, "Standup Buddy", "Other Buddy", "active", "present", "ws/embed"):
        assert secret not in body


@pytest.mark.django_db
def test_every_other_page_still_refuses_framing(client: Client, admin_client: Client) -> None:
    assert client.get("/accounts/login/")["X-Frame-Options"] == "DENY"
    assert admin_client.get("/admin/")["X-Frame-Options"] == "DENY"
    make_session(SID)
    assert admin_client.get(f"/sessions/{SID}/")["X-Frame-Options"] == "DENY"


@pytest.mark.django_db
def test_the_embed_permission_gets_a_ready_to_paste_snippet(
    admin_client: Client, client: Client
) -> None:
    make_session(SID)
    response = admin_client.get(f"/embed/sessions/{SID}/snippet/", {"days": "5"})
    assert response.status_code == 200
    body = response.content.decode()
    assert "&lt;iframe src=&quot;http://testserver/embed/sessions/" in body
    token = re.search(r"token=([^&\"]+?)(?:&quot;|\")", body)
    assert token is not None
    grant = embed.grant_for(signing_unquote(token.group(1)), SID)
    assert 4 * 86400 < grant.expires_at.timestamp() - time.time() <= 5 * 86400
    partial = admin_client.get(f"/embed/sessions/{SID}/snippet/", headers={"HX-Request": "true"})
    assert partial.content.decode().lstrip().startswith('<div id="embed-snippet"')
    assert admin_client.get("/embed/sessions/not-a-session/snippet/").status_code == 404
    anonymous = client.get(f"/embed/sessions/{SID}/snippet/")
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]


@pytest.mark.django_db
def test_minting_widget_links_needs_the_embed_permission_not_staff(client: Client) -> None:
    from django.contrib.auth.models import Permission

    make_session(SID)
    staff = User.objects.create_user("staffer", password="pw-staff-123", is_staff=True)
    client.force_login(staff)
    assert client.get(f"/embed/sessions/{SID}/snippet/").status_code == 403
    staff.user_permissions.add(Permission.objects.get(codename="embed_session"))
    staff = User.objects.get(pk=staff.pk)  # drop the permission cache
    client.force_login(staff)
    response = client.get(f"/embed/sessions/{SID}/snippet/")
    assert response.status_code == 200
    assert "token=" in response.content.decode()


def signing_unquote(value: str) -> str:
    from urllib.parse import unquote

    return unquote(value)


@pytest.mark.django_db
def test_the_staff_tools_partial_renders_only_with_permissions(rf: Any, admin_user: User) -> None:
    from django.contrib.auth.models import AnonymousUser
    from django.template.loader import render_to_string

    request = rf.get("/")
    for nobody in (AnonymousUser(), User.objects.create_user("plain-staff", is_staff=True)):
        request.user = nobody
        html = render_to_string("sessions_monitor/embed_staff.html", {"session_id": SID}, request)
        assert html.strip() == ""
    request.user = admin_user
    html = render_to_string("sessions_monitor/embed_staff.html", {"session_id": SID}, request)
    assert "/admin/sessions_monitor/meetingsession/mbsess_5Fembed0001/change/" in html
    assert f"/embed/sessions/{SID}/snippet/" in html


# --- the command ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_embed_token_command_prints_the_snippet() -> None:
    make_session(SID)
    out = StringIO()
    call_command(
        "embed_token", SID, "--days", "2", "--base-url", "https://dash.example", stdout=out
    )
    snippet = out.getvalue().strip()
    assert snippet.startswith('<iframe src="https://dash.example/embed/sessions/mbsess_embed0001/')
    match = re.search(r"token=([^\"&]+)", snippet)
    assert match is not None
    grant = embed.grant_for(signing_unquote(match.group(1)), SID)
    assert grant.expires_at.timestamp() - time.time() <= 2 * 86400
    with pytest.raises(CommandError):
        call_command("embed_token", "not a session", stdout=StringIO())


# --- the live channel ---------------------------------------------------------------------------


def socket(session_id: str, token: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        URLRouter(websocket_urlpatterns), f"/ws/embed/sessions/{session_id}/?token={token}"
    )


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "case", ["tampered", "expired", "other-session", "missing", "revoked", "all-revoked"]
)
async def test_the_live_channel_refuses_bad_tokens(fresh_channel_layer: Any, case: str) -> None:
    await database_sync_to_async(make_session)(SID)
    await database_sync_to_async(make_session)(OTHER)
    token = {
        "tampered": tamper(embed.make_token(SID)),
        "expired": embed.make_token(SID, days=1, now=time.time() - 2 * 86400),
        "other-session": embed.make_token(OTHER),
        "missing": "",
        "revoked": embed.make_token(SID),
        "all-revoked": embed.make_token(SID),
    }[case]
    # A widget of the same session connected first: its read must not vouch for the link.
    earlier = socket(SID, embed.make_token(SID))
    assert (await earlier.connect())[0]
    await earlier.receive_from(timeout=5)
    if case in ("revoked", "all-revoked"):
        revoke = {"revoked": [SID], "all-revoked": None}[case]
        await database_sync_to_async(services.revoke_widget_links)(session_ids=revoke)
    communicator = socket(SID, token)
    connected, _ = await communicator.connect()
    assert not connected
    await earlier.disconnect()
    await get_hub().wait_released()
    assert get_hub().subscriber_count(None) == 0


@pytest.mark.django_db(transaction=True)
async def test_the_live_channel_sends_the_badge_then_each_change_rendered_once(
    fresh_channel_layer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = await database_sync_to_async(make_session)(
        SID, status="joining", participants_present=0, last_seq=5
    )
    renders: list[str] = []
    original = embed_consumers.badge_of

    def counting(message: Any) -> str:
        renders.append(message.session_id)
        return original(message)

    monkeypatch.setattr(embed_consumers, "badge_of", counting)
    token = embed.make_token(SID)
    first, second = socket(SID, token), socket(SID, token)
    for communicator in (first, second):
        connected, _ = await communicator.connect()
        assert connected
        initial = await communicator.receive_from(timeout=5)
        assert 'id="embed-badge"' in initial and "Joining" in initial

    summary = await database_sync_to_async(session_summary)(session)
    other = {**summary, "session_id": OTHER, "status": "failed"}
    await fresh_channel_layer.group_send(SESSIONS_GROUP, {"type": "sessions.summary", **other})
    stale = {**summary, "status": "initializing", "last_seq": 4}  # older than the snapshot (5)
    await fresh_channel_layer.group_send(SESSIONS_GROUP, {"type": "sessions.summary", **stale})
    changed = {**summary, "status": "active", "participants_present": 3, "last_seq": 6}
    await fresh_channel_layer.group_send(SESSIONS_GROUP, {"type": "sessions.summary", **changed})
    later = {**changed, "participants_present": 4, "last_seq": 7}
    await fresh_channel_layer.group_send(SESSIONS_GROUP, {"type": "sessions.summary", **later})
    for communicator in (first, second):
        update = await communicator.receive_from(timeout=5)
        assert "In meeting" in update and "3 present" in update
        # The next frame is the later change: nothing came between (no repeat, no stale one).
        assert "4 present" in await communicator.receive_from(timeout=5)
    # One render per process per message of this session (the stale one too: the hub
    # renders to compare with what was let through); none for other sessions.
    assert renders == [SID, SID, SID]
    for communicator in (first, second):
        await communicator.disconnect()
    await get_hub().wait_released()
    assert get_hub().subscriber_count(None) == 0


@pytest.mark.django_db(transaction=True)
async def test_the_live_channel_closes_when_the_token_expires(fresh_channel_layer: Any) -> None:
    await database_sync_to_async(make_session)(SID, bot_name="Standup Buddy")
    # Expires in 3 s: enough for a connect on a loaded CI machine, short enough to wait for.
    token = embed.make_token(SID, days=1, now=time.time() - 86400 + 3.0)
    communicator = socket(SID, token)
    connected, _ = await communicator.connect()
    assert connected
    await communicator.receive_from(timeout=5)
    farewell = await communicator.receive_from(timeout=5)
    assert 'data-status="expired"' in farewell and "Standup Buddy" not in farewell
    closed = await asyncio.wait_for(communicator.receive_output(timeout=5), timeout=6)
    assert closed == {"type": "websocket.close", "code": embed_consumers.CLOSE_EXPIRED}
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_widgets_share_one_summaries_subscription_routed_by_session(
    fresh_channel_layer: Any,
) -> None:
    first_session = await database_sync_to_async(make_session)(SID, status="joining")
    await database_sync_to_async(make_session)(OTHER, status="joining", bot_name="Other Buddy")
    mine, theirs = socket(SID, embed.make_token(SID)), socket(OTHER, embed.make_token(OTHER))
    for communicator in (mine, theirs):
        assert (await communicator.connect())[0]
        await communicator.receive_from(timeout=5)
    # One summaries membership for the process, each widget routed its own session's.
    assert get_hub().stats()["feeds"] == 1
    assert get_hub().subscriber_kinds() == {"widget": 2}

    summary = await database_sync_to_async(session_summary)(first_session)
    changed = {**summary, "status": "active"}
    await fresh_channel_layer.group_send(SESSIONS_GROUP, {"type": "sessions.summary", **changed})
    assert "In meeting" in await mine.receive_from(timeout=5)
    theirs_changed = {**summary, "session_id": OTHER, "bot_name": "Other Buddy", "status": "failed"}
    await fresh_channel_layer.group_send(
        SESSIONS_GROUP, {"type": "sessions.summary", **theirs_changed}
    )
    # Their first frame is their own change, sent after mine: mine was not sent to them.
    assert "Failed" in await theirs.receive_from(timeout=5)
    for communicator in (mine, theirs):
        await communicator.disconnect()
    await get_hub().wait_released()
    assert get_hub().subscriber_count(None) == 0


@pytest.mark.django_db
def test_the_dashboard_detail_page_offers_admin_and_snippet_to_staff_only(
    admin_client: Client, django_user_model: Any
) -> None:
    make_session(SID)
    staff_page = admin_client.get(f"/sessions/{SID}/").content.decode()
    assert "/admin/sessions_monitor/meetingsession/mbsess_5Fembed0001/change/" in staff_page
    assert f"/embed/sessions/{SID}/snippet/" in staff_page
    viewer = django_user_model.objects.create_user("viewer", password="pw")
    client = Client()
    client.force_login(viewer)
    page = client.get(f"/sessions/{SID}/").content.decode()
    assert "/snippet/" not in page and "/change/" not in page
