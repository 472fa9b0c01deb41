from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import AsyncClient

from sessions_monitor.services import record_event
from sessions_monitor.upstream import StatusChanged

pytestmark = pytest.mark.django_db(transaction=True)


async def test_metrics_need_staff_or_the_metrics_token(settings) -> None:
    settings.MEETINGDASH_METRICS_TOKEN = "metrics-secret"
    client = AsyncClient()

    assert (await client.get("/metrics")).status_code == 403
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403
    ok = await client.get("/metrics", headers={"Authorization": "Bearer metrics-secret"})
    assert ok.status_code == 200
    assert ok["Content-Type"].startswith("text/plain; version=0.0.4")

    staff = await User.objects.acreate(username="ops", is_staff=True)
    await client.aforce_login(staff)
    assert (await client.get("/metrics")).status_code == 200


async def test_metrics_count_recorded_events(settings) -> None:
    from asgiref.sync import sync_to_async

    settings.MEETINGDASH_METRICS_TOKEN = "t"
    session_id = "mbsess_metrics1"
    for status in ("joining", "active", "active"):
        await sync_to_async(record_event)(
            session_id=session_id,
            event=StatusChanged(session_id, status, status, None),
            broadcast=False,
        )

    body = (await AsyncClient().get("/metrics", headers={"Authorization": "Bearer t"})).content
    text = body.decode()
    assert "# TYPE meetingdash_events_recorded_total counter" in text
    assert 'meetingdash_events_recorded_total{kind="status"}' in text
    assert "meetingdash_events_deduplicated_total" in text
    assert "meetingdash_relay_running 0" in text
    assert 'meetingdash_hub_feeds{state="down"} 0.0' in text
