from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import CHROMIUM_ARGS, CHROMIUM_PATH, service_missing


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """A real headless Chromium (Debian's package) driven by Playwright."""
    if not Path(CHROMIUM_PATH).exists():
        service_missing(f"Chromium not found at {CHROMIUM_PATH} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.getenv("REDIS_URL", "")
    if not url:
        service_missing("REDIS_URL is not set")
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=2).ping()
    except redis.RedisError as exc:
        service_missing(f"Redis at REDIS_URL is unreachable: {type(exc).__name__}")
    return url


@pytest.fixture
def fresh_channel_layer() -> Iterator[Any]:
    """A new channel layer instance for this test (layers bind to the event loop they first
    ran on, and pytest-asyncio gives each test its own loop)."""
    from channels.layers import channel_layers, get_channel_layer

    channel_layers.backends.clear()
    yield get_channel_layer()
    channel_layers.backends.clear()
