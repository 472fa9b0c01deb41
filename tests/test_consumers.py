from __future__ import annotations

import asyncio
import contextlib
import json
import re
from typing import Any

import pytest
from channels.auth import AuthMiddlewareStack
from channels.db import database_sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.utils import timezone

from sessions_monitor import consumers
from sessions_monitor.hub import Subscription, get_hub
from sessions_monitor.messages import SESSIONS_GROUP, HubMessage, session_group
from sessions_monitor.models import MeetingSession, SessionEvent
from sessions_monitor.routing import websocket_urlpatterns
from sessions_monitor.selectors import event_to_dict, session_summary
from tests.support import eventually, login_cookie, make_session

pytestmark = [pytest.mark.django_db(transaction=True)]

ROW = re.compile(r'<li id="event-(\d+)"')


@pytest.fixture
def user(db: Any) -> User:
    return User.objects.create_user("viewer", password="pw-viewer-123")


def app() -> Any:
    return AuthMiddlewareStack(URLRouter(websocket_urlpatterns))


OPEN: list[WebsocketCommunicator] = []


@pytest.fixture(autouse=True)
async def close_sockets() -> Any:
    """Disconnect whatever a test left open, so a failing test fails instead of hanging."""
    yield
    while OPEN:
        communicator = OPEN.pop()
        with contextlib.suppress(Exception):
            await communicator.disconnect(timeout=2)


async def open_socket(path: str, user: User | None) -> WebsocketCommunicator:
    """A socket through AuthMiddlewareStack, with `user`'s real session cookie."""
    headers = (
        [] if user is None else [(b"cookie", await database_sync_to_async(login_cookie)(user))]
    )
    communicator = WebsocketCommunicator(app(), path, headers=headers)
    OPEN.append(communicator)
    return communicator


async def connect(path: str, user: User | None) -> WebsocketCommunicator:
    communicator = await open_socket(path, user)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def assert_closed_with(communicator: WebsocketCommunicator, code: int) -> None:
    output = await communicator.receive_output(timeout=5)
    assert output == {"type": "websocket.close", "code": code}


async def receive_until(communicator: WebsocketCommunicator, text: str) -> str:
    """Frames until one contains `text` (the list also sends badge-only frames)."""
    while True:
        frame = await communicator.receive_from(timeout=5)
        if text in frame:
            return frame


def store(session_id: str, seq: int, kind: str = "status", **fields: Any) -> dict[str, Any]:
    session = MeetingSession.objects.get(pk=session_id)
    event = SessionEvent.objects.create(
        session=session,
        seq=seq,
        kind=kind,
        upstream_timestamp=timezone.now(),
        raw=json.dumps({"seq": seq}),
        **fields,
    )
    session.last_seq = seq
    session.save(update_fields=["last_seq"])
    return {**event_to_dict(event), "raw": event.raw}


async def broadcast(layer: Any, session_id: str, data: dict[str, Any]) -> None:
    await layer.group_send(
        session_group(session_id),
        {"type": "session.event", "session_id": session_id, "seq": data["seq"], "event": data},
    )


async def frames_until(communicator: WebsocketCommunicator, last_seq: int) -> list[str]:
    """Frames (keepalives skipped) until one carries the row of `last_seq`."""
    frames: list[str] = []
    while True:
        frame = await communicator.receive_from(timeout=5)
        if frame == consumers.KEEPALIVE:
            continue
        frames.append(frame)
        if f'id="event-{last_seq}"' in frame:
            return frames


def rows(frames: list[str]) -> list[int]:
    return [int(seq) for frame in frames for seq in ROW.findall(frame)]


async def caught_up(session_id: str, user: User) -> WebsocketCommunicator:
    """A detail page whose hello (`after` 0) has been answered with the stored event 1: what
    is stored or broadcast from now on can only reach it live."""
    communicator = await connect(f"/ws/sessions/{session_id}/", user)
    await communicator.send_to(text_data=json.dumps({"after": 0}))
    assert rows(await frames_until(communicator, 1)) == [1]
    return communicator


