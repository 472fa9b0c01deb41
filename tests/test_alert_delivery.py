"""Alert deliveries end to end: outbox rows sent by `alerts.sender` through `alerts.channels`
to real receivers (an HTTP server, an SMTP server), retried, given up, taken over."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.db import connection, connections
from django.utils import timezone
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from sessions_monitor.alerts import outbox, sender
from sessions_monitor.alerts.channels import Attempt
from sessions_monitor.alerts.rules import create_rule
from sessions_monitor.alerts.secrets import new_secret
from sessions_monitor.models import AlertChannel, AlertDelivery, AlertRule, AlertTrigger
from tests.alert_receivers import SmtpServer, WebhookReceiver
from tests.support import free_port, make_session, service_missing

pytestmark = pytest.mark.django_db(transaction=True)

HOOK_PATH = "/hooks/T0KEN-IN-PATH"
HOOK_QUERY = "?token=QUERY-T0KEN"


def sid() -> str:
    return f"mbsess_alert{uuid.uuid4().hex[:10]}"


def new_rule(
    target: str, channel: str = AlertChannel.WEBHOOK, **fields: Any
) -> tuple[AlertRule, str]:
    secret = new_secret() if channel != AlertChannel.EMAIL else ""
    made = create_rule(
        trigger=AlertTrigger.FAILED,
        channel=channel,
        target=target,
        secret=secret or None,
        name="Ops on call",
        **fields,
    )
    return made.rule, secret


def failed_alert(rule: AlertRule) -> AlertDelivery:
    session = make_session(
        sid(), status="failed", error_code="BOT_REMOVED", error_message="Removed by the host"
    )
    outbox.enqueue_session_alert(outbox.FAILED, session, rules=[rule], notify=False)
    return AlertDelivery.objects.get(session=session, rule=rule)


def deliver_now(delivery: AlertDelivery, owner: str) -> Attempt:
    return async_to_sync(sender.deliver)(delivery.pk, owner)


def claim_and_deliver(delivery: AlertDelivery, owner: str, **claim: Any) -> Attempt:
    assert sender.claim_due(owner, **claim) == [delivery.pk]
    return deliver_now(delivery, owner)


def test_it_sends_a_standard_webhook_that_verifies(webhook_receiver: WebhookReceiver) -> None:
    rule, secret = new_rule(webhook_receiver.url_for(HOOK_PATH + HOOK_QUERY))
    delivery = failed_alert(rule)
    before = timezone.now()

    attempt = claim_and_deliver(delivery, "relay-a")

    assert attempt == Attempt(True, 200, "")
    [request] = webhook_receiver.requests
    assert request.method == "POST"
    assert request.path == HOOK_PATH + HOOK_QUERY
    assert request.body == json.dumps(delivery.payload).encode()
    assert request.headers["webhook-id"] == delivery.webhook_id
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "MeetingDash-Alerts"
    assert abs(int(request.headers["webhook-timestamp"]) - before.timestamp()) < 5
    assert request.headers["webhook-signature"].startswith("v1,")
    body = Webhook(secret).verify(request.body, request.headers)
    assert body["type"] == "session.failed"
    assert body["data"]["error_code"] == "BOT_REMOVED"
    assert body["data"]["url"].endswith(delivery.session_ref + "/")
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(request.body, request.headers)

    delivery.refresh_from_db()
    assert delivery.status == "delivered"
    assert (delivery.attempts, delivery.response_code) == (1, 200)
    assert delivery.delivered_at is not None and delivery.delivered_at >= before
    assert (delivery.claimed_by, delivery.claimed_until) == ("", None)
    assert sender.claim_due("relay-a") == []


def test_it_posts_a_slack_body_with_the_same_signed_headers(
    webhook_receiver: WebhookReceiver,
) -> None:
    rule, secret = new_rule(webhook_receiver.url_for("/services/T1/B2/xyz"), AlertChannel.SLACK)
    delivery = failed_alert(rule)

    assert claim_and_deliver(delivery, "relay-a").ok

    [request] = webhook_receiver.requests
    assert request.headers["webhook-id"] == delivery.webhook_id
    body = Webhook(secret).verify(request.body, request.headers)
    data = delivery.payload["data"]
    assert set(body) == {"text", "blocks"}
    assert body["text"] == data["text"]
    assert body["blocks"][0] == {
        "type": "header",
        "text": {"type": "plain_text", "text": data["text"]},
    }
    shown = json.dumps(body["blocks"])
    for words in ("*Status*\\nfailed", "*Error code*\\nBOT_REMOVED", "Removed by the host"):
        assert words in shown
    assert f"<{data['url']}|Open in MeetingDash>" in shown


def test_it_emails_the_alert_through_smtp(smtp_server: SmtpServer) -> None:
    rule, _ = new_rule("ops@example.com", AlertChannel.EMAIL)
    delivery = failed_alert(rule)

    attempt = claim_and_deliver(delivery, "relay-a")

    assert attempt.ok, attempt.error
    [mail] = smtp_server.messages
    assert mail.rcpt_tos == ["ops@example.com"]
    data = delivery.payload["data"]
    assert mail.message["Subject"] == data["text"]
    assert mail.message["X-MeetingDash-Alert-Id"] == delivery.webhook_id
    text = mail.message.get_content()
    for words in (
        f"Session: {delivery.session_ref}",
        "Status: failed",
        "Error code: BOT_REMOVED",
        "Error: Removed by the host",
        data["url"],
    ):
        assert words in text
    delivery.refresh_from_db()
    assert delivery.status == "delivered"


def test_an_smtp_refusal_is_a_failed_attempt_with_its_words(smtp_server: SmtpServer) -> None:
    rule, _ = new_rule("ops@example.com", AlertChannel.EMAIL)
    delivery = failed_alert(rule)
    smtp_server.refuse("554 5.7.1 Relaying denied")

    attempt = claim_and_deliver(delivery, "relay-a")

    assert not attempt.ok
    assert attempt.response_code == 554
    assert "554" in attempt.error and "Relaying denied" in attempt.error
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("pending", 1)
    assert delivery.last_error == attempt.error
    assert smtp_server.messages == []


def test_it_retries_with_backoff_and_the_same_webhook_id(
    webhook_receiver: WebhookReceiver, settings: Any
) -> None:
    settings.MEETINGDASH_ALERT_RETRY_SECONDS = 10
    rule, secret = new_rule(webhook_receiver.url_for("/hook"))
    delivery = failed_alert(rule)
    webhook_receiver.script(500, 500, 200)

    first = claim_and_deliver(delivery, "relay-a")
    assert (first.ok, first.response_code) == (False, 500)
    assert "HTTP 500" in first.error
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.claimed_by) == ("pending", 1, "")
    assert delivery.last_attempt_at is not None
    assert delivery.next_attempt_at - delivery.last_attempt_at == timedelta(seconds=10)
    assert sender.claim_due("relay-a") == []  # not due before its backoff

    at = delivery.next_attempt_at
    assert not claim_and_deliver(delivery, "relay-a", now=at).ok
    delivery.refresh_from_db()
    assert delivery.attempts == 2
    assert delivery.next_attempt_at - delivery.last_attempt_at == timedelta(seconds=20)

    third = claim_and_deliver(delivery, "relay-a", now=delivery.next_attempt_at)
    assert third == Attempt(True, 200, "")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.response_code) == ("delivered", 3, 200)

    requests = webhook_receiver.requests
    assert [r.headers["webhook-id"] for r in requests] == [delivery.webhook_id] * 3
    for request in requests:
        Webhook(secret).verify(request.body, request.headers)


def test_it_gives_up_after_max_attempts_and_never_logs_the_url_or_secret(
    webhook_receiver: WebhookReceiver, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    settings.MEETINGDASH_ALERT_MAX_ATTEMPTS = 3
    caplog.set_level(logging.DEBUG)
    rule, secret = new_rule(webhook_receiver.url_for(HOOK_PATH + HOOK_QUERY))
    delivery = failed_alert(rule)
    webhook_receiver.default_status = 503

    for attempt_no in (1, 2, 3):
        later = timezone.now() + timedelta(hours=attempt_no)
        attempt = claim_and_deliver(delivery, "relay-a", now=later)
        assert (attempt.ok, attempt.response_code) == (False, 503)

    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("gave_up", 3)
    assert sender.claim_due("relay-a", now=timezone.now() + timedelta(days=2)) == []
    assert len(webhook_receiver.requests) == 3
    [gave_up] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert f"delivery {delivery.pk} (rule {rule.pk}" in gave_up.getMessage()
    assert "after 3 attempts" in gave_up.getMessage()
    for leak in ("T0KEN-IN-PATH", "QUERY-T0KEN", secret, secret.removeprefix("whsec_")):
        assert leak not in caplog.text
        assert leak not in delivery.last_error


def test_an_unreachable_receiver_is_a_failed_attempt_naming_only_the_host(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    rule, _ = new_rule(f"http://127.0.0.1:{free_port()}{HOOK_PATH}{HOOK_QUERY}")
    delivery = failed_alert(rule)

    attempt = claim_and_deliver(delivery, "relay-a")

    assert attempt == Attempt(False, None, "could not connect to 127.0.0.1")
    delivery.refresh_from_db()
    assert delivery.last_error == "could not connect to 127.0.0.1"
    assert "could not connect to 127.0.0.1" in caplog.text
    assert "T0KEN" not in caplog.text


def test_a_redirect_is_not_followed(webhook_receiver: WebhookReceiver) -> None:
    rule, _ = new_rule(webhook_receiver.url_for("/hook"))
    delivery = failed_alert(rule)
    webhook_receiver.script(302)

    attempt = claim_and_deliver(delivery, "relay-a")

    assert (attempt.ok, attempt.response_code) == (False, 302)
    assert "redirects are not followed" in attempt.error
    assert len(webhook_receiver.requests) == 1


async def test_a_lapsed_claim_of_a_dead_sender_is_sent_again_with_the_same_webhook_id(
    webhook_receiver: WebhookReceiver,
) -> None:
    rule, secret = await database_sync_to_async(new_rule)(webhook_receiver.url_for("/hook"))
    delivery = await database_sync_to_async(failed_alert)(rule)
    claim = database_sync_to_async(sender.claim_due)
    start = timezone.now()
    assert await claim("relay-dead", now=start, lease_seconds=60) == [delivery.pk]

    webhook_receiver.hold()
    dying = asyncio.create_task(sender.deliver(delivery.pk, "relay-dead"))
    await asyncio.to_thread(webhook_receiver.wait_for, 1)
    dying.cancel()  # killed while the receiver has the request: nothing recorded
    with pytest.raises(asyncio.CancelledError):
        await dying
    webhook_receiver.release()

    await delivery.arefresh_from_db()
    assert (delivery.status, delivery.claimed_by, delivery.attempts) == ("pending", "relay-dead", 0)
    assert await claim("relay-b", now=start + timedelta(seconds=59)) == []
    assert await claim("relay-b", now=start + timedelta(seconds=61)) == [delivery.pk]

    assert (await sender.deliver(delivery.pk, "relay-b")).ok
    assert await sender.deliver(delivery.pk, "relay-dead") == Attempt(
        False, None, sender.NOT_CLAIMED
    )

    requests = webhook_receiver.wait_for(2)
    assert len(requests) == 2
    assert {r.headers["webhook-id"] for r in requests} == {delivery.webhook_id}
    for request in requests:
        Webhook(secret).verify(request.body, request.headers)
    await delivery.arefresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.claimed_by) == ("delivered", 1, "")
    await database_sync_to_async(connections.close_all)()  # the ORM thread's connection


def test_the_outcome_of_a_claim_taken_over_meanwhile_is_dropped() -> None:
    rule, _ = new_rule("https://hooks.example.com/x")
    delivery = failed_alert(rule)
    start = timezone.now()
    assert sender.claim_due("relay-slow", now=start) == [delivery.pk]
    assert sender.claim_due("relay-b", now=start + timedelta(seconds=61)) == [delivery.pk]

    assert sender.record(delivery, rule, "relay-slow", Attempt(False, 500, "boom")) == "lost"

    delivery.refresh_from_db()
    assert (delivery.claimed_by, delivery.attempts, delivery.last_error) == ("relay-b", 0, "")
    assert sender.record(delivery, rule, "relay-b", Attempt(True, 204)) == "delivered"
    delivery.refresh_from_db()
    assert (delivery.status, delivery.response_code) == ("delivered", 204)


def test_a_deleted_or_disabled_rule_gives_up_but_a_test_alert_is_still_sent(
    webhook_receiver: WebhookReceiver,
) -> None:
    rule, _ = new_rule(webhook_receiver.url_for("/hook"))
    disabled_alert = failed_alert(rule)
    rule.enabled = False
    rule.save()

    assert claim_and_deliver(disabled_alert, "relay-a") == Attempt(
        False, None, "the rule was disabled"
    )
    disabled_alert.refresh_from_db()
    assert (disabled_alert.status, disabled_alert.last_error) == (
        "gave_up",
        "the rule was disabled",
    )

    test_alert = outbox.enqueue_test(rule)
    assert claim_and_deliver(test_alert, "relay-a").ok
    [request] = webhook_receiver.requests
    assert request.headers["webhook-id"] == test_alert.webhook_id

    other, _ = new_rule(webhook_receiver.url_for("/hook"))
    orphan = failed_alert(other)
    other.delete()
    assert claim_and_deliver(orphan, "relay-a").error == "the rule was deleted"
    orphan.refresh_from_db()
    assert (orphan.status, orphan.rule_name) == ("gave_up", "Ops on call")
    assert len(webhook_receiver.requests) == 1


def test_send_due_once_sends_every_due_row_and_survives_a_bad_one(
    webhook_receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    rule, _ = new_rule(webhook_receiver.url_for("/hook"))
    good = [failed_alert(rule), failed_alert(rule)]
    slack, _ = new_rule(webhook_receiver.url_for("/slack"), AlertChannel.SLACK)
    bad = failed_alert(slack)
    AlertDelivery.objects.filter(pk=bad.pk).update(payload="not an object")

    assert async_to_sync(sender.send_due_once)("relay-a") == 3

    assert {r.headers["webhook-id"] for r in webhook_receiver.requests} == {
        d.webhook_id for d in good
    }
    statuses = dict(AlertDelivery.objects.values_list("pk", "status"))
    assert [statuses[d.pk] for d in good] == ["delivered", "delivered"]
    assert statuses[bad.pk] == "pending"
    assert f"delivery {bad.pk} failed unexpectedly" in caplog.text
    assert async_to_sync(sender.send_due_once)("relay-a") == 0  # the bad row keeps its lease


@pytest.mark.postgres
def test_two_senders_claiming_at_once_on_postgresql_never_share_a_row() -> None:
    if connection.vendor != "postgresql":
        service_missing("needs DATABASE_URL=postgres://… (concurrent conditional UPDATEs)")
    rule, _ = new_rule("https://hooks.example.com/x")
    ids = {outbox.enqueue_test(rule).pk for _ in range(60)}
    owners = [f"relay-{n}" for n in range(4)]
    claimed: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(owners))

    def claimer(owner: str) -> None:
        try:
            barrier.wait(10)
            claimed[owner] = sender.claim_due(owner, limit=len(ids))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=claimer, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert errors == []
    every = [pk for owner in owners for pk in claimed[owner]]
    assert len(every) == len(set(every))
    assert set(every) == ids
    stored = dict(AlertDelivery.objects.values_list("pk", "claimed_by"))
    for owner in owners:
        assert all(stored[pk] == owner for pk in claimed[owner])
