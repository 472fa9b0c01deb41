"""Shared test helpers: factories, waits on conditions, free ports, subprocess servers, and
the services policy.

Tests that need Redis, PostgreSQL or Chromium skip with a reason when those are missing,
unless MEETINGDASH_REQUIRE_SERVICES=1 (CI), where a missing service fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
import pytest
from django.utils import timezone

if TYPE_CHECKING:
    from sessions_monitor.models import MeetingSession
    from sessions_monitor.relay.worker import Relay

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.getenv("MEETINGDASH_REQUIRE_SERVICES") == "1"
CHROMIUM_PATH = os.getenv("MEETINGDASH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def service_missing(reason: str) -> None:
    """Skip (developer machine) or fail (CI) because a service the test needs is missing."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}", pytrace=False)
    pytest.skip(reason)


# --- factories ----------------------------------------------------------------------------------


def make_session(session_id: str, *, minutes_ago: float = 0, **fields: Any) -> MeetingSession:
    """A stored session: active, watched, its upstream link live, started five minutes before
    its last event, which was `minutes_ago`. `fields` override any column."""
    from sessions_monitor.models import MeetingSession

    at = timezone.now() - timedelta(minutes=minutes_ago)
    values: dict[str, Any] = {
        "bot_name": "Buddy",
        "platform": "zoom",
        "meeting_link": "https://zoom.us/j/1",
        "status": "active",
        "started_at": at - timedelta(minutes=5),
        "last_event_at": at,
        "status_since": at,
        "stream_state": "live",
        "watched": True,
    }
    return MeetingSession.objects.create(session_id=session_id, **{**values, **fields})


def fast_relay(upstream_url: str, **options: Any) -> Relay:
    """A relay for tests: no discovery, quick stall detection, rescans and retries (test
    time, not production's); `options` override any of it (`Relay`'s keyword arguments)."""
    from sessions_monitor.relay.worker import Relay
    from sessions_monitor.upstream import BackoffPolicy

    defaults: dict[str, Any] = {
        "discovery_seconds": 0,
        "stall_seconds": 1.0,
        "rescan_seconds": 0.2,
        "backoff": BackoffPolicy(initial=0.05, cap=0.2),
    }
    return Relay(upstream_url=upstream_url, **{**defaults, **options})


# --- waiting on conditions -----------------------------------------------------------------------
# Tests wait for what they expect to happen, never for a fixed time: `seconds` only bounds a
# wait that would otherwise hang, and the failure says what never happened.


def wait_until(check: Callable[[], T], seconds: float = 10.0, what: str = "the condition") -> T:
    """Poll `check` until it returns something truthy, and return that."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {seconds:g}s waiting for {what} (last {value!r})"
            )
        time.sleep(0.05)


async def eventually(
    check: Callable[[], Awaitable[Any] | Any], seconds: float = 10.0, what: str = "the condition"
) -> Any:
    """Poll `check` (a coroutine function or a plain one) until its answer is truthy, and
    return that answer."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(
                f"timed out after {seconds:g}s waiting for {what} (last {value!r})"
            )
        await asyncio.sleep(0.05)


# --- servers -------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A real server in a child process, on a real socket."""

    process: subprocess.Popen[bytes]
    base_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def terminate(self, wait_seconds: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(wait_seconds)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)


def wait_for_http(
    url: str, process: subprocess.Popen[bytes], log_path: Path, seconds: float = 30
) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not answer {url} within {seconds}s:\n{log_path.read_text()}")


@contextlib.contextmanager
def run_server(
    args: list[str], *, port: int, ready_path: str, env: dict[str, str] | None = None
) -> Iterator[ServerProcess]:
    """Run `python <args>` in a child process and yield once `ready_path` answers."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with tempfile.NamedTemporaryFile(
        prefix="meetingdash-server-", suffix=".log", delete=False
    ) as log_file:
        log_path = Path(log_file.name)
        process = subprocess.Popen(
            [sys.executable, *args],
            cwd=ROOT,
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = ServerProcess(process, f"http://127.0.0.1:{port}", log_path, full_env)
    try:
        wait_for_http(server.base_url + ready_path, process, log_path)
        yield server
    finally:
        server.terminate()
        log_path.unlink(missing_ok=True)


def login_cookie(user: Any) -> bytes:
    """A `Cookie:` header value of a real logged-in session for `user` (what the browser
    sends after logging in), for websocket and stream tests through AuthMiddlewareStack."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    name = settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()