async def frames_through(communicator: WebsocketCommunicator, text: str) -> list[str]:
    """Every frame up to and including the first that contains `text`: what a later message
    proves did (not) come before it."""
    frames = [await communicator.receive_from(timeout=5)]
    while text not in frames[-1]:
        frames.append(await communicator.receive_from(timeout=5))
    return frames


# --- auth ------------------------------------------------------------------------------------


async def test_anonymous_live_connections_are_closed_as_forbidden(
    fresh_channel_layer: Any,
) -> None:
    """Accepted, then closed with 4403 at once: the page learns it is signed out (a refused
    handshake would look like a network error it retries for ever). Nothing is sent."""
    for path in ("/ws/sessions/", "/ws/sessions/mbsess_any/"):
        communicator = await connect(path, None)
        await assert_closed_with(communicator, consumers.CLOSE_FORBIDDEN)
    assert get_hub().stats()["subscribers"] == 0


async def test_inactive_users_are_closed_as_forbidden(fresh_channel_layer: Any, user: User) -> None:
    communicator = await open_socket("/ws/sessions/", user)
    user.is_active = False
    await database_sync_to_async(user.save)()
    connected, _ = await communicator.connect()
    assert connected
    await assert_closed_with(communicator, consumers.CLOSE_FORBIDDEN)


@pytest.mark.parametrize(
    "path", ["/ws/sessions/not-an-id/", "/ws/sessions/mbsess_" + "x" * 65 + "/"]
)
async def test_a_malformed_session_id_closes_with_4400(
    fresh_channel_layer: Any, user: User, path: str
) -> None:
    communicator = await connect(path, user)
    await assert_closed_with(communicator, consumers.CLOSE_BAD_REQUEST)
    assert get_hub().stats()["feeds"] == 0


# --- detail: resume ----------------------------------------------------------------------------


async def test_hello_replays_exactly_the_missed_events_then_live_ones(
    fresh_channel_layer: Any, user: User
) -> None:
    await database_sync_to_async(make_session)("mbsess_resume")
    for seq in range(1, 6):
        await database_sync_to_async(store)("mbsess_resume", seq, status="active")
    communicator = await connect("/ws/sessions/mbsess_resume/", user)

    await communicator.send_to(text_data=json.dumps({"after": 3}))
    replay = await frames_until(communicator, 5)
    assert rows(replay) == [4, 5]
    assert 'id="live-after" name="after" value="5"' in replay[-1]

    six = await database_sync_to_async(store)(
        "mbsess_resume", 6, kind="joined", participant_name="Ann"
    )
    five_again = await database_sync_to_async(
        lambda: event_to_dict(SessionEvent.objects.get(seq=5))
    )()
    await broadcast(fresh_channel_layer, "mbsess_resume", five_again)  # already sent: dropped
    await broadcast(fresh_channel_layer, "mbsess_resume", six)
    live = await frames_until(communicator, 6)
    assert rows(live) == [6]
    assert 'value="6"' in live[-1] and "Ann joined" in live[-1]
    await communicator.disconnect()


async def test_events_broadcast_before_the_hello_are_not_shown_twice(
    fresh_channel_layer: Any, user: User
) -> None:
    """The seam: subscribed first, history read later, live copies of replayed rows dropped."""
    await database_sync_to_async(make_session)("mbsess_seam")
    await database_sync_to_async(store)("mbsess_seam", 1)
    communicator = await connect("/ws/sessions/mbsess_seam/", user)
    for seq in (2, 3, 4):
        data = await database_sync_to_async(store)("mbsess_seam", seq)
        await broadcast(fresh_channel_layer, "mbsess_seam", data)
    await communicator.send_to(text_data=json.dumps({"after": 1}))
    frames = await frames_until(communicator, 4)
    data = await database_sync_to_async(store)("mbsess_seam", 5)
    await broadcast(fresh_channel_layer, "mbsess_seam", data)
    frames += await frames_until(communicator, 5)
    assert rows(frames) == [2, 3, 4, 5]
    await communicator.disconnect()


