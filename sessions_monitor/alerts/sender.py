"""The sender: claim due outbox rows, send each through its channel, record the outcome.

Steppable (the relay calls `send_due_once` on its alert tick; tests call the steps):

- `claim_due` takes `PENDING` rows whose `next_attempt_at` has come and whose claim is free
  or lapsed, one conditional UPDATE per row: of two relays racing for a row exactly one
  UPDATE matches (PostgreSQL re-checks the WHERE on the row it waited for), so one row is
  never sent by two relays at once. A claim is a lease: a relay that died holding rows
  leaves them to another relay once `claimed_until` has passed.
- `deliver` sends one claimed row and records the result only while the row is still
  claimed by this sender: a claim that lapsed and was taken over belongs to the new owner,
  whose outcome wins. Failures are retried after `MEETINGDASH_ALERT_RETRY_SECONDS`,
  doubling each time up to an hour; after `MEETINGDASH_ALERT_MAX_ATTEMPTS` the row is
  given up and logged at ERROR.

Delivery is at least once, not exactly once: a relay killed after the receiver answered
2xx and before the outcome was recorded leaves the row claimed; when the lease lapses
another relay (or the same one, restarted) sends it again, with the SAME `webhook-id`
(the row's `webhook_id`, fixed when the alert was enqueued). Receivers dedupe on it, as
the Standard Webhooks specification asks. Email has no such key: a repeated email carries
the same `X-MeetingDash-Alert-Id` header.

The lease must outlive one round of sends (10 s per HTTP attempt, bounded concurrency):
the default 60 s does for the default batch of 20.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta

import httpx
from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from sessions_monitor import telemetry
from sessions_monitor.alerts import channels
from sessions_monitor.alerts.channels import Attempt
from sessions_monitor.models import AlertDelivery, AlertRule, DeliveryStatus

logger = logging.getLogger(__name__)

CONCURRENCY = 10
MAX_RETRY_SECONDS = 3600.0
NOT_CLAIMED = "not sent: this sender no longer holds the claim on the delivery"


def _claim_free(now: datetime) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lte=now)


def claim_due(
    owner: str, *, limit: int = 20, now: datetime | None = None, lease_seconds: float | None = None
) -> list[int]:
    """Claim up to `limit` due deliveries for `owner`, oldest due first; returns their ids.
    The claim lasts `lease_seconds` (default MEETINGDASH_ALERT_CLAIM_SECONDS)."""
    now = now or timezone.now()
    if lease_seconds is None:
        lease_seconds = settings.MEETINGDASH_ALERT_CLAIM_SECONDS
    until = now + timedelta(seconds=lease_seconds)
    due = AlertDelivery.objects.filter(
        _claim_free(now), status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    )
    candidates = list(due.order_by("next_attempt_at", "pk").values_list("pk", flat=True)[:limit])
    return [
        pk
        for pk in candidates
        if due.filter(pk=pk).update(claimed_by=owner, claimed_until=until) == 1
    ]


def retry_delay(attempts: int) -> float:
    """Seconds to wait after the `attempts`-th failed attempt."""
    first = float(settings.MEETINGDASH_ALERT_RETRY_SECONDS)
    delay: float = first * 2 ** min(max(attempts - 1, 0), 30)
    return min(delay, MAX_RETRY_SECONDS)


def _load_claimed(delivery_id: int, owner: str) -> tuple[AlertDelivery, AlertRule | None] | None:
    delivery = AlertDelivery.objects.select_related("rule").filter(pk=delivery_id).first()
    if delivery is None or delivery.status != DeliveryStatus.PENDING:
        return None
    if delivery.claimed_by != owner:
        return None
    return delivery, delivery.rule


def _still_claimed(delivery: AlertDelivery, owner: str) -> QuerySet[AlertDelivery]:
    return AlertDelivery.objects.filter(
        pk=delivery.pk, claimed_by=owner, status=DeliveryStatus.PENDING
    )


def give_up(delivery: AlertDelivery, owner: str, reason: str) -> bool:
    """Give up without sending (the rule is gone or disabled); False if the claim was lost."""
    done = _still_claimed(delivery, owner).update(
        status=DeliveryStatus.GAVE_UP, last_error=reason, claimed_by="", claimed_until=None
    )
    if done:
        channel = delivery.rule.channel if delivery.rule else "none"
        telemetry.alert_attempts.labels(channel, "gave_up").inc()
        logger.error(
            "alerts: gave up delivery %s (rule %s, %s): %s",
            delivery.pk,
            delivery.rule_id or "deleted",
            delivery.kind,
            reason,
        )
    return bool(done)


def record(delivery: AlertDelivery, rule: AlertRule, owner: str, attempt: Attempt) -> str:
    """Store one attempt's outcome; returns delivered, retry, gave_up, or lost (the claim
    was taken over meanwhile: the new owner's outcome counts, this one is dropped)."""
    now = timezone.now()
    attempts = delivery.attempts + 1
    delay = retry_delay(attempts)
    common = {
        "attempts": F("attempts") + 1,
        "last_attempt_at": now,
        "response_code": attempt.response_code,
        "claimed_by": "",
        "claimed_until": None,
    }
    row = _still_claimed(delivery, owner)
    if attempt.ok:
        outcome = "delivered"
        updated = row.update(status=DeliveryStatus.DELIVERED, delivered_at=now, **common)
    elif attempts >= settings.MEETINGDASH_ALERT_MAX_ATTEMPTS:
        outcome = "gave_up"
        updated = row.update(status=DeliveryStatus.GAVE_UP, last_error=attempt.error, **common)
    else:
        outcome = "retry"
        updated = row.update(
            last_error=attempt.error, next_attempt_at=now + timedelta(seconds=delay), **common
        )
    if not updated:
        logger.warning(
            "alerts: delivery %s was taken over by another sender; its outcome wins", delivery.pk
        )
        return "lost"
    telemetry.alert_attempts.labels(rule.channel, outcome).inc()
    if outcome == "gave_up":
        logger.error(
            "alerts: gave up delivery %s (rule %s, %s) after %d attempts: %s",
            delivery.pk,
            rule.pk,
            delivery.kind,
            attempts,
            attempt.error,
        )
    elif outcome == "retry":
        logger.warning(
            "alerts: delivery %s (rule %s) failed, attempt %d of %d, next in %g s: %s",
            delivery.pk,
            rule.pk,
            attempts,
            settings.MEETINGDASH_ALERT_MAX_ATTEMPTS,
            delay,
            attempt.error,
        )
    return outcome


