"""Shared test helpers: free ports, subprocess servers, and the services policy.

Tests that need Redis, PostgreSQL or Chromium skip with a reason when those are missing,
unless MEETINGDASH_REQUIRE_SERVICES=1 (CI), where a missing service fails the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.getenv("MEETINGDASH_REQUIRE_SERVICES") == "1"
CHROMIUM_PATH = os.getenv("MEETINGDASH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def service_missing(reason: str) -> None:
    """Skip (developer machine) or fail (CI) because a service the test needs is missing."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {reason}", pytrace=False)
    pytest.skip(reason)


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
