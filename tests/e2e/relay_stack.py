"""A real MeetingDash (`serve`, embedded relay, temp SQLite) in front of a real simulator."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support import ROOT, ServerProcess, free_port, run_server

CREATE_USERS = """
from django.contrib.auth.models import User
User.objects.create_user("alice", "", "alice-password-123")
User.objects.create_user("bob", "", "bob-password-123")
"""


def manage(args: list[str], env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if result.returncode != 0:
        raise RuntimeError(f"manage.py {args[0]} failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


METRICS_TOKEN = "e2e-metrics-token"
STAFF_HEALTH = {"Authorization": f"Bearer {METRICS_TOKEN}"}


def stack_env(db_path: Path, upstream_url: str, **extra: str) -> dict[str, str]:
    import os

    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{db_path}",
        "REDIS_URL": "",
        "MEETINGBUDDY_API_URL": upstream_url,
        "MEETINGDASH_KEEPALIVE_SECONDS": "1",
        "MEETINGDASH_DISCOVERY_SECONDS": "0",
        "MEETINGDASH_UPSTREAM_STALL_SECONDS": "3",
        "DJANGO_DEBUG": "1",
        "PYTHONUNBUFFERED": "1",
        # The tests open more streams on one token than the default limit allows.
        "MEETINGDASH_MAX_STREAMS_PER_TOKEN": "200",
        "MEETINGDASH_MAX_STREAMS_PER_USER": "200",
        "MEETINGDASH_METRICS_TOKEN": METRICS_TOKEN,
    }
    env.update(extra)
    return env


@dataclass
class RelayStack:
    server: ServerProcess
    simulator: Any  # tests.conftest.SimulatorServer
    token: str
    env: dict[str, str]
    db_path: Path

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def stream_url(self, session_id: str) -> str:
        return f"{self.base_url}/v1/meeting-buddy/sessions/{session_id}/stream"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)) as db:
            return list(db.execute(sql, params))

    def history(self, session_id: str) -> list[tuple[Any, ...]]:
        return self.query(
            "SELECT seq, kind, status, previous_status, participant_name FROM"
            " sessions_monitor_sessionevent WHERE session_id = ? AND kind IN"
            " ('status', 'joined', 'left', 'close') ORDER BY seq",
            session_id,
        )

    def new_session(self, **kwargs: Any) -> str:
        session_id = f"mbsess_e2e{uuid.uuid4().hex[:10]}"
        self.simulator.control.create_session(session_id=session_id, manual=True, **kwargs)
        return session_id

    def wait_upstream_streams(self, session_id: str, count: int = 1, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while self.simulator.control.stats()["open_streams"].get(session_id, 0) != count:
            if time.monotonic() > deadline:
                raise AssertionError(f"upstream streams of {session_id} never reached {count}")
            time.sleep(0.05)

    def wait_stored(self, session_id: str, count: int, seconds: float = 10) -> None:
        deadline = time.monotonic() + seconds
        while len(self.history(session_id)) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{session_id}: {self.history(session_id)}")
            time.sleep(0.05)


@contextlib.contextmanager
def relay_stack(simulator: Any, tmp_dir: Path, **extra_env: str) -> Iterator[RelayStack]:
    db_path = tmp_dir / "meetingdash.sqlite3"
    env = stack_env(db_path, simulator.base_url, **extra_env)
    manage(["migrate", "--noinput", "-v", "0"], env)
    manage(["shell", "-c", CREATE_USERS], env)
    output = manage(["create_api_token", "alice", "--name", "e2e"], env)
    token = output.strip().splitlines()[-1].split()[-1]
    port = free_port()
    with run_server(
        ["manage.py", "serve", "--port", str(port)], port=port, ready_path="/healthz", env=env
    ) as server:
        yield RelayStack(server, simulator, token, env, db_path)


def parse_sse(text: str) -> list[dict[str, Any]]:
    """Events of a complete SSE body: [{"id", "event", "data"}], comments skipped."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        fields: dict[str, Any] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            fields[name] = value
        if "data" in fields:
            fields["data"] = json.loads(fields["data"])
            events.append(fields)
    return events


def stream_events(
    stack: RelayStack, session_id: str, *, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Read our stream to its end (it ends after `close`)."""
    with httpx.stream(
        "GET", stack.stream_url(session_id), headers={**stack.auth, **(headers or {})}, timeout=20
    ) as response:
        assert response.status_code == 200, response.read()
        return parse_sse(response.read().decode())
