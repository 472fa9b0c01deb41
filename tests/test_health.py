from __future__ import annotations

from typing import Any

import pytest
from django.test import AsyncClient


@pytest.mark.django_db(transaction=True)
async def test_it_reports_database_and_channel_layer_healthy(admin_user: Any) -> None:
    client = AsyncClient()
    await client.aforce_login(admin_user)
    response = await client.get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["database"]["ok"] is True
    assert body["channel_layer"]["ok"] is True


@pytest.mark.django_db
async def test_anonymous_callers_get_the_overall_status_only() -> None:
    response = await AsyncClient().get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"ok": True}


@pytest.mark.django_db
async def test_the_metrics_token_gets_the_detail(settings: Any) -> None:
    settings.MEETINGDASH_METRICS_TOKEN = "metrics-secret"
    wrong = await AsyncClient().get("/healthz", headers={"Authorization": "Bearer nope"})
    right = await AsyncClient().get("/healthz", headers={"Authorization": "Bearer metrics-secret"})

    assert set(wrong.json()) == {"ok"}
    assert {"database", "channel_layer", "relay"} <= set(right.json())
