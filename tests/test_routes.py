"""Every route, for every kind of caller: the answer is the one this table expects.

The routes come from the URL conf and the Channels routing themselves, so a new route
without a row here fails `test_every_route_has_an_expectation` before it can ship
unchecked. Roles: anonymous, a logged-in user without permissions, a staff user without
permissions, a superuser.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.contrib.contenttypes.models import ContentType
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone

from sessions_monitor.models import (
    ApiToken,
    ControlAction,
    EmbedRevocation,
    Follow,
    MeetingSession,
    Presence,
    SessionEvent,
)
from sessions_monitor.routing import http_urlpatterns, websocket_urlpatterns
from tests.support import login_cookie

ROLES = ("anonymous", "user", "staff", "superuser")
SID = "mbsess_routes01"
LOGIN = "→/accounts/login/"
ADMIN_LOGIN = "→/admin/login/"
TO_ADMIN = "→/admin/"
TO_CHANGE = "→…/change/"  # the admin's object URL redirects to its change page

Expected = tuple[int | str, int | str, int | str, int | str]

# --- Django routes ------------------------------------------------------------------------------

OURS: dict[str, Expected] = {
    "login": (200, 200, 200, 200),
    "logout": (405, 405, 405, 405),  # POST only
    "healthz": (200, 200, 200, 200),  # the detail only for staff: see test_health.py
    "metrics": (403, 403, 200, 200),
    "session-list": (LOGIN, 200, 200, 200),
    "session-watch": (LOGIN, 405, 405, 405),  # POST only
    "session-detail": (LOGIN, 200, 200, 200),
    "session-send": (LOGIN, 403, 403, 200),  # the control_session permission, not staff
    "session-stop": (LOGIN, 403, 403, 200),  # GET: the confirmation page
    "api-session-start": (405, 405, 405, 405),  # POST only, with an API token
    "api-session-stop": (405, 405, 405, 405),
    "embed-session": (403, 403, 403, 403),  # no token: the refused page, for everyone
    "embed-snippet": (LOGIN, 403, 403, 200),  # the embed permission, not staff
    "insights": (LOGIN, 200, 200, 200),
    "alerts": (LOGIN, 200, 200, 200),
    "follows": (LOGIN, 200, 200, 200),
    "follow-bot": (LOGIN, 405, 405, 405),  # POST only
    "session-follow": (LOGIN, 405, 405, 405),  # POST only
    "session-export": (LOGIN, 200, 200, 200),
}

ADMIN_SITE: dict[str, Expected] = {
    "admin:index": (ADMIN_LOGIN, ADMIN_LOGIN, 200, 200),
    "admin:login": (200, 200, TO_ADMIN, TO_ADMIN),
    "admin:logout": (TO_ADMIN, TO_ADMIN, 405, 405),  # POST only, for those logged in
    "admin:password_change": (ADMIN_LOGIN, ADMIN_LOGIN, 200, 200),
    "admin:password_change_done": (ADMIN_LOGIN, ADMIN_LOGIN, 200, 200),
    "admin:autocomplete": (ADMIN_LOGIN, ADMIN_LOGIN, 403, 403),  # no field named
    "admin:jsi18n": (ADMIN_LOGIN, ADMIN_LOGIN, 200, 200),
    "admin:view_on_site": (ADMIN_LOGIN, ADMIN_LOGIN, 404, 404),  # sessions have no public URL
    "admin:app_list": (ADMIN_LOGIN, ADMIN_LOGIN, 404, 200),
    "admin:sessions_monitor_revoke_all_widget_links": (ADMIN_LOGIN, ADMIN_LOGIN, 403, 200),
    "admin:auth_user_password_change": (ADMIN_LOGIN, ADMIN_LOGIN, 403, 200),
    "admin:(?P<url>.*)$": (ADMIN_LOGIN, ADMIN_LOGIN, 404, 404),
}

# Admin models: (model, whether anyone may add rows). History is read-only: never added.
ADMIN_MODELS = {
    "auth_group": True,
    "auth_user": True,
    "sessions_monitor_meetingsession": False,
    "sessions_monitor_sessionevent": False,
    "sessions_monitor_presence": False,
    "sessions_monitor_apitoken": True,
    "sessions_monitor_embedrevocation": False,
    "sessions_monitor_controlaction": False,
    "sessions_monitor_alertrule": True,
    "sessions_monitor_alertdelivery": False,
    "sessions_monitor_follow": False,
}


def admin_model_rows() -> dict[str, Expected]:
    """Staff without permissions are refused every model view; the superuser may view all,
    add only what is not history."""
    rows: dict[str, Expected] = {}
    for model, addable in ADMIN_MODELS.items():
        refused: Expected = (ADMIN_LOGIN, ADMIN_LOGIN, 403, 200)
        rows[f"admin:{model}_changelist"] = refused
        rows[f"admin:{model}_add"] = (ADMIN_LOGIN, ADMIN_LOGIN, 403, 200 if addable else 403)
        rows[f"admin:{model}_history"] = refused
        rows[f"admin:{model}_delete"] = refused
        rows[f"admin:{model}_change"] = refused
        rows[f"admin:{model}:<object>"] = (ADMIN_LOGIN, ADMIN_LOGIN, TO_CHANGE, TO_CHANGE)
    return rows


DJANGO_ROUTES: dict[str, Expected] = {
    **OURS,
    **ADMIN_SITE,
    **admin_model_rows(),
    # The audit trail is never deleted, not even by a superuser.
    "admin:sessions_monitor_controlaction_delete": (ADMIN_LOGIN, ADMIN_LOGIN, 403, 403),
    # The delivery log and the follows are read-only too.
    "admin:sessions_monitor_alertdelivery_delete": (ADMIN_LOGIN, ADMIN_LOGIN, 403, 403),
    "admin:sessions_monitor_follow_delete": (ADMIN_LOGIN, ADMIN_LOGIN, 403, 403),
}


def walk(patterns: list[Any], prefix: str = "", namespace: str = "") -> Iterator[tuple[str, str]]:
    """(key, pattern) of every route; the key is its name, or for the admin's unnamed
    object redirects "<model>:<object>", or else the pattern itself."""
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            inner = namespace + (f"{pattern.namespace}:" if pattern.namespace else "")
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
            continue
        assert isinstance(pattern, URLPattern)
        route = prefix + str(pattern.pattern)
        if pattern.name:
            yield namespace + pattern.name, route
            continue
        match = re.fullmatch(r"admin/(\w+)/(\w+)/<path:object_id>/", route)
        key = (
            f"admin:{match.group(1)}_{match.group(2)}:<object>"
            if match
            else namespace + str(pattern.pattern)
        )
        yield key, route


@pytest.fixture
def world(transactional_db: Any) -> dict[str, Any]:
    now = timezone.now()
    session = MeetingSession.objects.create(
        session_id=SID, status="completed", started_at=now, ended_at=now, last_seq=2
    )
    event = SessionEvent.objects.create(session=session, seq=1, kind="status", status="completed")
    SessionEvent.objects.create(session=session, seq=2, kind="close", note="session_ended")
    presence = Presence.objects.create(
        session=session, participant_name="A", joined_at=now, join_seq=1
    )
    superuser = User.objects.create_superuser("root-user", password="pw-root-12345")
    token = ApiToken.objects.create(user=superuser, token_hash="0" * 64, prefix="mdk_x")
    revocation = EmbedRevocation.objects.create(session=session)
    action = ControlAction.objects.create(
        session=session, session_ref=SID, action="stop", outcome="done", actor_name="root-user"
    )
    from django.contrib.auth.models import Group

    from sessions_monitor.alerts import outbox
    from sessions_monitor.alerts.rules import create_rule

    rule = create_rule(trigger="failed", channel="webhook", target="https://example.test/h").rule
    delivery = outbox.enqueue_test(rule)
    follow = Follow.objects.create(user=superuser, session=session)

    group = Group.objects.create(name="ops")
    objects = {
        "auth_group": group.pk,
        "auth_user": superuser.pk,
        "sessions_monitor_meetingsession": SID,
        "sessions_monitor_sessionevent": event.pk,
        "sessions_monitor_presence": presence.pk,
        "sessions_monitor_apitoken": token.pk,
        "sessions_monitor_embedrevocation": revocation.pk,
        "sessions_monitor_controlaction": action.pk,
        "sessions_monitor_alertrule": rule.pk,
        "sessions_monitor_alertdelivery": delivery.pk,
        "sessions_monitor_follow": follow.pk,
    }
    users = {
        "anonymous": None,
        "user": User.objects.create_user("plain-user", password="pw-plain-12345"),
        "staff": User.objects.create_user("staff-user", password="pw-staff-12345", is_staff=True),
        "superuser": superuser,
    }
    return {"objects": objects, "users": users}


def concrete(route: str, objects: dict[str, Any]) -> str:
    """A real URL for the route pattern, with sample values for its parameters."""
    model = re.match(r"admin/(\w+)/(\w+)/<", route)
    object_id = objects[f"{model.group(1)}_{model.group(2)}"] if model else SID
    content_type = ContentType.objects.get_for_model(MeetingSession).pk
    url = route.replace("^", "").replace("$", "")
    url = re.sub(r"\(\?P<app_label>[^)]*\)", "sessions_monitor", url)
    url = re.sub(r"\(\?P<url>\.\*\)", "no-such-page/", url)
    url = url.replace("<path:content_type_id>", str(content_type))
    url = re.sub(r"<(?:path:)?(?:object_id|id)>", str(object_id), url)
    url = url.replace("<str:session_id>", SID)
    assert "<" not in url and "(" not in url, f"no sample value for {route}"
    return "/" + url


def answer(response: Any) -> int | str:
    if response.status_code == 302:
        return "→" + response["Location"].split("?")[0]
    return int(response.status_code)


def as_expected(expected: int | str, got: int | str) -> bool:
    if expected == TO_CHANGE:
        return isinstance(got, str) and got.startswith("→/admin/") and got.endswith("/change/")
    return expected == got


def test_every_route_has_an_expectation() -> None:
    keys = {key for key, _route in walk(get_resolver().url_patterns)}
    missing = sorted(keys - set(DJANGO_ROUTES))
    assert not missing, f"routes with no row in the table (add one): {missing}"
    stale = sorted(set(DJANGO_ROUTES) - keys)
    assert not stale, f"rows for routes that no longer exist: {stale}"
    channels_routes = {str(p.pattern) for p in [*http_urlpatterns, *websocket_urlpatterns]}
    assert channels_routes == set(CHANNELS_ROUTES), "Channels routes and their table differ"


# transaction=True: async views read through database_sync_to_async, which closes a
# connection inside a test transaction on PostgreSQL.
@pytest.mark.django_db(transaction=True)
def test_every_django_route_answers_each_role_as_expected(world: dict[str, Any]) -> None:
    wrong = []
    for key, route in walk(get_resolver().url_patterns):
        url = concrete(route, world["objects"])
        for role, expected in zip(ROLES, DJANGO_ROUTES[key], strict=True):
            client = Client()
            user = world["users"][role]
            if user is not None:
                client.force_login(user)
            got = answer(client.get(url))
            if not as_expected(expected, got):
                wrong.append(f"{role:9} GET {url}: expected {expected}, got {got}")
    assert not wrong, "\n".join(wrong)


# --- Channels routes ---------------------------------------------------------------------------

OPEN, FORBIDDEN, REFUSED = "open", "4403", "refused"
CHANNELS_ROUTES: dict[str, tuple[str, ...]] = {
    # Our stream: 401 without credentials; a finished session's history then `close`.
    "v1/meeting-buddy/sessions/<str:session_id>/stream": ("401", "200", "200", "200"),
    "ws/sessions/": (FORBIDDEN, OPEN, OPEN, OPEN),
    "ws/sessions/<str:session_id>/": (FORBIDDEN, OPEN, OPEN, OPEN),
    # The widget socket needs a widget token, not a login.
    "ws/embed/sessions/<str:session_id>/": (REFUSED, REFUSED, REFUSED, REFUSED),
}


@pytest.mark.django_db(transaction=True)
async def test_every_channels_route_answers_each_role_as_expected(
    fresh_channel_layer: Any,
) -> None:
    from meetingdash.asgi import build_application

    world_data = await database_sync_to_async(_world_for_async)()
    app = build_application()
    wrong = []
    for route, expectations in CHANNELS_ROUTES.items():
        path = "/" + route.replace("<str:session_id>", SID)
        for role, expected in zip(ROLES, expectations, strict=True):
            user = world_data[role]
            cookie = None if user is None else await database_sync_to_async(login_cookie)(user)
            if route.startswith("v1/"):
                got = await _stream_answer(app, path, cookie)
            else:
                got = await _socket_answer(app, path, cookie)
            if got != expected:
                wrong.append(f"{role:9} {path}: expected {expected}, got {got}")
    assert not wrong, "\n".join(wrong)


def _world_for_async() -> dict[str, Any]:
    now = timezone.now()
    session = MeetingSession.objects.create(
        session_id=SID, status="completed", started_at=now, ended_at=now, last_seq=1
    )
    SessionEvent.objects.create(session=session, seq=1, kind="close", note="session_ended")
    return {
        "anonymous": None,
        "user": User.objects.create_user("plain-async"),
        "staff": User.objects.create_user("staff-async", is_staff=True),
        "superuser": User.objects.create_superuser("root-async", password="pw-root-12345"),
    }


async def _stream_answer(app: Any, path: str, cookie: bytes | None) -> str:
    headers = {"cookie": cookie.decode()} if cookie else {}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        response = await client.get(path, headers=headers)
    if response.status_code == 200:
        assert "event: close" in response.text
    return str(response.status_code)


async def _socket_answer(app: Any, path: str, cookie: bytes | None) -> str:
    headers = [(b"host", b"127.0.0.1"), (b"origin", b"http://127.0.0.1")]
    if cookie:
        headers.append((b"cookie", cookie))
    communicator = WebsocketCommunicator(app, path, headers=headers)
    connected, _ = await communicator.connect()
    if not connected:
        return REFUSED
    # The page's hello; an open socket answers it with a frame, a refused one was closed.
    hello = '{"after": 0}' if path != "/ws/sessions/" else '{"filter": "all"}'
    try:
        await communicator.send_to(text_data=hello)
        output = await communicator.receive_output(timeout=5)
    finally:
        await communicator.disconnect()
    return str(output.get("code")) if output["type"] == "websocket.close" else OPEN
