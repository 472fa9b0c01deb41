"""The watchdog: sessions stuck in one status, and the upstream down for the deployment.

It runs in the relay, and in scaled mode in one relay at a time (`Leases.lead`): the
leadership makes it cheap, the outbox's `dedup_key` makes it correct (two watchdogs noticing
one episode still raise one alert per rule).

Stuck: a session whose link is live (we know its status is current: a session we lost the
stream of is not called stuck on stale data; its link failure shows already) and that has
been in a non-terminal status longer than a threshold. Each stuck rule has its own
threshold; `MEETINGDASH_STUCK_AFTER` gives the dashboard's (the "stuck" badge and the
followers' toasts) for statuses no rule covers sooner. The first threshold crossed flags the
session (`stuck_since` = its `status_since`) and toasts its followers; every rule whose
threshold is crossed gets one alert for the episode; `services` sends the resolution when
the session moves on.

Upstream down: the watchdog probes the upstream's session list each check while any
upstream-down rule exists; down for longer than a rule's threshold raises one alert per
outage (an outage already alerted and not yet resolved is not alerted again, even by a new
leader), and one resolution when it is reachable again.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from sessions_monitor.alerts import outbox
from sessions_monitor.alerts.rules import enabled_rules, matches
from sessions_monitor.models import (
    AlertDelivery,
    AlertRule,
    AlertTrigger,
    MeetingSession,
    StreamState,
)
from sessions_monitor.selectors import session_summary
from sessions_monitor.services import broadcast_sync
from sessions_monitor.upstream.events import TERMINAL_STATUSES

logger = logging.getLogger(__name__)

LEADER_ROLE = "alerts-watchdog"
BATCH = 200


@dataclass
class CheckReport:
    leader: bool = False
    flagged: list[str] = field(default_factory=list)
    stuck_alerts: int = 0
    upstream_alerts: int = 0


# --- stuck sessions (sync: runs in a database thread) ---------------------------------------


def _candidates(status: str, cutoff: datetime) -> QuerySet[MeetingSession]:
    return MeetingSession.objects.filter(
        status=status,
        ended_at__isnull=True,
        status_since__lte=cutoff,
        stream_state=StreamState.LIVE,
    )


def _ids(queryset: QuerySet[MeetingSession]) -> list[str]:
    return list(queryset.order_by("status_since").values_list("session_id", flat=True)[:BATCH])


def _matching_ids(rule: AlertRule, queryset: QuerySet[MeetingSession]) -> list[str]:
    """The rule's filters decide, in Python (a bot name pattern has no portable SQL form):
    over every candidate, so a crowd of sessions the rule does not match can never hide the
    one it does behind a batch limit. Candidates are running sessions in one status: few."""
    rows = queryset.order_by("status_since").only(
        "session_id", "bot_name", "platform", "error_code"
    )
    return [session.session_id for session in rows.iterator() if matches(rule, session)][:BATCH]


def _flag_and_alert(
    session_id: str, status: str, cutoff: datetime, rules: list[AlertRule], now: datetime
) -> tuple[bool, int]:
    """In one transaction with the session row locked: still stuck as found? Flag it (if
    not yet) and enqueue the rules' alerts. Returns (flagged now, alerts asked for)."""
    with transaction.atomic():
        session = MeetingSession.objects.select_for_update().filter(pk=session_id).first()
        if (
            session is None
            or session.status != status
            or session.status in TERMINAL_STATUSES
            or session.status_since is None
            or session.status_since > cutoff
        ):
            return False, 0
        flag = session.stuck_since != session.status_since
        if flag:
            session.stuck_since = session.status_since
            session.save(update_fields=["stuck_since"])
        seconds = (now - session.status_since).total_seconds()
        asked = outbox.enqueue_session_alert(
            outbox.STUCK,
            session,
            rules=rules,
            episode_at=session.status_since,
            seconds=seconds,
            notify=flag,
        )
        if flag:
            summary = session_summary(session)
            transaction.on_commit(lambda: broadcast_sync(None, summary=summary))
        return flag, asked