async def test_a_hole_in_live_events_is_filled_from_history(
    fresh_channel_layer: Any, user: User
) -> None:
    await database_sync_to_async(make_session)("mbsess_hole")
    await database_sync_to_async(store)("mbsess_hole", 1)
    communicator = await caught_up("mbsess_hole", user)
    await database_sync_to_async(store)("mbsess_hole", 2)  # stored, its broadcast lost
    three = await database_sync_to_async(store)("mbsess_hole", 3)
    await broadcast(fresh_channel_layer, "mbsess_hole", three)
    assert rows(await frames_until(communicator, 3)) == [2, 3]
    await communicator.disconnect()


async def test_past_the_replay_bound_the_page_is_re_rendered_and_told(
    fresh_channel_layer: Any, user: User, monkeypatch: Any
) -> None:
    monkeypatch.setattr(consumers, "REPLAY_LIMIT", 3)
    await database_sync_to_async(make_session)("mbsess_far")
    for seq in range(1, 9):
        await database_sync_to_async(store)("mbsess_far", seq)
    communicator = await connect("/ws/sessions/mbsess_far/", user)
    await communicator.send_to(text_data=json.dumps({"after": 1}))
    frame = (await frames_until(communicator, 8))[-1]
    assert '<ol id="event-log" class="event-log live-data" hx-swap-oob="true">' in frame
    assert rows([frame]) == list(range(1, 9))  # the whole log, replaced: no dup, no gap
    assert "reloaded from stored history" in frame
    assert 'value="8"' in frame
    await communicator.disconnect()


async def test_a_page_claiming_more_than_we_hold_is_reloaded(
    fresh_channel_layer: Any, user: User
) -> None:
    await database_sync_to_async(make_session)("mbsess_ahead")
    await database_sync_to_async(store)("mbsess_ahead", 1)
    communicator = await connect("/ws/sessions/mbsess_ahead/", user)
    await communicator.send_to(text_data=json.dumps({"after": 40}))
    frame = (await frames_until(communicator, 1))[-1]
    assert "reloaded from stored history" in frame and 'value="1"' in frame
    await communicator.disconnect()


async def test_hub_resync_re_renders_the_regions(fresh_channel_layer: Any, user: User) -> None:
    await database_sync_to_async(make_session)("mbsess_rs")
    await database_sync_to_async(store)("mbsess_rs", 1)
    communicator = await caught_up("mbsess_rs", user)
    subscription = next(s for s in get_hub()._feeds["mbsess_rs"].subscribers)
    subscription._deliver(HubMessage("resync", "mbsess_rs", {"reason": "test"}))
    frame = (await frames_until(communicator, 1))[-1]
    assert "reloaded from stored history" in frame
    await communicator.disconnect()


@pytest.mark.parametrize("hello", [" ", "not json", '{"after": -1}', '{"after": "x"}', "[1]"])
async def test_a_malformed_hello_closes_the_socket(
    fresh_channel_layer: Any, user: User, hello: str
) -> None:
    communicator = await connect("/ws/sessions/mbsess_bad/", user)
    await communicator.send_to(text_data=hello)
    await assert_closed_with(communicator, consumers.CLOSE_BAD_REQUEST)


# --- detail: coalescing and render-once ---------------------------------------------------------


async def test_next_batch_drains_everything_queued_into_one_batch(fresh_channel_layer: Any) -> None:
    hub = get_hub()
    subscription: Subscription = await hub.subscribe("mbsess_batch")
    for seq in range(1, 51):
        subscription._deliver(HubMessage("event", "mbsess_batch", {"seq": seq}, seq=seq))
    batch = await consumers.next_batch(subscription, 1)
    assert batch is not None and [m.seq for m in batch] == list(range(1, 51))
    assert await consumers.next_batch(subscription, 0.05) is None
    subscription.close()


async def test_a_burst_arrives_in_one_frame_with_every_row_once(
    fresh_channel_layer: Any, user: User
) -> None:
    await database_sync_to_async(make_session)("mbsess_burst")
    await database_sync_to_async(store)("mbsess_burst", 1)
    communicator = await caught_up("mbsess_burst", user)
    burst = [await database_sync_to_async(store)("mbsess_burst", seq) for seq in range(2, 202)]
    # Delivered the way the hub does, all before the consumer runs again: one frame.
    (subscription,) = get_hub()._feeds["mbsess_burst"].subscribers
    for data in burst:
        subscription._deliver(HubMessage("event", "mbsess_burst", data, seq=data["seq"]))
    frames = await frames_until(communicator, 201)
    assert len(frames) == 1
    assert rows(frames) == list(range(2, 202))
    assert frames[0].count('id="live-after"') == 1 and 'value="201"' in frames[0]
    await communicator.disconnect()


