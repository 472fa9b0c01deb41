"""The widget in real Chromium: framed by an allowed origin it updates live; others are refused.

One real `serve` (embedded relay + built-in simulator, temp SQLite) and two tiny
`http.server` origins: one listed in MEETINGDASH_EMBED_ORIGINS, one not.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from playwright.async_api import Browser, WebSocket

from sessions_monitor import embed
from sessions_monitor.simulator.control import SimulatorControl
from tests.support import ROOT, ServerProcess, free_port, run_server, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.slow]

SID = "mbsess_widget0001"
OTHER = "mbsess_widget0002"
BOT = "Widget Buddy"


class Origin:
    """A second web origin serving one HTML page that frames the widget."""

    def __init__(self) -> None:
        self.html = "<!doctype html><title>empty</title>"
        origin = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = origin.html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def frame(self, src: str) -> str:
        self.html = (
            "<!doctype html><html><head><title>Runbook</title></head><body>"
            "<h1>Support ticket 42</h1>"
            f'<iframe id="widget" src="{src}" width="300" height="80" style="border:0"></iframe>'
            "</body></html>"
        )
        return self.url + "/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class Stack:
    server: ServerProcess
    control: SimulatorControl
    allowed: Origin
    stranger: Origin

    def widget_url(self, session_id: str, token: str) -> str:
        return self.server.base_url + embed.widget_path(session_id, token)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    database = Path(tmp_path_factory.mktemp("widget")) / "db.sqlite3"
    allowed, stranger = Origin(), Origin()
    env = {
        "DATABASE_URL": f"sqlite:///{database}",
        "REDIS_URL": "",
        "DJANGO_SECRET_KEY": settings.SECRET_KEY,
        "MEETINGDASH_SIMULATOR": "1",
        "MEETINGDASH_SIMULATOR_CONTROL": "1",
        "MEETINGDASH_SIMULATOR_SESSIONS": "0",
        "MEETINGDASH_SIMULATOR_KEEPALIVE": "1",
        "MEETINGDASH_DISCOVERY_SECONDS": "0.5",
        "MEETINGDASH_EMBED_ORIGINS": allowed.url,
    }
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**__import__("os").environ, **env},
        check=True,
        timeout=120,
    )
    port = free_port()
    try:
        with run_server(
            ["manage.py", "serve", "--port", str(port)], port=port, ready_path="/healthz", env=env
        ) as server:
            control = SimulatorControl(server.base_url + settings.MEETINGDASH_SIMULATOR_PREFIX)
            control.create_session(session_id=SID, bot_name=BOT, manual=True)
            control.emit(SID, status="joining")
            control.create_session(session_id=OTHER, bot_name="Someone Else", manual=True)
            token = embed.make_token(SID)

            def stored() -> bool:
                page = httpx.get(server.base_url + embed.widget_path(SID, token), timeout=5)
                return page.status_code == 200 and "Joining" in page.text

            wait_until(stored, 20, "the relay to store the simulated session")
            yield Stack(server, control, allowed, stranger)
            control.close()
    finally:
        allowed.close()
        stranger.close()


async def test_the_widget_updates_live_inside_an_iframe_on_an_allowed_origin(
    stack: Stack, chromium: Browser
) -> None:
    page = await chromium.new_page()
    try:
        src = stack.widget_url(SID, embed.make_token(SID))
        subscribed = asyncio.Event()

        def on_websocket(socket: WebSocket) -> None:
            socket.on("framereceived", lambda frame: subscribed.set())

        page.on("websocket", on_websocket)
        await page.goto(stack.allowed.frame(src))
        # The first frame is the badge the server sends once subscribed: live from here on.
        try:
            await asyncio.wait_for(subscribed.wait(), 15)
        except TimeoutError:
            raise AssertionError("the widget's live channel never connected") from None
        badge = page.frame_locator("#widget").locator("#embed-badge")
        await badge.wait_for(timeout=10_000)
        assert "Joining" in await badge.inner_text()
        assert BOT in await badge.inner_text()
        box = await page.locator("#widget").bounding_box()
        assert box is not None and (box["width"], box["height"]) == (300, 80)
        assert await badge.evaluate(
            "el => el.scrollWidth <= 300 && el.getBoundingClientRect().bottom <= 80"
        )

        stack.control.emit(SID, status="active")
        await (
            page.frame_locator("#widget")
            .locator("#embed-badge[data-status='active']")
            .wait_for(timeout=10_000)
        )
        assert "In meeting" in await badge.inner_text()
        assert "0 present" in await badge.inner_text()

        stack.control.emit(SID, join="Alice")
        await (
            page.frame_locator("#widget")
            .locator("#embed-badge .people[data-participants='1']")
            .wait_for(timeout=10_000)
        )
        assert "1 present" in await badge.inner_text()
    finally:
        await page.close()


async def test_the_widget_refuses_to_be_framed_by_another_origin(
    stack: Stack, chromium: Browser
) -> None:
    page = await chromium.new_page()
    try:
        async with page.expect_console_message(
            lambda message: "frame-ancestors" in message.text, timeout=10_000
        ):  # Chromium reports the frame-ancestors refusal
            await page.goto(stack.stranger.frame(stack.widget_url(SID, embed.make_token(SID))))
        assert await page.frame_locator("#widget").locator("#embed-badge").count() == 0
    finally:
        await page.close()


@pytest.mark.parametrize("case", ["tampered", "expired", "other-session"])
def test_bad_tokens_get_a_403_with_no_session_data(stack: Stack, case: str) -> None:
    token = {
        "tampered": embed.make_token(SID)[:-1]
        + ("A" if not embed.make_token(SID).endswith("A") else "B"),
        "expired": embed.make_token(SID, days=1, now=time.time() - 2 * 86400),
        "other-session": embed.make_token(OTHER),
    }[case]
    response = httpx.get(stack.widget_url(SID, token), timeout=5)
    assert response.status_code == 403
    for secret in (SID, OTHER, BOT, "Someone Else", "Joining", "present", "ws/embed"):
        assert secret not in response.text
    handshake = httpx.get(
        stack.server.base_url + embed.live_path(SID, token),
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Origin": stack.server.base_url,
        },
        timeout=5,
    )
    assert handshake.status_code == 403


async def test_a_tampered_token_shows_the_refusal_inside_the_frame(
    stack: Stack, chromium: Browser
) -> None:
    page = await chromium.new_page()
    try:
        good = embed.make_token(SID)
        bad = good[:-1] + ("A" if not good.endswith("A") else "B")
        await page.goto(stack.allowed.frame(stack.widget_url(SID, bad)))
        refused = page.frame_locator("#widget").locator("#embed-refused")
        await refused.wait_for(timeout=10_000)
        text = await refused.inner_text()
        assert "not valid" in text and BOT not in text and SID not in text
    finally:
        await page.close()
