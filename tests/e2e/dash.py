"""The dashboard as the browser tests run it: a real `serve` (embedded relay and simulator,
its own SQLite file) and helpers that drive pages the way a user does."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sessions_monitor.simulator.control import SimulatorControl
from tests.support import ROOT, ServerProcess, run_server

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


@contextlib.contextmanager
def serve(env: dict[str, str], port: int) -> Iterator[ServerProcess]:
    with run_server(
        ["manage.py", "serve", "--port", str(port)], port=port, ready_path="/healthz", env=env
    ) as process:
        yield process


def log_in(page: Any, base_url: str, next_path: str = "/") -> None:
    page.goto(f"{base_url}/accounts/login/?next={next_path}")
    page.fill("#id_username", "demo")
    page.fill("#id_password", PASSWORD)
    page.click("form.form button[type=submit]")
    page.wait_for_url(f"{base_url}{next_path}")


def wait_until(check: Callable[[], Any], seconds: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.1)


def new_session(dash: Dash, page: Any, **fields: Any) -> str:
    """A manual simulator session, discovered by the relay, its detail page loadable."""
    assert dash.control is not None
    session_id = f"mbsess_e2e{uuid.uuid4().hex[:10]}"
    dash.control.create_session(session_id=session_id, manual=True, **fields)
    url = f"{dash.base_url}/sessions/{session_id}/"
    wait_until(
        lambda: page.request.get(url).status == 200 and dash.stored_seqs(session_id),
        what=f"{session_id} to be watched and stored",
    )
    return session_id


def open_live(page: Any, url: str) -> None:
    page.goto(url)
    page.locator('#browser-link[data-state="live"]').wait_for()


def page_seqs(page: Any) -> list[int]:
    return page.eval_on_selector_all(
        "#event-log > li", "items => items.map(item => Number(item.dataset.seq))"
    )


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