async def test_a_burst_through_the_channel_layer_is_coalesced(
    fresh_channel_layer: Any, user: User
) -> None:
    await database_sync_to_async(make_session)("mbsess_burst2")
    await database_sync_to_async(store)("mbsess_burst2", 1)
    communicator = await caught_up("mbsess_burst2", user)
    burst = [await database_sync_to_async(store)("mbsess_burst2", seq) for seq in range(2, 202)]
    for data in burst:
        await broadcast(fresh_channel_layer, "mbsess_burst2", data)
    frames = await frames_until(communicator, 201)
    assert rows(frames) == list(range(2, 202))
    assert len(frames) <= 100, f"{len(frames)} frames for 200 events: not coalesced"
    await communicator.disconnect()


async def test_each_partial_is_rendered_once_per_process_for_all_viewers(
    fresh_channel_layer: Any, user: User, monkeypatch: Any
) -> None:
    await database_sync_to_async(make_session)("mbsess_once")
    await database_sync_to_async(store)("mbsess_once", 1)
    viewers = [await caught_up("mbsess_once", user) for _ in range(5)]
    calls: list[str] = []
    from django.template.loader import render_to_string as real

    def counting(name: str, context: Any = None) -> str:
        calls.append(name)
        return real(name, context)

    monkeypatch.setattr(consumers, "render_to_string", counting)
    data = await database_sync_to_async(store)(
        "mbsess_once", 2, kind="joined", participant_name="Bo"
    )
    await broadcast(fresh_channel_layer, "mbsess_once", data)
    received = [(await frames_until(viewer, 2))[-1] for viewer in viewers]
    assert len(set(received)) == 1  # the same bytes to everyone
    assert calls.count(f"{consumers.DETAIL}#live-rows") == 1
    assert calls.count(f"{consumers.DETAIL}#live-regions") == 1
    for viewer in viewers:
        await viewer.disconnect()


async def test_upstream_badge_follows_summaries(fresh_channel_layer: Any, user: User) -> None:
    session = await database_sync_to_async(make_session)("mbsess_badge")
    communicator = await connect("/ws/sessions/mbsess_badge/", user)
    session.stream_state = "retrying"
    session.stream_state_since = timezone.now()
    summary = session_summary(session)
    other = {**summary, "session_id": "mbsess_other", "stream_state": "failed"}
    await fresh_channel_layer.group_send(SESSIONS_GROUP, {"type": "sessions.summary", **other})
    await fresh_channel_layer.group_send(SESSIONS_GROUP, {"type": "sessions.summary", **summary})
    frame = await communicator.receive_from(timeout=5)
    assert 'id="upstream-link"' in frame and 'data-state="retrying"' in frame
    assert "data-stale" in frame and "stale since" in frame
    await communicator.disconnect()


# --- list ------------------------------------------------------------------------------------


