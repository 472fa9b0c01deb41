"""Fixtures of the browser tests: the dashboard (`dash`) and a fresh browser context."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext

from tests.e2e.dash import Dash, new_context, running_dash


@pytest.fixture(scope="module")
def dash() -> Iterator[Dash]:
    """`serve` with the embedded simulator (control API on) and its own SQLite file."""
    with running_dash("meetingdash-e2e-") as dash:
        yield dash


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