def check_stuck(
    now: datetime | None = None, *, stuck_after: Mapping[str, float] | None = None
) -> CheckReport:
    """One pass over every threshold; idempotent (run it as often as you like)."""
    now = now or timezone.now()
    stuck_after = settings.MEETINGDASH_STUCK_AFTER if stuck_after is None else stuck_after
    report = CheckReport(leader=True)
    for rule in enabled_rules(AlertTrigger.STUCK):
        if not rule.status or not rule.longer_than_seconds:
            continue
        cutoff = now - timedelta(seconds=rule.longer_than_seconds)
        candidates = _candidates(rule.status, cutoff)
        alerted = AlertDelivery.objects.filter(
            rule=rule,
            session=OuterRef("pk"),
            kind=outbox.STUCK,
            episode_at=OuterRef("status_since"),
        )
        if rule.platform:
            candidates = candidates.filter(platform__iexact=rule.platform)
        for session_id in _matching_ids(rule, candidates.exclude(Exists(alerted))):
            flagged, asked = _flag_and_alert(session_id, rule.status, cutoff, [rule], now)
            report.stuck_alerts += asked
            if flagged:
                report.flagged.append(session_id)
    for status, seconds in stuck_after.items():
        cutoff = now - timedelta(seconds=seconds)
        unflagged = _candidates(status, cutoff).filter(stuck_since__isnull=True)
        for session_id in _ids(unflagged):
            flagged, _ = _flag_and_alert(session_id, status, cutoff, [], now)
            if flagged:
                report.flagged.append(session_id)
    return report


# --- the upstream, for the whole deployment ---------------------------------------------------


def _open_outage(rule: AlertRule) -> AlertDelivery | None:
    """The rule's last down alert that has no resolution yet."""
    resolved = AlertDelivery.objects.filter(
        rule=rule, kind=outbox.UPSTREAM_RESOLVED, episode_at=OuterRef("episode_at")
    )
    return (
        AlertDelivery.objects.filter(rule=rule, kind=outbox.UPSTREAM_DOWN)
        .exclude(Exists(resolved))
        .order_by("-episode_at")
        .first()
    )


def upstream_state_changed(down_since: datetime | None, now: datetime | None = None) -> int:
    """Given since when the upstream is unreachable (None: it is reachable), raise or resolve
    each upstream-down rule's alert. Returns how many deliveries were asked for."""
    now = now or timezone.now()
    asked = 0
    for rule in enabled_rules(AlertTrigger.UPSTREAM_DOWN):
        with transaction.atomic():
            open_outage = _open_outage(rule)
            if down_since is None:
                if open_outage is not None and open_outage.episode_at is not None:
                    asked += outbox.enqueue_upstream_alert(
                        outbox.UPSTREAM_RESOLVED, rule, since=open_outage.episode_at
                    )
                continue
            threshold = timedelta(seconds=rule.longer_than_seconds or 0)
            if open_outage is None and now - down_since >= threshold:
                asked += outbox.enqueue_upstream_alert(outbox.UPSTREAM_DOWN, rule, since=down_since)
    return asked


def has_upstream_rules() -> bool:
    return AlertRule.objects.filter(enabled=True, trigger=AlertTrigger.UPSTREAM_DOWN).exists()


# --- the step the relay calls -----------------------------------------------------------------


class Watchdog:
    """`check_once` is the step; `lead` decides whether this relay is the one that checks."""

    def __init__(
        self,
        *,
        lead: Callable[[], Awaitable[bool]],
        probe_upstream: Callable[[], Awaitable[object]],
        stuck_after: Mapping[str, float] | None = None,
    ) -> None:
        self.lead = lead
        self.probe_upstream = probe_upstream
        self.stuck_after = stuck_after
        self.upstream_down_since: datetime | None = None

    async def check_once(self, now: datetime | None = None) -> CheckReport:
        try:
            leader = await self.lead()
        except Exception as exc:
            # Redis unreachable: nobody can be sure to lead; the dedup keys keep it correct
            # if two watchdogs check, so check rather than let stuck sessions pass unseen.
            logger.warning("alerts: cannot renew the watchdog's leadership (%s)", exc)
            leader = True
        if not leader:
            return CheckReport(leader=False)
        report: CheckReport = await database_sync_to_async(check_stuck)(
            now, stuck_after=self.stuck_after
        )
        if await database_sync_to_async(has_upstream_rules)():
            report.upstream_alerts = await self._check_upstream(now)
        return report

    async def _check_upstream(self, now: datetime | None) -> int:
        try:
            await self.probe_upstream()
        except Exception as exc:
            if self.upstream_down_since is None:
                self.upstream_down_since = now or timezone.now()
                logger.warning("alerts: the upstream is unreachable (%s)", type(exc).__name__)
        else:
            self.upstream_down_since = None
        asked: int = await database_sync_to_async(upstream_state_changed)(
            self.upstream_down_since, now
        )
        return asked