async def test_list_hello_renders_the_list_and_summaries_move_rows(
    fresh_channel_layer: Any, user: User
) -> None:
    old = await database_sync_to_async(make_session)("mbsess_l_old")
    communicator = await connect("/ws/sessions/", user)
    await communicator.send_to(text_data=json.dumps({"filter": "live", "q": "", "page": "1"}))
    first = await communicator.receive_from(timeout=5)
    assert '<section id="list-region"' in first and 'hx-swap-oob="true"' in first
    assert 'id="session-mbsess_l_old"' in first and 'id="upstream-link"' in first

    new = await database_sync_to_async(make_session)("mbsess_l_new")
    await fresh_channel_layer.group_send(
        SESSIONS_GROUP, {"type": "sessions.summary", **session_summary(new)}
    )
    frame = await receive_until(communicator, "mbsess_l_new")
    assert (
        '<div hx-swap-oob="afterbegin:#session-rows"><article id="session-mbsess_l_new"'
        in frame.replace("\n", "")
    )

    old.status = "completed"
    await fresh_channel_layer.group_send(
        SESSIONS_GROUP, {"type": "sessions.summary", **session_summary(old)}
    )
    frame = await receive_until(communicator, "mbsess_l_old")
    assert '<article id="session-mbsess_l_old" hx-swap-oob="delete"></article>' in frame

    # Activity on a shown session updates it in place: rows keep their order.
    await fresh_channel_layer.group_send(
        SESSIONS_GROUP, {"type": "sessions.summary", **session_summary(new)}
    )
    frame = await receive_until(communicator, "mbsess_l_new")
    assert '<article id="session-mbsess_l_new" class="session-row" role="listitem"' in frame
    assert "afterbegin:#session-rows" not in frame and 'hx-swap-oob="delete"' not in frame
    await communicator.disconnect()


async def test_a_session_failing_on_live_moves_to_recently_ended_with_its_code(
    fresh_channel_layer: Any, user: User
) -> None:
    failing = await database_sync_to_async(make_session)("mbsess_l_fail", bot_name="Standup")
    communicator = await connect("/ws/sessions/", user)
    await communicator.send_to(text_data=json.dumps({"filter": "live", "q": "", "page": "1"}))
    first = await receive_until(communicator, 'id="recent-ended"')
    assert 'id="session-mbsess_l_fail"' in first

    failing.status, failing.error_code = "failed", "JOIN_TIMEOUT"
    failing.ended_at = timezone.now()
    await database_sync_to_async(failing.save)()
    await fresh_channel_layer.group_send(
        SESSIONS_GROUP, {"type": "sessions.summary", **session_summary(failing)}
    )
    frame = await receive_until(communicator, "recent-mbsess_l_fail")
    assert '<article id="session-mbsess_l_fail" hx-swap-oob="delete"></article>' in frame
    assert 'hx-swap-oob="afterbegin:#recent-rows"' in frame and "JOIN_TIMEOUT" in frame
    assert "could not get into the meeting in time" in frame  # the code's meaning
    assert "Standup failed (JOIN_TIMEOUT): moved to Recently ended." in frame
    assert 'id="filter-chips"' in frame  # counts follow
    await communicator.disconnect()


async def test_list_on_a_later_page_updates_in_place_only(
    fresh_channel_layer: Any, user: User
) -> None:
    for n in range(30):
        await database_sync_to_async(make_session)(f"mbsess_pg{n:02d}")
    communicator = await connect("/ws/sessions/", user)
    await communicator.send_to(text_data=json.dumps({"filter": "all", "q": "", "page": "2"}))
    first = await communicator.receive_from(timeout=5)
    shown = re.findall(r'<article id="session-(mbsess_pg\d+)"', first)
    assert len(shown) == 5
    unseen = "mbsess_brand_new"
    session = await database_sync_to_async(make_session)(unseen)
    await fresh_channel_layer.group_send(
        SESSIONS_GROUP, {"type": "sessions.summary", **session_summary(session)}
    )
    mine = await database_sync_to_async(MeetingSession.objects.get)(pk=shown[0])
    await fresh_channel_layer.group_send(
        SESSIONS_GROUP, {"type": "sessions.summary", **session_summary(mine)}
    )
    frames = await frames_through(communicator, shown[0])
    assert not any(unseen in frame for frame in frames)
    assert (
        f'<article id="session-{shown[0]}" class="session-row" role="listitem" hx-swap-oob="true">'
        in frames[-1]
    )
    await communicator.disconnect()


async def test_list_search_only_inserts_matching_sessions(
    fresh_channel_layer: Any, user: User
) -> None:
    communicator = await connect("/ws/sessions/", user)
    await communicator.send_to(text_data=json.dumps({"filter": "all", "q": "sales", "page": "1"}))
    await communicator.receive_from(timeout=5)
    other = await database_sync_to_async(make_session)("mbsess_other", bot_name="Standup")
    match = await database_sync_to_async(make_session)("mbsess_match", bot_name="Sales bot")
    for session in (other, match):
        await fresh_channel_layer.group_send(
            SESSIONS_GROUP, {"type": "sessions.summary", **session_summary(session)}
        )
    frames = await frames_through(communicator, "session-mbsess_match")
    assert not any("mbsess_other" in frame for frame in frames)
    await communicator.disconnect()


