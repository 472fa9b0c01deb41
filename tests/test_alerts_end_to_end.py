"""The whole way: the simulator's session fails or gets stuck, the relay (its own loops, as
`serve` runs them) stores it, the outbox gets the alerts, the sender delivers them to a real
webhook receiver and a real SMTP server. Exactly one of each, verifiable signatures."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.db import database_sync_to_async
from standardwebhooks.webhooks import Webhook

from sessions_monitor.alerts.rules import create_rule
from sessions_monitor.models import AlertDelivery, DeliveryStatus, MeetingSession
from sessions_monitor.relay.worker import Relay
from tests.support import eventually, fast_relay

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def relay(simulator_server, fresh_channel_layer, settings) -> AsyncIterator[Relay]:
    settings.MEETINGDASH_ALERT_CHECK_SECONDS = 0.2
    settings.MEETINGDASH_STUCK_AFTER = {}
    relay = fast_relay(simulator_server.base_url)
    await relay.start()
    yield relay
    await relay.stop()


async def stored(session_id: str, status: str) -> bool:
    row = await database_sync_to_async(MeetingSession.objects.filter(pk=session_id).first)()
    return row is not None and row.status == status


async def emit_when_streamed(simulator_server, session_id: str, **step: Any) -> None:
    control = simulator_server.control
    await eventually(
        lambda: asyncio.to_thread(lambda: control.stats()["open_streams"].get(session_id) == 1),
        what="the relay's stream",
    )
    await asyncio.to_thread(control.emit, session_id, **step)
    await eventually(lambda: stored(session_id, step["status"]), what=str(step))


@database_sync_to_async
def outbox() -> list[tuple[str, str, str, int]]:
    return list(
        AlertDelivery.objects.order_by("kind", "rule_id").values_list(
            "kind", "rule__channel", "status", "attempts"
        )
    )


async def test_a_failure_and_a_stuck_session_send_one_of_each_channel(
    relay, simulator_server, webhook_receiver, smtp_server
) -> None:
    hook, slack = webhook_receiver.url_for("/json"), webhook_receiver.url_for("/slack")

    @database_sync_to_async
    def rules() -> dict[str, str | None]:
        secrets: dict[str, str | None] = {}
        stuck: dict[str, Any] = {"status": "waiting", "longer_than_seconds": 1}
        no_filters: dict[str, Any] = {}
        for trigger, extra in (("failed", no_filters), ("stuck", stuck)):
            secrets[f"{trigger}/json"] = create_rule(
                trigger=trigger, channel="webhook", target=hook, **extra
            ).secret
            secrets[f"{trigger}/slack"] = create_rule(
                trigger=trigger, channel="slack", target=slack, **extra
            ).secret
            create_rule(trigger=trigger, channel="email", target="oncall@example.test", **extra)
        return secrets

    secrets = await rules()
    failing, waiting = f"mbsess_e2f{uuid.uuid4().hex[:8]}", f"mbsess_e2w{uuid.uuid4().hex[:8]}"
    for session_id in (failing, waiting):
        await asyncio.to_thread(
            simulator_server.control.create_session,
            session_id=session_id,
            manual=True,
            bot_name="Notetaker",
        )
        await relay.watch(session_id)
    await emit_when_streamed(simulator_server, waiting, status="joining")
    await emit_when_streamed(simulator_server, waiting, status="waiting")
    await emit_when_streamed(simulator_server, failing, status="joining")
    await emit_when_streamed(
        simulator_server,
        failing,
        status="failed",
        error_code="BOT_LAUNCH_FAILED",
        error_message="The meeting bot could not be started",
    )

    async def all_delivered() -> list[tuple[str, str, str, int]]:
        rows = await outbox()
        return (
            rows if len(rows) == 6 and all(r[2] == DeliveryStatus.DELIVERED for r in rows) else []
        )

    rows = await eventually(all_delivered, seconds=20, what="six deliveries delivered")
    # Delivered at the first attempt each: nothing can send any of them again.
    assert sorted((kind, channel, attempts) for kind, channel, _, attempts in rows) == [
        ("session.failed", "email", 1),
        ("session.failed", "slack", 1),
        ("session.failed", "webhook", 1),
        ("session.stuck", "email", 1),
        ("session.stuck", "slack", 1),
        ("session.stuck", "webhook", 1),
    ]
    requests = webhook_receiver.requests
    assert sorted(r.path for r in requests) == ["/json", "/json", "/slack", "/slack"]
    assert len({r.headers["webhook-id"] for r in requests}) == 4
    for request in requests:
        if request.path == "/json":
            kind = json.loads(request.body)["type"].removeprefix("session.")
            payload = Webhook(str(secrets[f"{kind}/json"])).verify(request.body, request.headers)
            session_id = failing if kind == "failed" else waiting
            assert payload["data"]["session_id"] == session_id
        else:
            body = json.loads(request.body)
            kind = "failed" if "failed" in body["text"] else "stuck"
            Webhook(str(secrets[f"{kind}/slack"])).verify(request.body, request.headers)
            assert set(body) >= {"text", "blocks"}
    subjects = sorted(str(mail.message["subject"]) for mail in smtp_server.messages)
    assert len(subjects) == 2
    assert "failed [BOT_LAUNCH_FAILED]" in subjects[0] and failing in subjects[0]
    assert "stuck in 'waiting'" in subjects[1] and waiting in subjects[1]
    assert all(mail.rcpt_tos == ["oncall@example.test"] for mail in smtp_server.messages)