async def deliver(
    delivery_id: int, owner: str, *, client: httpx.AsyncClient | None = None
) -> Attempt:
    """Send one delivery `owner` has claimed and record the outcome.

    A rule deleted or disabled since the alert was enqueued gives the delivery up unsent
    (a test delivery is sent even for a disabled rule: the admin asked for it)."""
    loaded = await database_sync_to_async(_load_claimed)(delivery_id, owner)
    if loaded is None:
        return Attempt(False, None, NOT_CLAIMED)
    delivery, rule = loaded
    if rule is None or (not rule.enabled and not delivery.is_test):
        reason = "the rule was deleted" if rule is None else "the rule was disabled"
        await database_sync_to_async(give_up)(delivery, owner, reason)
        return Attempt(False, None, reason)
    attempt = await channels.send(delivery, rule, client=client)
    await database_sync_to_async(record)(delivery, rule, owner, attempt)
    return attempt


async def send_due_once(
    owner: str, *, limit: int = 20, client: httpx.AsyncClient | None = None
) -> int:
    """One round: claim what is due, send it (at most CONCURRENCY at once), record each
    outcome. Returns how many deliveries were attempted. One bad row is logged and left to
    its lease; it never stops the others."""
    ids: list[int] = await database_sync_to_async(claim_due)(owner, limit=limit)
    if not ids:
        return 0
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(delivery_id: int, http: httpx.AsyncClient) -> None:
        async with gate:
            try:
                await deliver(delivery_id, owner, client=http)
            except Exception:
                logger.exception(
                    "alerts: delivery %s failed unexpectedly; retried when its claim lapses",
                    delivery_id,
                )

    if client is not None:
        await asyncio.gather(*(one(pk, client) for pk in ids))
    else:
        async with channels.new_client() as http:
            await asyncio.gather(*(one(pk, http) for pk in ids))
    return len(ids)