async def test_quiet_channels_send_keepalives(
    fresh_channel_layer: Any, user: User, monkeypatch: Any
) -> None:
    monkeypatch.setattr(consumers, "KEEPALIVE_SECONDS", 0.2)
    communicator = await connect("/ws/sessions/mbsess_quiet/", user)
    await communicator.send_to(text_data=json.dumps({"after": 0}))
    assert await communicator.receive_from(timeout=5) == consumers.KEEPALIVE
    await communicator.disconnect()
    await eventually(
        lambda: get_hub().subscriber_count("mbsess_quiet") == 0, what="the page to unsubscribe"
    )


async def test_single_flight_shares_a_read_only_with_later_subscribers() -> None:
    calls = 0
    gate = asyncio.Event()

    async def read() -> int:
        nonlocal calls
        calls += 1
        mine = calls
        await gate.wait()
        return mine

    loop = asyncio.get_running_loop()
    early = loop.time()
    first = asyncio.ensure_future(consumers.single_flight(("k",), read, not_before=early))
    second = asyncio.ensure_future(consumers.single_flight(("k",), read, not_before=early))
    await eventually(lambda: calls == 1, what="the first read to begin")
    late = loop.time() + 1  # subscribed after the first read began: must not share it
    third = asyncio.ensure_future(consumers.single_flight(("k",), read, not_before=late))
    await eventually(lambda: calls == 2, what="the late subscriber's own read to begin")
    gate.set()
    assert await asyncio.gather(first, second, third) == [1, 1, 2]
    assert calls == 2 and not consumers._in_flight


async def test_a_viewer_that_leaves_mid_wait_cancels_only_its_own_wait() -> None:
    loop = asyncio.get_running_loop()
    shared: asyncio.Future[str] = loop.create_future()
    waiters = [asyncio.ensure_future(consumers.await_shared(shared)) for _ in range(3)]
    await eventually(lambda: len(consumers._waiting.get(shared, ())) == 3, what="3 waiters")
    waiters[0].cancel()
    await asyncio.gather(waiters[0], return_exceptions=True)
    assert not shared.cancelled()
    shared.set_result("frame")
    assert await asyncio.gather(*waiters[1:]) == ["frame", "frame"]
    assert waiters[0].cancelled() and shared not in consumers._waiting

    failed: asyncio.Future[str] = loop.create_future()
    waiting = asyncio.ensure_future(consumers.await_shared(failed))
    await eventually(lambda: failed in consumers._waiting, what="a waiter")
    failed.set_exception(RuntimeError("read failed"))
    with pytest.raises(RuntimeError, match="read failed"):
        await waiting


async def test_live_frames_re_send_only_the_regions_an_event_can_change(
    fresh_channel_layer: Any, user: User
) -> None:
    await database_sync_to_async(make_session)("mbsess_parts")
    await database_sync_to_async(store)("mbsess_parts", 1)
    communicator = await caught_up("mbsess_parts", user)
    note = await database_sync_to_async(store)("mbsess_parts", 2, kind="anomaly", note="odd")
    await broadcast(fresh_channel_layer, "mbsess_parts", note)
    frame = (await frames_until(communicator, 2))[-1]
    assert 'id="live-after"' in frame and 'value="2"' in frame
    assert 'id="session-header"' not in frame and 'id="svg-timeline"' not in frame

    joined = await database_sync_to_async(store)(
        "mbsess_parts", 3, kind="joined", participant_name="Al"
    )
    await broadcast(fresh_channel_layer, "mbsess_parts", joined)
    frame = (await frames_until(communicator, 3))[-1]
    assert 'id="participants"' in frame and 'id="session-header"' in frame
    assert 'id="transitions"' not in frame and 'id="failure-panel"' not in frame
    await communicator.disconnect()
