"""The one look-up-and-store service, its one upstream client per process, and the relay
handed explicitly to what reports on it (/healthz, /metrics)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from channels.db import database_sync_to_async
from django.contrib.auth.models import User

from meetingdash.asgi import build_application
from sessions_monitor import lookups
from sessions_monitor.models import MeetingSession
from sessions_monitor.process import relay_of
from sessions_monitor.relay.worker import Relay
from sessions_monitor.upstream import MeetingBuddyClient, UpstreamSession
from tests.support import login_cookie

pytestmark = pytest.mark.django_db(transaction=True)


def sid() -> str:
    return f"mbsess_lkp{uuid.uuid4().hex[:10]}"


async def get(app: Any, path: str, **headers: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        return await client.get(path, headers=headers)


CSRF = "a" * 32  # a CSRF secret the browser would hold in its cookie


@pytest.fixture
async def user_paths(simulator_server: Any, settings: Any, fresh_channel_layer: Any) -> Any:
    """(watch(id), stream(id)) as one logged-in user against the simulator, both through
    the application as `serve` builds it (Django's test client would run the page's sync
    middleware on the one thread the stream's database calls need)."""
    settings.MEETINGBUDDY_API_URL = simulator_server.base_url
    user = await User.objects.acreate(username=f"u-{uuid.uuid4().hex[:6]}")
    cookie = (await database_sync_to_async(login_cookie)(user)).decode()
    app = build_application()

    async def watch(session_id: str) -> str:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.post(
                "/sessions/watch",
                data={"session_id": session_id},
                headers={
                    "cookie": f"{cookie}; csrftoken={CSRF}",
                    "x-csrftoken": CSRF,
                    "hx-request": "true",
                },
            )
        assert response.status_code == 200, response.text
        return response.text

    async def stream(session_id: str) -> int:
        path = f"/v1/meeting-buddy/sessions/{session_id}/stream"
        return (await get(app, path, cookie=cookie)).status_code

    return watch, stream


def upstream_requests(simulator_server: Any) -> int:
    return int(simulator_server.control.stats()["requests_total"])


async def test_the_watch_form_and_the_stream_share_one_look_up(
    user_paths: Any, simulator_server: Any
) -> None:
    watch, stream = user_paths
    session_id = sid()  # unknown upstream
    before = await asyncio.to_thread(upstream_requests, simulator_server)

    page, status = await asyncio.gather(watch(session_id), stream(session_id))

    assert "Meeting Buddy has no session" in page and status == 404
    assert await asyncio.to_thread(upstream_requests, simulator_server) - before == 1


async def test_the_watch_form_and_the_stream_share_one_upstream_client(
    user_paths: Any, simulator_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[MeetingBuddyClient] = []

    class CountedClient(MeetingBuddyClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(lookups, "MeetingBuddyClient", CountedClient)
    watch, stream = user_paths
    known = sid()
    simulator_server.control.create_session(session_id=known, bot_name="Remote", manual=True)
    before = await asyncio.to_thread(upstream_requests, simulator_server)

    page, status = await asyncio.gather(watch(known), stream(sid()))

    assert "Meeting Buddy has no session" not in page and status == 404
    assert await asyncio.to_thread(upstream_requests, simulator_server) - before == 2
    assert len(built) == 1 and lookups.shared_client() is built[0]
    stored = await MeetingSession.objects.aget(pk=known)
    assert stored.bot_name == "Remote" and stored.watched


def test_storing_what_the_upstream_says_skips_ids_it_should_not_have_sent() -> None:
    good, bad = sid(), "not-a-session"
    sessions = [
        UpstreamSession(session_id=good, status="active", bot_name="Buddy", platform="zoom"),
        UpstreamSession(session_id=bad, status="active"),
    ]

    assert lookups.store_sessions(sessions, watch=True) == [good]
    stored = MeetingSession.objects.get(pk=good)
    assert (stored.bot_name, stored.platform, stored.watched) == ("Buddy", "zoom", True)
    assert not MeetingSession.objects.filter(pk=bad).exists()


@pytest.fixture
async def running_relay(fresh_channel_layer: Any) -> Any:
    relay = Relay(upstream_url="http://127.0.0.1:9", discovery_seconds=0, rescan_seconds=60)
    await relay.start()
    yield relay
    await relay.stop()


async def test_health_and_metrics_report_the_relay_the_application_was_built_with(
    running_relay: Relay, settings: Any
) -> None:
    settings.MEETINGDASH_METRICS_TOKEN = "metrics-secret"
    app = build_application(relay=running_relay)
    auth = {"authorization": "Bearer metrics-secret"}

    health = await get(app, "/healthz", **auth)
    metrics = (await get(app, "/metrics", **auth)).text

    assert health.status_code == 200, health.json()
    relay = health.json()["relay"]
    assert (relay["ok"], relay["running"], relay["mode"]) == (True, True, "embedded")
    assert "meetingdash_relay_running 1" in metrics
    assert "meetingdash_relay_following " in metrics
    assert "meetingdash_upstream_connects" in metrics


async def test_without_a_relay_health_and_metrics_report_none(
    running_relay: Relay, settings: Any
) -> None:
    """A relay running in the loop that the application was not given is not reported."""
    settings.MEETINGDASH_METRICS_TOKEN = "metrics-secret"
    app = build_application()
    auth = {"authorization": "Bearer metrics-secret"}

    health = (await get(app, "/healthz", **auth)).json()
    metrics = (await get(app, "/metrics", **auth)).text

    assert health["relay"]["running"] is False
    assert health["relay"]["mode"] in ("none", "scaled")  # scaled when REDIS_URL is set
    assert "meetingdash_relay_running 0" in metrics
    assert "meetingdash_relay_following" not in metrics


def test_a_request_that_did_not_come_through_the_application_has_no_relay() -> None:
    assert relay_of(object()) is None
    assert relay_of({"type": "http"}) is None
    assert relay_of({"type": "http", "state": {"meetingdash.relay": "not a relay"}}) is None
