"""The dashboard as the browser tests run it: a real `serve` (embedded relay and simulator,
its own SQLite file) and helpers that drive pages the way a user does."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page

from sessions_monitor.simulator.control import SimulatorControl
from tests.support import ROOT, ServerProcess, eventually, free_port, run_server

PASSWORD = "demo-e2e-password"
# Tests never write tracked files: screenshots go to a temporary folder unless
# `make screenshots` asks for docs/screenshots on purpose.
SCREENSHOTS = Path(
    os.getenv("MEETINGDASH_SCREENSHOTS_DIR") or tempfile.mkdtemp(prefix="meetingdash-shots-")
)
STALL_SECONDS = 2


@dataclass
class Dash:
    base_url: str
    db_path: Path
    control: SimulatorControl | None
    process: ServerProcess

    def stored_seqs(self, session_id: str) -> list[int]:
        with contextlib.closing(sqlite3.connect(self.db_path, timeout=10)) as db:
            rows = db.execute(
                "SELECT seq FROM sessions_monitor_sessionevent WHERE session_id = ? ORDER BY seq",
                (session_id,),
            ).fetchall()
        return [row[0] for row in rows]


def prepare_database(env: dict[str, str]) -> None:
    full_env = {**os.environ, **env}
    for command in (["migrate", "-v", "0"], ["ensure_demo_user"]):
        subprocess.run(
            [sys.executable, "manage.py", *command],
            cwd=ROOT,
            env=full_env,
            check=True,
            capture_output=True,
            timeout=120,
        )


def dash_env(db_path: Path, **extra: str) -> dict[str, str]:
    return {
        # The embedded default (relay in `serve`), whatever CI exports for other tests.
        "DATABASE_URL": f"sqlite:///{db_path}",
        "REDIS_URL": "",
        "DEMO_PASSWORD": PASSWORD,
        "DJANGO_DEBUG": "1",
        "MEETINGDASH_SIMULATOR": "1",
        "MEETINGDASH_SIMULATOR_CONTROL": "1",
        "MEETINGDASH_SIMULATOR_SESSIONS": "6",
        "MEETINGDASH_SIMULATOR_SEED": "7",
        "MEETINGDASH_SIMULATOR_KEEPALIVE": "0.5",
        "MEETINGDASH_DISCOVERY_SECONDS": "0.5",
        "MEETINGDASH_UPSTREAM_STALL_SECONDS": str(STALL_SECONDS),
        **extra,
    }


def csp_violations(page: Page) -> list[str]:
    """Every Content-Security-Policy report the page logs from now on (the list fills as
    they come: assert it is empty at the end)."""
    found: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            found.append(f"{page.url} ({message.location}): {message.text}")

    page.on("console", on_console)
    return found


@contextlib.contextmanager
def running_dash(prefix: str, *, shell: str = "", **extra_env: str) -> Iterator[Dash]:
    """`serve` (embedded relay and simulator, control API on) over its own SQLite file,
    migrated with the demo user; `shell`: Python run by `manage.py shell` before it starts
    (more users, permissions, seeded history)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        db_path = Path(tmp) / "db.sqlite3"
        env = dash_env(db_path, **extra_env)
        prepare_database(env)
        if shell:
            subprocess.run(
                [sys.executable, "manage.py", "shell", "-c", shell],
                cwd=ROOT,
                env={**os.environ, **env},
                check=True,
                capture_output=True,
                timeout=120,
            )
        with (
            serve(env, free_port()) as process,
            SimulatorControl(process.base_url + "/_simulator") as control,
        ):
            yield Dash(process.base_url, db_path, control, process)


@contextlib.contextmanager
def serve(env: dict[str, str], port: int) -> Iterator[ServerProcess]:
    with run_server(
        ["manage.py", "serve", "--port", str(port)], port=port, ready_path="/healthz", env=env
    ) as process:
        yield process


@contextlib.asynccontextmanager
async def serving(env: dict[str, str], port: int) -> AsyncIterator[ServerProcess]:
    """`serve`, started and stopped in a worker thread: the browser's events keep flowing
    while the server boots or shuts down (each takes seconds)."""
    server = serve(env, port)
    process = await asyncio.to_thread(server.__enter__)
    try:
        yield process
    finally:
        await asyncio.to_thread(server.__exit__, None, None, None)


async def new_context(browser: Browser, **options: Any) -> BrowserContext:
    """A fresh context (cookies, offline switch) at the dashboard's test viewport."""
    context = await browser.new_context(viewport={"width": 1280, "height": 860}, **options)
    context.set_default_timeout(15_000)
    return context


async def log_in(page: Page, base_url: str, next_path: str = "/") -> None:
    await page.goto(f"{base_url}/accounts/login/?next={next_path}")
    await page.fill("#id_username", "demo")
    await page.fill("#id_password", PASSWORD)
    await page.click("form.form button[type=submit]")
    await page.wait_for_url(f"{base_url}{next_path}")


async def new_session(dash: Dash, page: Page, **fields: Any) -> str:
    """A manual simulator session, discovered by the relay, its detail page loadable."""
    assert dash.control is not None
    session_id = f"mbsess_e2e{uuid.uuid4().hex[:10]}"
    dash.control.create_session(session_id=session_id, manual=True, **fields)
    await wait_watched(dash, page, session_id)
    return session_id


async def wait_watched(dash: Dash, page: Page, session_id: str, seconds: float = 15) -> list[int]:
    """Wait until the relay has looked the session up (its detail page loads) and stored its
    first events; their seqs."""

    async def stored_once_watched() -> list[int]:
        response = await page.request.get(f"{dash.base_url}/sessions/{session_id}/")
        return dash.stored_seqs(session_id) if response.status == 200 else []

    seqs: list[int] = await eventually(
        stored_once_watched, seconds, f"{session_id} to be watched and stored"
    )
    return seqs


async def open_live(page: Page, url: str) -> None:
    await page.goto(url)
    await page.locator('#browser-link[data-state="live"]').wait_for()


async def page_seqs(page: Page) -> list[int]:
    seqs: list[int] = await page.eval_on_selector_all(
        "#event-log > li", "items => items.map(item => Number(item.dataset.seq))"
    )
    return seqs


async def wait_rows_equal_history(
    dash: Dash, page: Page, session_id: str, seconds: float
) -> list[int]:
    """Wait until the page's event rows are the stored history (not empty); those seqs."""

    async def rows_if_equal() -> list[int]:
        stored = dash.stored_seqs(session_id)
        return stored if stored and await page_seqs(page) == stored else []

    rows: list[int] = await eventually(
        rows_if_equal, seconds, "the page's rows to equal the stored history"
    )
    return rows


async def screenshot(page: Page, name: str) -> None:
    await asyncio.to_thread(SCREENSHOTS.mkdir, parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
