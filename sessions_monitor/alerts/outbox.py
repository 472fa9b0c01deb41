"""The outbox: alerts written in the transaction of what triggers them.

Every function here runs inside the caller's transaction (`services.record_event`, the
watchdog's): the delivery rows commit with the event, or neither does. `ON CONFLICT DO
NOTHING` on `dedup_key` makes noticing the same episode twice (two relays, a retried write)
raise it once. The toast broadcast for followers goes out after the commit.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import transaction
from django.urls import reverse
from django.utils import timezone

from sessions_monitor import messages, telemetry
from sessions_monitor.alerts.rules import enabled_rules, matches
from sessions_monitor.models import AlertDelivery, AlertRule, AlertTrigger, MeetingSession
from sessions_monitor.presentation import format_duration
from sessions_monitor.selectors import session_summary

logger = logging.getLogger(__name__)

FAILED = "session.failed"
STUCK = "session.stuck"
LOST = "session.lost"
RESOLVED = "session.resolved"
UPSTREAM_DOWN = "upstream.down"
UPSTREAM_RESOLVED = "upstream.resolved"
TEST = "alert.test"

TRIGGER_OF_KIND = {
    FAILED: AlertTrigger.FAILED,
    STUCK: AlertTrigger.STUCK,
    LOST: AlertTrigger.LOST,
    UPSTREAM_DOWN: AlertTrigger.UPSTREAM_DOWN,
}


def new_webhook_id() -> str:
    return "msg_" + secrets.token_urlsafe(18)


def session_url(session_id: str) -> str:
    return settings.MEETINGDASH_PUBLIC_URL + reverse("session-detail", args=[session_id])


def isoformat(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def session_text(kind: str, session: MeetingSession, *, seconds: float | None = None) -> str:
    """What happened, in one sentence: the toast, the Slack text, the email subject."""
    who = f"{session.bot_name or 'The bot'} ({session.session_id})"
    if kind == FAILED:
        reason = session.error_message or session.error_code or "no reason given"
        code = f" [{session.error_code}]" if session.error_code else ""
        return f"{who} failed{code}: {reason}"
    if kind == STUCK:
        lasted = f" for {format_duration(seconds)}" if seconds is not None else ""
        return f"{who} is stuck in {session.status!r}{lasted}"
    if kind == LOST:
        return f"{who}: Meeting Buddy no longer knows this session (lost contact)"
    if kind == RESOLVED:
        return f"{who} moved on: now {session.status!r}"
    return f"{who}: {kind}"


def session_payload(
    kind: str, session: MeetingSession, rule: AlertRule | None, *, text: str, at: datetime
) -> dict[str, Any]:
    """The webhook body (interfaces.md, "Alert deliveries"); Slack and email are made from it."""
    return {
        "type": kind,
        "timestamp": isoformat(at),
        "data": {
            "session_id": session.session_id,
            "rule": _rule_ref(rule),
            "status": session.status,
            "previous_status": session.previous_status,
            "error_code": session.error_code,
            "error_message": session.error_message,
            "bot_name": session.bot_name,
            "platform": session.platform,
            "status_since": isoformat(session.status_since) if session.status_since else None,
            "url": session_url(session.session_id),
            "text": text,
        },
    }


def _rule_ref(rule: AlertRule | None) -> dict[str, Any] | None:
    if rule is None:
        return None
    return {"id": rule.pk, "name": str(rule), "trigger": rule.trigger}


def enqueue_session_alert(
    kind: str,
    session: MeetingSession,
    *,
    rules: Iterable[AlertRule] | None = None,
    episode_at: datetime | None = None,
    seconds: float | None = None,
    notify: bool = True,
) -> int:
    """One delivery per matching rule (`rules`: these only; default: every enabled rule of
    the kind's trigger), then, after the commit, one toast broadcast. Returns how many
    delivery rows were asked for (conflicting ones are silently the same alert)."""
    now = timezone.now()
    text = session_text(kind, session, seconds=seconds)
    candidates = enabled_rules(TRIGGER_OF_KIND[kind]) if rules is None else list(rules)
    episode = isoformat(episode_at) if episode_at else ""
    rows = [
        AlertDelivery(
            rule=rule,
            rule_name=str(rule)[:200],
            session=session,
            session_ref=session.session_id,
            kind=kind,
            dedup_key=f"{rule.pk}:{kind}:{session.session_id}:{episode}",
            webhook_id=new_webhook_id(),
            episode_at=episode_at,
            payload=session_payload(kind, session, rule, text=text, at=now),
            created_at=now,
            next_attempt_at=now,
        )
        for rule in candidates
        if matches(rule, session)
    ]
    if rows:
        AlertDelivery.objects.bulk_create(rows, ignore_conflicts=True)
        telemetry.alerts_enqueued.labels(kind).inc(len(rows))
    if notify:
        toast = messages.alert_message(
            kind=kind.removeprefix("session."),
            session=session_summary(session),
            text=text,
            at=isoformat(now),
        )
        transaction.on_commit(lambda: broadcast_alert(toast))
    return len(rows)


def enqueue_resolved(session: MeetingSession, *, episode_at: datetime) -> int:
    """A stuck session moved on: one `session.resolved` per rule that alerted its episode."""
    alerted = AlertDelivery.objects.filter(
        session=session, kind=STUCK, episode_at=episode_at, rule__isnull=False
    ).select_related("rule")
    rules = [delivery.rule for delivery in alerted if delivery.rule is not None]
    return enqueue_session_alert(RESOLVED, session, rules=rules, episode_at=episode_at)


def upstream_payload(
    kind: str, rule: AlertRule, *, since: datetime, at: datetime
) -> dict[str, Any]:
    down = kind == UPSTREAM_DOWN
    lasted = format_duration((at - since).total_seconds())
    text = (
        f"Meeting Buddy has been unreachable for {lasted}"
        if down
        else f"Meeting Buddy is reachable again (it was down for {lasted})"
    )
    return {
        "type": kind,
        "timestamp": isoformat(at),
        "data": {
            "session_id": None,
            "rule": _rule_ref(rule),
            "status": "down" if down else "up",
            "error_code": "",
            "error_message": "",
            "since": isoformat(since),
            "url": settings.MEETINGDASH_PUBLIC_URL + reverse("healthz"),
            "text": text,
        },
    }


def enqueue_upstream_alert(kind: str, rule: AlertRule, *, since: datetime) -> int:
    now = timezone.now()
    row = AlertDelivery(
        rule=rule,
        rule_name=str(rule)[:200],
        kind=kind,
        dedup_key=f"{rule.pk}:{kind}::{isoformat(since)}",
        webhook_id=new_webhook_id(),
        episode_at=since,
        payload=upstream_payload(kind, rule, since=since, at=now),
        created_at=now,
        next_attempt_at=now,
    )
    AlertDelivery.objects.bulk_create([row], ignore_conflicts=True)
    telemetry.alerts_enqueued.labels(kind).inc()
    return 1


def enqueue_test(rule: AlertRule) -> AlertDelivery:
    """The admin's "send test": a delivery like any other, marked as a test."""
    now = timezone.now()
    payload = {
        "type": TEST,
        "timestamp": isoformat(now),
        "data": {
            "session_id": None,
            "rule": _rule_ref(rule),
            "status": "",
            "error_code": "",
            "error_message": "",
            "url": settings.MEETINGDASH_PUBLIC_URL + "/",
            "text": f"Test alert from MeetingDash for the rule {rule}",
        },
    }
    webhook_id = new_webhook_id()
    return AlertDelivery.objects.create(
        rule=rule,
        rule_name=str(rule)[:200],
        kind=TEST,
        dedup_key=f"{rule.pk}:{TEST}:{webhook_id}",
        webhook_id=webhook_id,
        payload=payload,
        is_test=True,
        created_at=now,
        next_attempt_at=now,
    )


def broadcast_alert(message: messages.AlertMessage) -> None:
    """After the commit: to every process's hub, for followers' toasts. Best effort (the
    alert itself is in the outbox and on the session page whatever happens here)."""
    layer = get_channel_layer()
    if layer is None:
        return
    try:
        async_to_sync(layer.group_send)(messages.ALERTS_GROUP, dict(message))
    except Exception as exc:
        logger.warning("alerts: could not broadcast a toast (%s)", type(exc).__name__)
