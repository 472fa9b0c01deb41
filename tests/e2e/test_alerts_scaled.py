"""Alerts in scaled mode: two `runrelay` processes on Redis and PostgreSQL, the real
simulator, and a real webhook receiver. Each alert is sent exactly once; a relay killed while
its request is in flight leaves the alert to the other relay, which sends it again with the
same `webhook-id` (the documented at-least-once), and the alert is not lost."""

from __future__ import annotations

import functools
import json
import os
import time
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
from standardwebhooks.webhooks import Webhook

from tests.alert_receivers import ReceivedRequest, WebhookReceiver
from tests.e2e.relay_stack import manage
from tests.e2e.test_relay_scaled import RelayProcess, scratch_postgres  # noqa: F401

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]


def wait_until(check: Callable[[], Any], seconds: float = 20.0, what: str = "it") -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what} (last {value!r})")
        time.sleep(0.1)


def query(database_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as connection:
        return connection.execute(sql, params).fetchall()


def verified(request: ReceivedRequest, secret: str) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(request.body, request.headers)
    return payload


def alerts_of(receiver: WebhookReceiver, kind: str, session_id: str) -> list[ReceivedRequest]:
    return [
        request
        for request in receiver.requests
        if (body := json.loads(request.body))["type"] == kind
        and body["data"]["session_id"] == session_id
    ]


def streamed(control: Any, session_id: str) -> bool:
    return bool(control.stats()["open_streams"].get(session_id) == 1)


def add_rule(env: dict[str, str], *args: str) -> str:
    printed = manage(["add_alert_rule", *args], env)
    return next(word for word in printed.split() if word.startswith("whsec_"))


@pytest.fixture
def scaled_env(simulator_server, scratch_postgres, redis_url) -> dict[str, str]:  # noqa: F811
    env = {
        **os.environ,
        "DATABASE_URL": scratch_postgres,
        "REDIS_URL": redis_url,
        "MEETINGDASH_CHANNEL_PREFIX": f"alerts{uuid.uuid4().hex[:6]}",
        "MEETINGBUDDY_API_URL": simulator_server.base_url,
        "MEETINGDASH_DISCOVERY_SECONDS": "0.5",
        "MEETINGDASH_RELAY_RESCAN_SECONDS": "0.5",
        "MEETINGDASH_RELAY_LEASE_SECONDS": "3",
        "MEETINGDASH_ALERT_CHECK_SECONDS": "0.3",
        "MEETINGDASH_ALERT_RETRY_SECONDS": "0.5",
        "MEETINGDASH_ALERT_CLAIM_SECONDS": "3",
        "MEETINGDASH_STUCK_AFTER": "",
        "PYTHONUNBUFFERED": "1",
    }
    manage(["migrate", "--noinput", "-v", "0"], env)
    return env


def test_two_relays_send_each_alert_exactly_once(
    scaled_env, simulator_server, webhook_receiver
) -> None:
    env = scaled_env
    hook = webhook_receiver.url_for("/hook?team=ops")
    failed_secret = add_rule(env, "--on", "failed", "--webhook", hook)
    stuck_secret = add_rule(
        env, "--on", "stuck", "--status", "waiting", "--longer-than", "1", "--webhook", hook
    )
    relays = [RelayProcess(env), RelayProcess(env)]
    control = simulator_server.control
    try:
        failing, waiting = f"mbsess_sf{uuid.uuid4().hex[:8]}", f"mbsess_sw{uuid.uuid4().hex[:8]}"
        for session_id in (failing, waiting):
            control.create_session(session_id=session_id, manual=True, platform="zoom")
        for session_id in (failing, waiting):
            wait_until(
                functools.partial(streamed, control, session_id),
                what=f"a relay streaming {session_id}",
            )
            control.emit(session_id, status="joining")
        control.emit(waiting, status="waiting")
        control.emit(failing, status="failed", error_code="JOIN_TIMEOUT", error_message="Late")

        def delivered() -> list[tuple[Any, ...]]:
            rows = query(
                env["DATABASE_URL"],
                "SELECT kind, session_ref, attempts, claimed_by FROM sessions_monitor_alertdelivery"
                " WHERE status = 'delivered' ORDER BY kind",
            )
            return rows if len(rows) == 2 else []

        rows = wait_until(delivered, what="both alerts delivered")
        # Delivered, each at its first attempt: no relay can claim either row again.
        assert [(kind, ref, attempts) for kind, ref, attempts, _ in rows] == [
            ("session.failed", failing, 1),
            ("session.stuck", waiting, 1),
        ]
        assert len(webhook_receiver.requests) == 2
        (failure,) = alerts_of(webhook_receiver, "session.failed", failing)
        (stuck,) = alerts_of(webhook_receiver, "session.stuck", waiting)
        assert failure.path == "/hook?team=ops"
        body = verified(failure, failed_secret)
        assert body["data"]["error_code"] == "JOIN_TIMEOUT"
        assert verified(stuck, stuck_secret)["data"]["status"] == "waiting"
        assert failure.headers["webhook-id"] != stuck.headers["webhook-id"]

        control.emit(waiting, status="active")
        (resolved,) = wait_until(
            lambda: alerts_of(webhook_receiver, "session.resolved", waiting),
            what="the resolution",
        )
        assert verified(resolved, stuck_secret)["data"]["status"] == "active"
        wait_until(
            lambda: query(
                env["DATABASE_URL"],
                "SELECT 1 FROM sessions_monitor_alertdelivery"
                " WHERE kind = 'session.resolved' AND status = 'delivered' AND attempts = 1",
            ),
            what="the resolution recorded",
        )
        assert len(webhook_receiver.requests) == 3
    finally:
        for relay in relays:
            relay.stop()


def test_a_relay_killed_mid_delivery_leaves_the_alert_to_the_other(
    scaled_env, simulator_server, webhook_receiver
) -> None:
    env = scaled_env
    secret = add_rule(env, "--on", "failed", "--webhook", webhook_receiver.url_for("/hook"))
    relays = [RelayProcess(env), RelayProcess(env)]
    control = simulator_server.control
    try:
        session_id = f"mbsess_sk{uuid.uuid4().hex[:8]}"
        control.create_session(session_id=session_id, manual=True)
        wait_until(lambda: control.stats()["open_streams"].get(session_id) == 1, what="a stream")
        webhook_receiver.hold()
        control.emit(session_id, status="failed", error_code="REMOVED_BY_HOST")
        (first,) = webhook_receiver.wait_for(1, seconds=20)
        (owner,) = query(
            env["DATABASE_URL"],
            "SELECT claimed_by FROM sessions_monitor_alertdelivery WHERE session_ref = %s",
            session_id,
        )[0]
        sender = next(relay for relay in relays if relay.owner == owner)
        sender.process.kill()  # SIGKILL: no cleanup, the claim stays until its lease lapses
        sender.process.wait(10)
        webhook_receiver.release()

        again = webhook_receiver.wait_for(2, seconds=30)[1]
        assert again.headers["webhook-id"] == first.headers["webhook-id"]
        assert verified(again, secret) == verified(first, secret)

        def recorded() -> list[tuple[Any, ...]]:
            return query(
                env["DATABASE_URL"],
                "SELECT status, attempts, claimed_by FROM sessions_monitor_alertdelivery"
                " WHERE session_ref = %s AND status = 'delivered'",
                session_id,
            )

        ((status, attempts, claimed_by),) = wait_until(recorded, what="the delivery recorded")
        assert (status, attempts) == ("delivered", 1)
        assert len(webhook_receiver.requests) == 2
    finally:
        for relay in relays:
            relay.stop()
