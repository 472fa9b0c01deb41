"""Reads for the alerts pages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db.models import Count, Min, Q
from django.utils import timezone

from sessions_monitor.alerts.rules import filters_in_words, safe_target
from sessions_monitor.models import AlertDelivery, AlertRule, DeliveryStatus, MeetingSession
from sessions_monitor.upstream.events import TERMINAL_STATUSES

RECENT = 50


@dataclass(frozen=True, slots=True)
class RuleRow:
    rule: AlertRule
    filters: str
    target: str
    sent_last_day: int
    failing: int


@dataclass(frozen=True, slots=True)
class Overview:
    rules: list[RuleRow]
    recent: list[AlertDelivery]
    pending: int
    gave_up_last_day: int
    since: datetime


def overview(now: datetime | None = None) -> Overview:
    since = (now or timezone.now()) - timedelta(days=1)
    rules = AlertRule.objects.annotate(
        sent_last_day=Count(
            "deliveries",
            filter=Q(
                deliveries__created_at__gte=since, deliveries__status=DeliveryStatus.DELIVERED
            ),
        ),
        failing=Count(
            "deliveries",
            filter=Q(deliveries__status=DeliveryStatus.PENDING, deliveries__attempts__gt=0),
        ),
    ).order_by("-enabled", "id")
    recent = list(
        AlertDelivery.objects.filter(is_test=False)
        .select_related("rule")
        .order_by("-created_at", "-id")[:RECENT]
    )
    return Overview(
        rules=[
            RuleRow(
                rule, filters_in_words(rule), safe_target(rule), rule.sent_last_day, rule.failing
            )
            for rule in rules
        ],
        recent=recent,
        pending=AlertDelivery.objects.filter(status=DeliveryStatus.PENDING).count(),
        gave_up_last_day=AlertDelivery.objects.filter(
            status=DeliveryStatus.GAVE_UP, last_attempt_at__gte=since
        ).count(),
        since=since,
    )


@dataclass(frozen=True, slots=True)
class AlertFigures:
    stuck: dict[str, int]
    oldest_seconds: dict[str, float]
    pending: int


def alert_figures(now: datetime | None = None) -> AlertFigures:
    """For `/metrics`: stuck sessions and the longest dwell per running status (what an
    outside alert rule on "joining longer than 3 min" needs), and the unsent alerts."""
    now = now or timezone.now()
    running = MeetingSession.objects.filter(ended_at__isnull=True, status_since__isnull=False)
    running = running.exclude(status__in=TERMINAL_STATUSES).exclude(status="")
    stuck = (
        running.filter(stuck_since__isnull=False)
        .values("status")
        .annotate(count=Count("pk"))
        .order_by()
    )
    oldest = running.values("status").annotate(since=Min("status_since")).order_by()
    pending = AlertDelivery.objects.filter(status=DeliveryStatus.PENDING).count()
    return AlertFigures(
        {row["status"]: row["count"] for row in stuck},
        {row["status"]: max(0.0, (now - row["since"]).total_seconds()) for row in oldest},
        pending,
    )
