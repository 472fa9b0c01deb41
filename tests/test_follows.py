"""Following a session or a bot name (issue 14): the services, the buttons' views, the
Following page, the stuck badge, and the toasts the live pages get for what their user
follows (through the real hub and page consumers on the in-memory channel layer)."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.test import Client
from django.utils import timezone

from sessions_monitor import follows, messages, presentation
from sessions_monitor.hub import ALERTS_FEED, get_hub
from sessions_monitor.models import Follow
from sessions_monitor.routing import websocket_urlpatterns
from sessions_monitor.selectors import session_summary
from tests.support import login_cookie, make_session

pytestmark = pytest.mark.django_db(transaction=True)


def sid() -> str:
    return f"mbsess_fol{uuid.uuid4().hex[:10]}"


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice", password="pw-alice-123")


@pytest.fixture
def bob() -> User:
    return User.objects.create_user("bob", password="pw-bob-123")


def client_for(user: User, **options: Any) -> Client:
    client = Client(**options)
    client.force_login(user)
    return client


# --- services ----------------------------------------------------------------------------


def test_it_follows_and_unfollows_a_session_idempotently(alice: User) -> None:
    session = make_session(sid())
    assert follows.set_session_follow(user_id=alice.pk, session_id=session.pk, follow=True)
    assert follows.set_session_follow(user_id=alice.pk, session_id=session.pk, follow=True)
    assert Follow.objects.filter(user=alice, session=session).count() == 1
    assert not follows.set_session_follow(user_id=alice.pk, session_id=session.pk, follow=False)
    assert not follows.set_session_follow(user_id=alice.pk, session_id=session.pk, follow=False)
    assert not Follow.objects.filter(user=alice).exists()


def test_toggling_flips_the_follow(alice: User) -> None:
    session = make_session(sid())
    assert follows.toggle_session_follow(user_id=alice.pk, session_id=session.pk) is True
    assert follows.toggle_session_follow(user_id=alice.pk, session_id=session.pk) is False
    assert follows.toggle_bot_follow(user_id=alice.pk, bot_name="Scribe") is True
    assert follows.toggle_bot_follow(user_id=alice.pk, bot_name="SCRIBE") is False
    assert not Follow.objects.filter(user=alice).exists()


def test_the_database_refuses_a_second_follow_of_the_same_thing(alice: User) -> None:
    session = make_session(sid())
    Follow.objects.create(user=alice, session=session)
    with pytest.raises(IntegrityError), transaction.atomic():
        Follow.objects.create(user=alice, session=session)
    Follow.objects.create(user=alice, bot_name="Scribe")
    with pytest.raises(IntegrityError), transaction.atomic():
        Follow.objects.create(user=alice, bot_name="Scribe")


def test_a_bot_name_is_one_bot_whatever_its_case(alice: User, bob: User) -> None:
    assert follows.set_bot_follow(user_id=alice.pk, bot_name="  Notetaker ", follow=True)
    assert follows.set_bot_follow(user_id=alice.pk, bot_name="NOTETAKER", follow=True)
    assert list(Follow.objects.filter(user=alice).values_list("bot_name", flat=True)) == [
        "Notetaker"  # the first spelling, trimmed
    ]
    session = make_session(sid(), bot_name="notetaker")
    other = make_session(sid(), bot_name="Notetaker Pro")
    assert follows.followers_of(session.pk, session.bot_name) == {alice.pk}
    assert follows.followers_of(other.pk, other.bot_name) == set()
    assert follows.is_followed_by(alice.pk, session_id=session.pk, bot_name="nOtEtAkEr")
    assert not follows.is_followed_by(bob.pk, session_id=session.pk, bot_name="notetaker")
    follows.set_bot_follow(user_id=alice.pk, bot_name="notetaker", follow=False)
    assert follows.followers_of(session.pk, session.bot_name) == set()


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_a_bot_name_must_be_one_to_200_characters(alice: User, name: str) -> None:
    with pytest.raises(follows.BadBotName):
        follows.set_bot_follow(user_id=alice.pk, bot_name=name, follow=True)


def test_followers_are_those_of_the_session_and_of_its_bot(alice: User, bob: User) -> None:
    carol = User.objects.create_user("carol")
    session = make_session(sid(), bot_name="Scribe")
    follows.set_session_follow(user_id=alice.pk, session_id=session.pk, follow=True)
    follows.set_bot_follow(user_id=bob.pk, bot_name="scribe", follow=True)
    follows.set_bot_follow(user_id=carol.pk, bot_name="Another bot", follow=True)
    assert follows.followers_of(session.pk, "Scribe") == {alice.pk, bob.pk}
    # A session without a bot name is followed by its own followers only.
    assert follows.followers_of(session.pk, "") == {alice.pk}
    state = follows.follow_state(user_id=bob.pk, session_id=session.pk, bot_name="Scribe")
    assert (state.session_followed, state.bot_followed) == (False, True)


def test_following_lists_sessions_and_bots_newest_first(alice: User, bob: User) -> None:
    old, new = make_session(sid(), bot_name="Old"), make_session(sid(), status="failed")
    follows.set_session_follow(user_id=alice.pk, session_id=old.pk, follow=True)
    follows.set_session_follow(user_id=alice.pk, session_id=new.pk, follow=True)
    follows.set_bot_follow(user_id=alice.pk, bot_name="Scribe", follow=True)
    follows.set_session_follow(user_id=bob.pk, session_id=old.pk, follow=True)
    listed = follows.following(alice.pk)
    assert [s.session_id for s in listed.sessions] == [new.pk, old.pk]
    assert listed.sessions[0].status_label == "Failed"
    assert [b.bot_name for b in listed.bots] == ["Scribe"]


# --- views -------------------------------------------------------------------------------


def test_the_session_page_shows_follow_buttons_in_their_state(alice: User) -> None:
    session = make_session(sid(), bot_name="Weekly <sync>")
    client = client_for(alice)
    page = client.get(f"/sessions/{session.pk}/").content.decode()
    assert 'aria-pressed="false"' in page
    assert "Follow every session of Weekly &lt;sync&gt;" in page
    follows.set_session_follow(user_id=alice.pk, session_id=session.pk, follow=True)
    page = client.get(f"/sessions/{session.pk}/").content.decode()
    assert 'aria-pressed="true" data-follow-button>Following <span aria-hidden="true">✓' in page


def test_the_follow_button_with_htmx_answers_the_button_in_its_new_state(alice: User) -> None:
    session = make_session(sid())
    client = client_for(alice)
    url = f"/sessions/{session.pk}/follow"
    answer = client.post(url, {"follow": "1"}, headers={"HX-Request": "true"})
    assert answer.status_code == 200
    body = answer.content.decode()
    assert body.lstrip().startswith("<form") and 'aria-pressed="true"' in body
    assert '<input type="hidden" name="follow" value="0">' in body  # the next click unfollows
    assert Follow.objects.filter(user=alice, session_id=session.pk).exists()
    # The same click twice (a double click, a resent form) changes nothing.
    client.post(url, {"follow": "1"}, headers={"HX-Request": "true"})
    assert Follow.objects.filter(user=alice, session_id=session.pk).count() == 1
    body = client.post(url, {"follow": "0"}, headers={"HX-Request": "true"}).content.decode()
    assert 'aria-pressed="false"' in body
    assert not Follow.objects.filter(user=alice).exists()


def test_without_javascript_a_follow_redirects_back(alice: User) -> None:
    session = make_session(sid())
    client = client_for(alice)
    back = f"/sessions/{session.pk}/"
    answer = client.post(f"/sessions/{session.pk}/follow", {"next": back})
    assert (answer.status_code, answer["Location"]) == (302, back)
    assert Follow.objects.filter(user=alice, session_id=session.pk).exists()  # toggled on
    answer = client.post(f"/sessions/{session.pk}/follow", {"next": "https://evil.example/"})
    assert (answer.status_code, answer["Location"]) == (302, back)  # not elsewhere
    assert not Follow.objects.filter(user=alice).exists()  # toggled off


def test_following_a_bot_by_post(alice: User) -> None:
    client = client_for(alice)
    answer = client.post("/follows/bot", {"bot_name": "Scribe", "follow": "1"})
    assert (answer.status_code, answer["Location"]) == (302, "/follows/")
    answer = client.post(
        "/follows/bot", {"bot_name": "scribe", "follow": "1"}, headers={"HX-Request": "true"}
    )
    assert "Following every session of scribe" in answer.content.decode()
    assert Follow.objects.filter(user=alice).count() == 1
    assert client.post("/follows/bot", {"bot_name": " "}).status_code == 400
    assert client.post("/follows/bot", {"bot_name": "x" * 201}).status_code == 400


def test_the_following_page_lists_what_the_user_follows_with_unfollow_buttons(
    alice: User, bob: User
) -> None:
    session = make_session(sid(), bot_name="Board bot")
    hidden = make_session(sid(), bot_name="Bob's bot")
    follows.set_session_follow(user_id=alice.pk, session_id=session.pk, follow=True)
    follows.set_bot_follow(user_id=alice.pk, bot_name="Scribe", follow=True)
    follows.set_session_follow(user_id=bob.pk, session_id=hidden.pk, follow=True)
    page = client_for(alice).get("/follows/").content.decode()
    assert f'href="/sessions/{session.pk}/"' in page and hidden.pk not in page
    assert "Every session of <strong>Scribe</strong>" in page
    assert page.count('aria-pressed="true"') == 2
    assert page.count('name="follow" value="0"') == 2


def test_unknown_sessions_and_bad_ids_are_404(alice: User) -> None:
    client = client_for(alice)
    assert client.post(f"/sessions/{sid()}/follow").status_code == 404
    assert client.post("/sessions/not-a-session/follow").status_code == 404


def test_anonymous_users_are_sent_to_log_in(alice: User) -> None:
    session = make_session(sid())
    client = Client()
    for answer in (
        client.post(f"/sessions/{session.pk}/follow"),
        client.post("/follows/bot", {"bot_name": "Scribe"}),
        client.get("/follows/"),
    ):
        assert answer.status_code == 302 and answer["Location"].startswith("/accounts/login/")
    assert not Follow.objects.exists()


def test_a_post_without_the_csrf_token_is_refused(alice: User) -> None:
    session = make_session(sid())
    client = client_for(alice, enforce_csrf_checks=True)
    assert client.post(f"/sessions/{session.pk}/follow", {"follow": "1"}).status_code == 403
    assert client.post("/follows/bot", {"bot_name": "Scribe"}).status_code == 403
    assert not Follow.objects.exists()
    # With the token (what the page's form and hx-headers send) it goes through.
    page = client.get(f"/sessions/{session.pk}/")
    token = page.context["csrf_token"]
    answer = client.post(
        f"/sessions/{session.pk}/follow",
        {"follow": "1"},
        headers={"X-CSRFToken": str(token), "HX-Request": "true"},
    )
    assert answer.status_code == 200
    assert Follow.objects.filter(user=alice).exists()


def test_only_get_shows_the_following_page_and_only_post_follows(alice: User) -> None:
    session = make_session(sid())
    client = client_for(alice)
    assert client.get(f"/sessions/{session.pk}/follow").status_code == 405
    assert client.get("/follows/bot").status_code == 405
    assert client.post("/follows/").status_code == 405


# --- the stuck badge ----------------------------------------------------------------------


def test_a_stuck_session_shows_how_long_it_has_been_in_its_status(alice: User) -> None:
    since = timezone.now() - timedelta(minutes=7, seconds=5)
    session = make_session(sid(), status="waiting", status_since=since, stuck_since=since)
    view = presentation.session_view(session_summary(session))
    assert view.is_stuck and view.stuck_for.startswith("7 min 0")
    client = client_for(alice)
    detail = client.get(f"/sessions/{session.pk}/").content.decode()
    assert "Stuck in In waiting room for" in detail
    assert 'id="stuck-badge"' in detail
    assert "Stuck in In waiting room for" in client.get("/?filter=all").content.decode()
    ended = presentation.session_view({**session_summary(session), "status": "completed"})
    assert not ended.is_stuck and ended.stuck_for == ""


# --- toasts over the live channel --------------------------------------------------------


def test_a_toast_says_what_happened_and_links_to_the_session() -> None:
    session = make_session(sid(), bot_name="Board bot", status="failed", error_code="X")
    alert = messages.alert_message(
        kind="failed",
        session=session_summary(session),
        text="Board bot failed",
        at="2026-01-02T03:04:05Z",
    )
    toast = follows.toast_view(alert)
    assert toast.title == "Board bot failed" and toast.urgent and not toast.transient
    assert toast.url == f"/sessions/{session.pk}/"
    again = follows.toast_view(alert)
    assert toast.id == again.id and toast.id.startswith("alert-")
    resolved = follows.toast_view({**alert, "kind": "resolved"})
    assert resolved.transient and not resolved.urgent and resolved.id != toast.id


def test_alerts_parse_as_hub_messages_and_bad_ones_are_dropped() -> None:
    alert = dict(
        messages.alert_message(
            kind="stuck", session={"session_id": "mbsess_x"}, text="t", at="2026-01-02T03:04:05Z"
        )
    )
    parsed = messages.parse_hub_message(alert)
    assert parsed is not None and parsed.kind == "alert" and parsed.data["kind"] == "stuck"
    assert messages.parse_hub_message({**alert, "kind": "exploded"}) is None
    assert messages.parse_hub_message({**alert, "session_id": ""}) is None
    assert messages.parse_hub_message({**alert, "text": ["not", "text"]}) is None


OPEN: list[WebsocketCommunicator] = []


@pytest.fixture(autouse=True)
async def close_sockets() -> Any:
    yield
    while OPEN:
        communicator = OPEN.pop()
        with contextlib.suppress(Exception):
            await communicator.disconnect(timeout=2)


async def page_socket(path: str, user: User) -> WebsocketCommunicator:
    cookie = await database_sync_to_async(login_cookie)(user)
    app = AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
    communicator = WebsocketCommunicator(app, path, headers=[(b"cookie", cookie)])
    OPEN.append(communicator)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def next_toast(communicator: WebsocketCommunicator) -> str:
    """The next frame that carries a toast (list and badge frames skipped)."""
    while True:
        frame = await communicator.receive_from(timeout=5)
        if 'class="toast ' in frame:
            return frame


async def send_alert(layer: Any, session: Any, kind: str, text: str) -> None:
    summary = await database_sync_to_async(session_summary)(session)
    alert = messages.alert_message(
        kind=kind, session=summary, text=text, at=timezone.now().isoformat()
    )
    await layer.group_send(messages.ALERTS_GROUP, dict(alert))


async def test_live_pages_toast_alerts_of_what_their_user_follows_only(
    fresh_channel_layer: Any, alice: User, bob: User
) -> None:
    followed = await database_sync_to_async(make_session)(sid(), bot_name="Board bot")
    by_bot = await database_sync_to_async(make_session)(sid(), bot_name="NOTETAKER")
    await database_sync_to_async(follows.set_session_follow)(
        user_id=alice.pk, session_id=followed.pk, follow=True
    )
    await database_sync_to_async(follows.set_bot_follow)(
        user_id=alice.pk, bot_name="Notetaker", follow=True
    )
    await database_sync_to_async(follows.set_bot_follow)(
        user_id=bob.pk, bot_name="notetaker", follow=True
    )
    alice_detail = await page_socket(f"/ws/sessions/{followed.pk}/", alice)
    alice_list = await page_socket("/ws/sessions/", alice)
    bob_list = await page_socket("/ws/sessions/", bob)
    await bob_list.send_to(text_data=json.dumps({"filter": "all"}))

    await send_alert(fresh_channel_layer, followed, "failed", "Board bot failed: kicked")
    toast = await next_toast(alice_detail)
    assert 'hx-swap-oob="afterbegin:#toasts"' in toast
    assert 'role="alert"' in toast and "Board bot failed: kicked" in toast
    assert f'href="/sessions/{followed.pk}/"' in toast
    assert await next_toast(alice_list) == toast  # the same bytes on every page
    # A followed bot, in another case: both its followers get it, and it is the first toast
    # bob sees, so he never got the one about a session he does not follow.
    await send_alert(fresh_channel_layer, by_bot, "stuck", "NOTETAKER is stuck")
    bob_toast = await next_toast(bob_list)
    assert "NOTETAKER is stuck" in bob_toast and "Board bot" not in bob_toast
    assert "NOTETAKER is stuck" in await next_toast(alice_detail)
    assert "NOTETAKER is stuck" in await next_toast(alice_list)
    # An unfollow counts from the next alert on.
    await database_sync_to_async(follows.set_bot_follow)(
        user_id=bob.pk, bot_name="NoteTaker", follow=False
    )
    await send_alert(fresh_channel_layer, by_bot, "resolved", "NOTETAKER moved on")
    await send_alert(fresh_channel_layer, followed, "lost", "Board bot lost")
    assert "NOTETAKER moved on" in await next_toast(alice_list)
    assert "Board bot lost" in await next_toast(alice_list)
    await database_sync_to_async(follows.set_session_follow)(
        user_id=bob.pk, session_id=followed.pk, follow=True
    )
    await send_alert(fresh_channel_layer, followed, "failed", "Board bot failed again")
    # Toasts reach a page in order: this one being bob's next, he got neither of the two.
    bob_toast = await next_toast(bob_list)
    assert "Board bot failed again" in bob_toast and "moved on" not in bob_toast


async def test_the_detail_page_shows_the_stuck_badge_live_from_the_summary(
    fresh_channel_layer: Any, alice: User
) -> None:
    session = await database_sync_to_async(make_session)(sid(), status="joining")
    page = await page_socket(f"/ws/sessions/{session.pk}/", alice)
    session.stuck_since = session.status_since
    await database_sync_to_async(session.save)(update_fields=["stuck_since"])
    summary = await database_sync_to_async(session_summary)(session)
    await fresh_channel_layer.group_send(messages.SESSIONS_GROUP, messages.summary_message(summary))
    while True:
        frame = await page.receive_from(timeout=5)
        if 'id="stuck-badge"' in frame:
            break
    assert 'hx-swap-oob="true"' in frame and "Stuck in Joining for" in frame
    session.stuck_since = None
    summary = await database_sync_to_async(session_summary)(session)
    await fresh_channel_layer.group_send(messages.SESSIONS_GROUP, messages.summary_message(summary))
    while True:  # it moved on: the slot is emptied
        frame = await page.receive_from(timeout=5)
        if 'id="stuck-badge"' in frame:
            break
    assert "Stuck in" not in frame


async def test_every_page_of_a_process_shares_one_membership_of_the_alerts_group(
    fresh_channel_layer: Any,
) -> None:
    hub = get_hub()
    first = await hub.subscribe_alerts(kind="page-alerts")
    second = await hub.subscribe_alerts(kind="page-alerts")
    assert hub.subscriber_count(ALERTS_FEED) == 2
    assert hub.group_channel(ALERTS_FEED) is not None
    alert = messages.alert_message(
        kind="failed", session={"session_id": "mbsess_shared"}, text="t", at="2026-01-02T03:04:05Z"
    )
    await fresh_channel_layer.group_send(messages.ALERTS_GROUP, dict(alert))
    got = [await first.get(), await second.get()]
    assert got[0] is got[1] and got[0].kind == "alert"  # one message, shared: rendered once
    first.close()
    second.close()
    await hub.wait_released()
    assert hub.subscriber_count(ALERTS_FEED) == 0 and hub.group_channel(ALERTS_FEED) is None
