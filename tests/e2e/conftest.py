"""Fixtures of the browser tests: the dashboard (`dash`) and a fresh browser context."""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext

from sessions_monitor.simulator.control import SimulatorControl
from tests.e2e.dash import Dash, dash_env, new_context, prepare_database, serve
from tests.support import free_port


@pytest.fixture(scope="module")
def dash() -> Iterator[Dash]:
    """`serve` with the embedded simulator (control API on) and its own SQLite file."""
    with tempfile.TemporaryDirectory(prefix="meetingdash-e2e-") as tmp:
        db_path = Path(tmp) / "db.sqlite3"
        env = dash_env(db_path)
        prepare_database(env)
        port = free_port()
        with serve(env, port) as process:
            control = SimulatorControl(process.base_url + "/_simulator")
            try:
                yield Dash(process.base_url, db_path, control, process)
            finally:
                control.close()


@pytest_asyncio.fixture(loop_scope="session")
async def context(chromium: Browser) -> AsyncIterator[BrowserContext]:
    context = await new_context(chromium)
    yield context
    await context.close()


@pytest_asyncio.fixture(loop_scope="session", params=["light", "dark"])
async def scheme_context(
    request: pytest.FixtureRequest, chromium: Browser
) -> AsyncIterator[BrowserContext]:
    """A browser context in the light, then the dark colour scheme."""
    context = await new_context(chromium, color_scheme=request.param)
    yield context
    await context.close()
