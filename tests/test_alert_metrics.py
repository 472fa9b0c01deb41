"""Figures for alerting from outside: outcome counters and dwell histograms in `/metrics`,
and the example Prometheus rules in docs/ naming only figures `/metrics` has."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from sessions_monitor.models import MeetingSession
from sessions_monitor.services import record_event
from sessions_monitor.upstream import StatusChanged

pytestmark = pytest.mark.django_db(transaction=True)

RULES = Path(__file__).resolve().parent.parent / "docs" / "prometheus-alerts.yml"
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def play(session_id: str, *steps: tuple[str, int, str]) -> None:
    """(status, seconds after T0, error code) as upstream status events."""
    previous = None
    for status, seconds, code in steps:
        record_event(
            session_id=session_id,
            event=StatusChanged(
                session_id, status, previous, T0 + timedelta(seconds=seconds), code or None
            ),
            broadcast=False,
        )
        previous = status


async def scrape(settings) -> str:
    settings.MEETINGDASH_METRICS_TOKEN = "scrape"
    response = await AsyncClient().get("/metrics", headers={"Authorization": "Bearer scrape"})
    assert response.status_code == 200
    return response.content.decode()


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        metric, _, value = line.rpartition(" ")
        base, _, rest = metric.partition("{")
        found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if base == name and found == wanted:
            return float(value)
    return 0.0


async def test_outcomes_and_dwell_times_are_counted(settings) -> None:
    before = await scrape(settings)
    failed, completed = f"mbsess_m{uuid.uuid4().hex[:8]}", f"mbsess_m{uuid.uuid4().hex[:8]}"
    await sync_to_async(MeetingSession.objects.create)(session_id=failed, platform="zoom")
    await sync_to_async(play)(
        failed, ("initializing", 0, ""), ("joining", 5, ""), ("failed", 200, "JOIN_TIMEOUT")
    )
    await sync_to_async(play)(completed, ("joining", 0, ""), ("completed", 30, ""))
    after = await scrape(settings)

    outcome = "meetingdash_session_outcomes_total"
    failed_labels = {"status": "failed", "error_code": "JOIN_TIMEOUT", "platform": "zoom"}
    assert sample(after, outcome, **failed_labels) - sample(before, outcome, **failed_labels) == 1
    done = {"status": "completed", "error_code": "", "platform": ""}
    assert sample(after, outcome, **done) - sample(before, outcome, **done) == 1
    # joining lasted 195 s (failed) and 30 s (completed): one in the 180-300 s bucket.
    dwell = "meetingdash_status_dwell_seconds_bucket"

    def grew(le: str) -> float:
        return sample(after, dwell, status="joining", le=le) - sample(
            before, dwell, status="joining", le=le
        )

    assert (grew("30.0"), grew("180.0"), grew("300.0")) == (1, 1, 2)


async def test_an_upstream_error_code_cannot_grow_the_series(settings) -> None:
    session_id = f"mbsess_m{uuid.uuid4().hex[:8]}"
    await sync_to_async(play)(session_id, ("joining", 0, ""), ("failed", 1, "no such code!<>"))
    text = await scrape(settings)
    assert 'error_code="no such code!<>"' not in text
    assert (
        sample(
            text,
            "meetingdash_session_outcomes_total",
            status="failed",
            error_code="OTHER",
            platform="",
        )
        >= 1
    )


async def test_running_sessions_oldest_dwell_is_a_gauge(settings) -> None:
    session_id = f"mbsess_m{uuid.uuid4().hex[:8]}"
    await sync_to_async(play)(session_id, ("joining", 0, ""))
    text = await scrape(settings)
    # T0 is in the past: at least as long ago as now - T0.
    assert sample(text, "meetingdash_status_oldest_seconds", status="joining") > 3600
    assert "meetingdash_alerts_pending" in text


async def test_the_example_prometheus_rules_name_only_figures_we_expose(settings) -> None:
    session_id = f"mbsess_m{uuid.uuid4().hex[:8]}"
    await sync_to_async(play)(session_id, ("joining", 0, ""), ("failed", 1, "JOIN_TIMEOUT"))
    exposed = set(re.findall(r"^# TYPE (\S+) (\S+)", await scrape(settings), re.M))
    names = {name for name, _ in exposed}
    names |= {f"{name}_bucket" for name, kind in exposed if kind == "histogram"}
    rules = yaml.safe_load(RULES.read_text())["groups"]
    expressions = [rule["expr"] for group in rules for rule in group["rules"]]
    assert len(expressions) >= 8
    used = {name for expr in expressions for name in re.findall(r"\bmeetingdash_\w+", expr)}
    assert used and used <= names, used - names
