"""Transcripts through real processes: a simulator (fast clock), `serve` with its embedded
relay, detail-page websockets and a real Chromium.

- However many pages watch a session, the upstream's transcript is polled once per interval:
  the poller lives with the relay's stream, not with viewers.
- A live page's transcript grows without a reload.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from tests.conftest import SimulatorServer, _simulator_server
from tests.e2e.dash import new_context, screenshot
from tests.e2e.relay_stack import RelayStack, manage, relay_stack
from tests.support import eventually

POLL_SECONDS = 0.5
VIEWERS = 5
SEGMENT = re.compile(r'<li class="segment" id="segment-(mbtrans_[^"]+)"')


@pytest.fixture(scope="module")
def fast_simulator() -> Iterator[SimulatorServer]:
    yield from _simulator_server("--speed", "10")  # a transcript slot every 0.4 s


@pytest.fixture(scope="module")
def stack(fast_simulator: SimulatorServer, tmp_path_factory: Any) -> Iterator[RelayStack]:
    with relay_stack(
        fast_simulator,
        tmp_path_factory.mktemp("transcripts-e2e"),
        MEETINGDASH_TRANSCRIPT_POLL_SECONDS=str(POLL_SECONDS),
        MEETINGDASH_RELAY_RESCAN_SECONDS="0.3",
    ) as running:
        yield running


def live_session(stack: RelayStack) -> str:
    """A session in its meeting with two people talking, followed by the stack's relay."""
    session_id = stack.new_session(bot_name="Transcribing bot")
    control = stack.simulator.control
    control.emit(session_id, status="active")
    control.emit(session_id, join="Alice Johnson")
    control.emit(session_id, join="Zoë Müller")
    manage(["watch_session", session_id], stack.env)
    stack.wait_upstream_streams(session_id)
    return session_id


def polls(stack: RelayStack, session_id: str) -> int:
    return int(stack.simulator.control.stats()["transcript_requests"].get(session_id, 0))


def stored_segments(stack: RelayStack, session_id: str) -> int:
    rows = stack.query(
        "SELECT COUNT(*) FROM sessions_monitor_transcriptsegment WHERE session_id = ?",
        session_id,
    )
    return int(rows[0][0])


def session_cookie(stack: RelayStack) -> str:
    """Log in as alice with the real login form; the `Cookie:` header a browser would send."""
    with httpx.Client(base_url=stack.base_url, timeout=10) as browser:
        form = browser.get("/accounts/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert csrf is not None
        answer = browser.post(
            "/accounts/login/",
            data={
                "username": "alice",
                "password": "alice-password-123",
                "csrfmiddlewaretoken": csrf.group(1),
            },
            headers={"Referer": stack.base_url + "/accounts/login/"},
        )
        assert answer.status_code in (200, 302), answer.text
        return "; ".join(f"{name}={value}" for name, value in browser.cookies.items())


class Viewer:
    """One detail page's socket: sends the hello, collects the segment ids it is sent."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.segments: list[str] = []
        self.task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        await self.socket.send(json.dumps({"after": 0}))
        async for frame in self.socket:
            self.segments += SEGMENT.findall(str(frame))

    async def close(self) -> None:
        self.task.cancel()
        await self.socket.close()


async def open_viewers(stack: RelayStack, session_id: str, count: int) -> list[Viewer]:
    cookie = await asyncio.to_thread(session_cookie, stack)
    url = stack.base_url.replace("http://", "ws://") + f"/ws/sessions/{session_id}/"
    headers = {"Cookie": cookie}
    sockets = [
        await connect(url, additional_headers=headers, origin=Origin(stack.base_url))
        for _ in range(count)
    ]
    return [Viewer(socket) for socket in sockets]


async def test_one_poll_per_interval_however_many_pages_watch(stack: RelayStack) -> None:
    session_id = await asyncio.to_thread(live_session, stack)
    await eventually(lambda: stored_segments(stack, session_id) > 0, what="a first segment")
    viewers = await open_viewers(stack, session_id, VIEWERS)
    try:
        await eventually(lambda: all(v.segments for v in viewers), what="every page's segments")
        seen = [len(v.segments) for v in viewers]
        before, started = await asyncio.to_thread(polls, stack, session_id), time.monotonic()

        # Every page keeps receiving new segments meanwhile: the viewers are really live.
        await eventually(
            lambda: all(len(v.segments) >= n + 15 for v, n in zip(viewers, seen, strict=True)),
            seconds=20,
            what="fifteen more segments on every page",
        )
        after, ended = await asyncio.to_thread(polls, stack, session_id), time.monotonic()
    finally:
        for viewer in viewers:
            await viewer.close()

    intervals = (ended - started) / POLL_SECONDS
    assert intervals >= 8
    assert intervals - 1 <= after - before <= intervals + 1, (after - before, intervals)
    # Each page got each segment once, the same ones, in the stored order.
    assert all(len(v.segments) == len(set(v.segments)) for v in viewers)
    shortest = min(len(v.segments) for v in viewers)
    assert len({tuple(v.segments[:shortest]) for v in viewers}) == 1


@pytest.mark.browser
async def test_a_live_pages_transcript_grows_without_a_reload(
    stack: RelayStack, chromium: Browser
) -> None:
    session_id = await asyncio.to_thread(live_session, stack)
    context = await new_context(chromium)
    page = await context.new_page()
    try:
        await page.goto(f"{stack.base_url}/accounts/login/?next=/sessions/{session_id}/")
        await page.fill("#id_username", "alice")
        await page.fill("#id_password", "alice-password-123")
        await page.click("form.form button[type=submit]")
        await page.wait_for_url(f"{stack.base_url}/sessions/{session_id}/")
        await page.locator('#browser-link[data-state="live"]').wait_for()
        await page.evaluate("window.__notReloaded = true")
        items = page.locator("#transcript-list > li.segment")
        start = await items.count()

        await items.nth(start + 2).wait_for(timeout=15_000)  # three more, pushed live

        assert await page.evaluate("window.__notReloaded") is True
        first = items.nth(start)
        assert (await first.locator(".segment-speaker").inner_text()).rstrip(":") in {
            "Alice Johnson",
            "Zoë Müller",
        }
        assert re.fullmatch(r"\d\d:\d\d", await first.locator(".segment-time").inner_text())
        ids = await page.eval_on_selector_all("#transcript-list > li", "els => els.map(e => e.id)")
        assert len(ids) == len(set(ids))  # nothing appended twice
        assert await page.locator("#transcript-empty").count() == 0
        await screenshot(page, "session-detail-transcript.png")
    finally:
        await context.close()
