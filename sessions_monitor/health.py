"""Health checks behind /healthz: each returns (ok, detail) and never raises."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection

logger = logging.getLogger(__name__)


def _check_database_sync() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:  # any driver error means "not healthy", never a crash
        logger.warning("health: database check failed: %s", type(exc).__name__)
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True, "vendor": connection.vendor}


async def check_database() -> dict[str, Any]:
    return await sync_to_async(_check_database_sync, thread_sensitive=True)()


async def check_channel_layer(wait_seconds: float = 2.0) -> dict[str, Any]:
    layer = get_channel_layer()
    if layer is None:
        return {"ok": False, "error": "no channel layer configured"}
    backend = type(layer).__name__
    try:
        channel = await layer.new_channel("healthz.")
        probe = {"type": "healthz.probe", "nonce": uuid.uuid4().hex}
        await asyncio.wait_for(layer.send(channel, probe), wait_seconds)
        received = await asyncio.wait_for(layer.receive(channel), wait_seconds)
    except Exception as exc:
        logger.warning("health: channel layer check failed: %s", type(exc).__name__)
        return {"ok": False, "backend": backend, "error": type(exc).__name__}
    return {"ok": received.get("nonce") == probe["nonce"], "backend": backend}
