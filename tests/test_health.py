from __future__ import annotations

import pytest
from django.test import AsyncClient


@pytest.mark.django_db
async def test_it_reports_database_and_channel_layer_healthy() -> None:
    response = await AsyncClient().get("/healthz")

    assert response.status_code == 200
    body = response.json()
    assert body["database"]["ok"] is True
    assert body["channel_layer"]["ok"] is True
