"""Alerts raised by the relay against the real simulator: failures and lost sessions in the
event's transaction, stuck sessions by the watchdog, the upstream down for the deployment."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from channels.db import database_sync_to_async
from django.utils import timezone

from sessions_monitor import messages
from sessions_monitor.alerts import outbox
from sessions_monitor.alerts.rules import create_rule
from sessions_monitor.alerts.watchdog import Watchdog, check_stuck
from sessions_monitor.models import AlertDelivery, MeetingSession, StreamState
from sessions_monitor.relay.worker import Relay
from sessions_monitor.upstream import MeetingBuddyClient
from tests.support import eventually, fast_relay, free_port

pytestmark = pytest.mark.django_db(transaction=True)

RECEIVER = "https://alerts.example.test/hooks/meetingdash"


def sid() -> str:
    return f"mbsess_alr{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def relay(simulator_server, fresh_channel_layer) -> AsyncIterator[Relay]:
    relay = fast_relay(simulator_server.base_url)
    relay.alert_check_seconds = 0  # the test calls the steps
    await relay.start()
    yield relay
    await relay.stop()


@pytest.fixture
async def toasts(fresh_channel_layer) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """What the `alerts` group carries (followers' toasts), read off the real channel layer."""
    channel = await fresh_channel_layer.new_channel()
    await fresh_channel_layer.group_add(messages.ALERTS_GROUP, channel)
    received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def read() -> None:
        while True:
            await received.put(await fresh_channel_layer.receive(channel))

    task = asyncio.create_task(read())
    yield received
    task.cancel()


def rule(**fields: Any) -> Any:
    fields.setdefault("channel", "webhook")
    fields.setdefault("target", RECEIVER)
    return create_rule(**fields).rule


@database_sync_to_async
def deliveries(session_id: str | None = None, **filters: Any) -> list[AlertDelivery]:
    rows = AlertDelivery.objects.filter(**filters).order_by("id")
    if session_id is not None:
        rows = rows.filter(session_ref=session_id)
    return list(rows)


@database_sync_to_async
def session_row(session_id: str) -> MeetingSession:
    return MeetingSession.objects.get(pk=session_id)


async def reached(session_id: str, status: str) -> bool:
    row = await database_sync_to_async(MeetingSession.objects.filter(pk=session_id).first)()
    return row is not None and row.status == status and row.stream_state == StreamState.LIVE


async def next_toast(queue: asyncio.Queue[dict[str, Any]], kind: str, session_id: str) -> Any:
    async with asyncio.timeout(10):
        while True:
            message = await queue.get()
            if message["kind"] == kind and message["session_id"] == session_id:
                return message


async def start(relay: Relay, simulator_server, session_id: str, *steps: dict[str, Any]) -> None:
    await asyncio.to_thread(
        simulator_server.control.create_session,
        session_id=session_id,
        manual=True,
        bot_name="Acme Recorder",
        platform="zoom",
    )
    await relay.watch(session_id)
    for step in steps:
        await eventually(
            lambda: asyncio.to_thread(
                lambda: simulator_server.control.stats()["open_streams"].get(session_id) == 1
            ),
            what="the relay's upstream stream",
        )
        await asyncio.to_thread(simulator_server.control.emit, session_id, **step)
        status = step["status"]
        await eventually(functools.partial(stored_status, session_id, status), what=status)


async def stored_status(session_id: str, status: str) -> bool:
    row = await database_sync_to_async(MeetingSession.objects.filter(pk=session_id).first)()
    return row is not None and row.status == status


async def test_a_waiting_session_raises_one_stuck_alert_then_one_resolution(
    relay, simulator_server, toasts
) -> None:
    waiting = await database_sync_to_async(rule)(
        trigger="stuck", status="waiting", longer_than_seconds=1, name="waiting too long"
    )
    other_platform = await database_sync_to_async(rule)(
        trigger="stuck", status="waiting", longer_than_seconds=1, platform="teams"
    )
    session_id = sid()
    await start(relay, simulator_server, session_id, {"status": "joining"}, {"status": "waiting"})
    await eventually(lambda: reached(session_id, "waiting"), what="the session waiting")

    async def flagged() -> bool:
        return session_id in (await relay.check_alerts_once()).flagged

    await eventually(flagged, what="the watchdog to find it stuck")
    for _ in range(3):  # noticing it again raises nothing more
        await relay.check_alerts_once()

    row = await session_row(session_id)
    stuck = await deliveries(session_id, kind=outbox.STUCK)
    assert [(d.rule_id, d.episode_at) for d in stuck] == [(waiting.pk, row.status_since)]
    assert row.stuck_since == row.status_since
    body = stuck[0].payload
    assert body["type"] == "session.stuck"
    assert body["data"]["session_id"] == session_id
    assert body["data"]["status"] == "waiting"
    assert body["data"]["rule"]["id"] == waiting.pk
    assert body["data"]["url"].endswith(f"/sessions/{session_id}/")
    assert not await deliveries(session_id, rule=other_platform)
    toast = await next_toast(toasts, "stuck", session_id)
    assert "stuck in 'waiting'" in toast["text"]

    await asyncio.to_thread(simulator_server.control.emit, session_id, status="active")
    await eventually(lambda: reached(session_id, "active"), what="the session admitted")
    resolved = await deliveries(session_id, kind=outbox.RESOLVED)
    assert [(d.rule_id, d.episode_at) for d in resolved] == [(waiting.pk, row.status_since)]
    assert (await session_row(session_id)).stuck_since is None
    assert (await next_toast(toasts, "resolved", session_id))["status"] == "active"
    await relay.check_alerts_once()
    assert len(await deliveries(session_id, kind=outbox.STUCK)) == 1


async def test_a_long_joining_session_is_stuck_by_the_dashboard_threshold_and_rules(
    relay, simulator_server, toasts
) -> None:
    joining = await database_sync_to_async(rule)(
        trigger="stuck", status="joining", longer_than_seconds=2, bot_name_pattern="acme*"
    )
    session_id = sid()
    await asyncio.to_thread(
        simulator_server.control.create_session,
        session_id=session_id,
        bot_name="Acme Recorder",
        platform="zoom",
        script=[{"after": 0.1, "status": "joining"}, {"after": 3600, "status": "active"}],
    )
    await relay.watch(session_id)
    await eventually(lambda: reached(session_id, "joining"), what="the session joining")

    # The dashboard's own threshold (1 s) flags it first: a toast, no alert yet.
    async def flagged_by_dashboard() -> bool:
        report = await database_sync_to_async(check_stuck)(stuck_after={"joining": 1})
        return session_id in report.flagged

    await eventually(flagged_by_dashboard, what="the dashboard threshold")
    await next_toast(toasts, "stuck", session_id)
    assert not await deliveries(session_id, rule=joining)

    # The rule's (2 s) then raises its alert for the same episode, and only once.
    async def alerted() -> list[AlertDelivery]:
        await database_sync_to_async(check_stuck)(stuck_after={"joining": 1})
        return await deliveries(session_id, rule=joining)

    alerts = await eventually(alerted, what="the rule's alert")
    await database_sync_to_async(check_stuck)(stuck_after={"joining": 1})
    assert len(await deliveries(session_id, rule=joining)) == len(alerts) == 1
    assert alerts[0].episode_at == (await session_row(session_id)).status_since


async def test_a_failure_is_in_the_outbox_with_its_event_and_toasts(
    relay, simulator_server, toasts
) -> None:
    any_failure = await database_sync_to_async(rule)(trigger="failed")
    join_timeouts = await database_sync_to_async(rule)(trigger="failed", error_code="JOIN_TIMEOUT")
    launch_only = await database_sync_to_async(rule)(
        trigger="failed", error_code="BOT_LAUNCH_FAILED"
    )
    session_id = sid()
    failure = {"status": "failed", "error_code": "JOIN_TIMEOUT", "error_message": "Not admitted"}
    await start(relay, simulator_server, session_id, {"status": "joining"}, failure)
    await eventually(lambda: deliveries(session_id), what="the failure's alert")
    await relay.flush(session_id)

    failed = await deliveries(session_id, kind=outbox.FAILED)
    assert sorted(d.rule_id for d in failed) == sorted([any_failure.pk, join_timeouts.pk])
    assert not await deliveries(session_id, rule=launch_only)
    data = failed[0].payload["data"]
    assert (data["status"], data["error_code"], data["error_message"]) == (
        "failed",
        "JOIN_TIMEOUT",
        "Not admitted",
    )
    assert len({d.webhook_id for d in failed}) == 2  # one idempotency key per alert
    toast = await next_toast(toasts, "failed", session_id)
    assert "JOIN_TIMEOUT" in toast["text"] and "Not admitted" in toast["text"]


async def test_a_session_the_upstream_forgets_raises_a_lost_alert(
    relay, simulator_server, toasts
) -> None:
    lost = await database_sync_to_async(rule)(trigger="lost")
    session_id = sid()
    await start(relay, simulator_server, session_id, {"status": "joining"})
    await eventually(lambda: reached(session_id, "joining"))
    await asyncio.to_thread(simulator_server.control.forget, session_id)
    alerts = await eventually(lambda: deliveries(session_id, kind=outbox.LOST), seconds=15)
    assert [d.rule_id for d in alerts] == [lost.pk]
    assert alerts[0].payload["data"]["status"] == "joining"
    await next_toast(toasts, "lost", session_id)


@database_sync_to_async
def _stale_session(state: str) -> str:
    session_id = sid()
    since = timezone.now() - timedelta(hours=1)
    MeetingSession.objects.create(
        session_id=session_id, status="joining", status_since=since, stream_state=state
    )
    return session_id


@database_sync_to_async
def _stuck_sessions(*bot_names: str) -> list[str]:
    ids = []
    for minutes, bot_name in enumerate(bot_names):
        session_id = sid()
        MeetingSession.objects.create(
            session_id=session_id,
            bot_name=bot_name,
            status="joining",
            status_since=timezone.now() - timedelta(minutes=60 - minutes),
            stream_state=StreamState.LIVE,
        )
        ids.append(session_id)
    return ids


async def test_sessions_a_rule_does_not_match_never_hide_one_it_does(monkeypatch) -> None:
    from sessions_monitor.alerts import watchdog

    monkeypatch.setattr(watchdog, "BATCH", 2)
    acme = await database_sync_to_async(rule)(
        trigger="stuck", status="joining", longer_than_seconds=60, bot_name_pattern="acme*"
    )
    *others, ours = await _stuck_sessions("Other", "Other", "Other", "Acme Recorder")
    await database_sync_to_async(check_stuck)(stuck_after={})
    alerted = await deliveries(rule=acme)
    assert [d.session_ref for d in alerted] == [ours]


async def test_a_session_whose_stream_is_down_is_not_called_stuck_on_stale_data() -> None:
    stale = await _stale_session(StreamState.RETRYING)
    live = await _stale_session(StreamState.LIVE)
    report = await database_sync_to_async(check_stuck)(stuck_after={"joining": 60})
    assert live in report.flagged
    assert stale not in report.flagged


async def test_the_upstream_down_raises_one_alert_per_outage_and_one_resolution(
    simulator_server,
) -> None:
    down = await database_sync_to_async(rule)(trigger="upstream_down", longer_than_seconds=60)
    dead = MeetingBuddyClient(f"http://127.0.0.1:{free_port()}")
    alive = MeetingBuddyClient(simulator_server.base_url)

    async def lead() -> bool:
        return True

    t0 = timezone.now()
    watchdog = Watchdog(lead=lead, probe_upstream=dead.probe, stuck_after={})
    assert (await watchdog.check_once(t0)).upstream_alerts == 0  # down, not for long yet
    assert watchdog.upstream_down_since == t0
    assert (await watchdog.check_once(t0 + timedelta(seconds=61))).upstream_alerts == 1
    await watchdog.check_once(t0 + timedelta(seconds=90))
    # A new leader (a relay restart) sees the same outage as already alerted.
    successor = Watchdog(lead=lead, probe_upstream=dead.probe, stuck_after={})
    await successor.check_once(t0 + timedelta(seconds=100))
    await successor.check_once(t0 + timedelta(seconds=200))
    alerts = await deliveries(rule=down, kind=outbox.UPSTREAM_DOWN)
    assert [a.episode_at for a in alerts] == [t0]
    assert alerts[0].payload["data"]["status"] == "down"

    successor.probe_upstream = alive.probe
    await successor.check_once(t0 + timedelta(seconds=210))
    await successor.check_once(t0 + timedelta(seconds=220))
    resolved = await deliveries(rule=down, kind=outbox.UPSTREAM_RESOLVED)
    assert [r.episode_at for r in resolved] == [t0]
    assert "reachable again" in resolved[0].payload["data"]["text"]
    await dead.aclose()
    await alive.aclose()
