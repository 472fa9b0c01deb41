from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sessions_monitor.simulator.control import SimulatorControl
from tests.support import (
    CHROMIUM_ARGS,
    CHROMIUM_PATH,
    ServerProcess,
    free_port,
    run_server,
    service_missing,
)


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
        # Playwright's sync API needs its own loop marked as running while it works;
        # the hooks below may have unmarked it (when the last test was not a browser test).
        asyncio._set_running_loop(browser._loop)
        browser.close()


@contextlib.contextmanager
def _without_playwright_loop(item: pytest.Item) -> Iterator[None]:
    """Playwright's sync API leaves its loop marked as running in this thread between calls,
    which makes every later asyncio.run()/pytest-asyncio test fail with "cannot be called from
    a running event loop". Unmark it around each non-browser test, restore it afterwards."""
    saved = asyncio._get_running_loop()
    uses_browser = "chromium" in getattr(item, "fixturenames", ())
    if saved is None or uses_browser or item.get_closest_marker("browser") is not None:
        yield
        return
    asyncio._set_running_loop(None)
    try:
        yield
    finally:
        asyncio._set_running_loop(saved)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Iterator[None]:
    with _without_playwright_loop(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    with _without_playwright_loop(item):
        yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    with _without_playwright_loop(item):
        yield


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


# --- upstream simulator (SIM) -----------------------------------------------------------


@dataclass
class SimulatorServer:
    """A `simulate_upstream` subprocess on a real socket, and its control client."""

    base_url: str
    control: SimulatorControl
    token: str | None
    process: ServerProcess

    def url(self, path: str) -> str:
        return self.base_url + path

    def stream_url(self, session_id: str) -> str:
        return f"{self.base_url}/v1/meeting-buddy/sessions/{session_id}/stream"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def log(self) -> str:
        return self.process.log()


def _simulator_server(*extra: str, token: str | None = None) -> Iterator[SimulatorServer]:
    port = free_port()
    args = ["manage.py", "simulate_upstream", "--port", str(port), "--keepalive", "1"]
    args += ["--sessions", "0", "--seed", "1", "--no-arrivals", "--control", *extra]
    if token:
        args += ["--token", token]
    with (
        run_server(args, port=port, ready_path="/_control/stats") as process,
        SimulatorControl(process.base_url) as control,
    ):
        yield SimulatorServer(process.base_url, control, token, process)


@pytest.fixture
def simulator_server() -> Iterator[SimulatorServer]:
    """The upstream simulator: no token, keepalive 1 s, no sessions until you create them."""
    yield from _simulator_server()


@pytest.fixture
def simulator_server_with_token() -> Iterator[SimulatorServer]:
    """Like `simulator_server`, but every upstream route needs `Bearer test-token`."""
    yield from _simulator_server(token="test-token")


@pytest.fixture(scope="module")
def simulator_server_module() -> Iterator[SimulatorServer]:
    """One `simulator_server` per test module: use unique session ids and reset faults."""
    yield from _simulator_server()


# --- private servers that fault tests may restart ----------------------------------------


@pytest.fixture
def private_redis() -> Iterator[Any]:
    """A Redis server of this test's own (a test may restart or kill it)."""
    from drill.services import PrivateRedis, ServiceMissing

    try:
        server = PrivateRedis()
    except ServiceMissing as exc:
        service_missing(str(exc))
    server.start()
    yield server
    server.close()
