from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from sessions_monitor.simulator.control import SimulatorControl
from tests.alert_receivers import smtp_server, webhook_receiver  # noqa: F401
from tests.support import (
    CHROMIUM_ARGS,
    CHROMIUM_PATH,
    ServerProcess,
    free_port,
    run_server,
    service_missing,
)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def chromium() -> AsyncIterator[Browser]:
    """A real headless Chromium (Debian's package) driven by Playwright's async API.

    Launched once per run, in the session's event loop; every test that uses it runs in that
    loop too (see `pytest_collection_modifyitems`)."""
    if shutil.which(CHROMIUM_PATH) is None:
        service_missing(f"Chromium not found at {CHROMIUM_PATH} (apt-get install chromium)")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM_PATH, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        await browser.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Playwright objects belong to the loop they were made in: tests using the browser run
    in the session's loop, the one `chromium` was launched in."""
    for item in items:
        if "chromium" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.asyncio(loop_scope="session"), append=False)


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


HUB_RELEASE_SECONDS = 10.0


def _new_channel_layer() -> Any:
    from channels.layers import channel_layers, get_channel_layer

    channel_layers.backends.clear()
    return get_channel_layer()


@pytest.fixture
async def fresh_channel_layer() -> AsyncIterator[Any]:
    """A new channel layer instance for this test (layers bind to the event loop they first
    ran on, and pytest-asyncio gives each test its own loop). On teardown, this loop's hub
    closes its subscriptions and leaves its groups before the loop closes: a group release
    still running on Redis when the loop closes hangs the teardown."""
    from channels.layers import channel_layers

    from sessions_monitor.hub import get_hub

    layer = _new_channel_layer()
    yield layer
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(HUB_RELEASE_SECONDS):
            await get_hub().close()
    channel_layers.backends.clear()


@pytest.fixture
def sync_channel_layer() -> Iterator[Any]:
    """A new channel layer for a synchronous test (it runs its own loops)."""
    from channels.layers import channel_layers

    yield _new_channel_layer()
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


UPSTREAM_TOKEN = "test-token"


@pytest.fixture(scope="module")
def token_simulator() -> Iterator[SimulatorServer]:
    """One simulator needing `Bearer test-token` per test module (`upstream` resets its faults)."""
    yield from _simulator_server(token=UPSTREAM_TOKEN)


@pytest.fixture
def upstream(token_simulator: SimulatorServer, settings: Any, fresh_channel_layer: Any) -> Any:
    """`token_simulator` as this process's upstream (what the control service talks to)."""
    settings.MEETINGBUDDY_API_URL = token_simulator.base_url
    settings.MEETINGBUDDY_API_TOKEN = UPSTREAM_TOKEN
    token_simulator.control.reset_faults()
    return token_simulator


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
