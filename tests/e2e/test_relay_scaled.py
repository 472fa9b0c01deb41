"""Scaled mode: Redis channel layer, PostgreSQL, two `runrelay` processes and one `serve`.

Each session must be streamed by exactly one relay (one upstream connection), every
subscriber of our stream gets every event once, and a relay that stops hands its sessions
over to the other one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.relay_stack import METRICS_TOKEN, STAFF_HEALTH, manage
from tests.e2e.test_relay_stream import EXPECTED, STEPS, Reader, shape
from tests.support import ROOT, free_port, run_server, service_missing

pytestmark = [pytest.mark.redis, pytest.mark.postgres, pytest.mark.slow]

PG_ADMIN_URL = os.getenv("MEETINGDASH_PG_ADMIN_URL", "postgres://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def scratch_postgres() -> Iterator[str]:
    """A fresh PostgreSQL database for the child processes, dropped afterwards."""
    import psycopg

    name = f"meetingdash_scaled_{uuid.uuid4().hex[:8]}"
    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.Error as exc:
        service_missing(f"PostgreSQL unreachable at {PG_ADMIN_URL}: {type(exc).__name__}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class RelayProcess:
    def __init__(self, env: dict[str, str]) -> None:
        self.log = Path(tempfile.mkstemp(prefix="runrelay-", suffix=".log")[1])
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "runrelay"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while "running" not in self.log.read_text():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"runrelay did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        self.owner = self.log.read_text().split("Relay ", 1)[1].split()[0]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return int(self.process.returncode)


def test_two_relays_share_sessions_with_one_upstream_connection_each(
    simulator_server, scratch_postgres, redis_url, tmp_path
) -> None:
    from tests.e2e.relay_stack import RelayStack

    env = {
        **os.environ,
        "DATABASE_URL": scratch_postgres,
        "REDIS_URL": redis_url,
        "MEETINGDASH_CHANNEL_PREFIX": f"scaled{uuid.uuid4().hex[:6]}",
        "MEETINGBUDDY_API_URL": simulator_server.base_url,
        "MEETINGDASH_DISCOVERY_SECONDS": "0",
        "MEETINGDASH_KEEPALIVE_SECONDS": "1",
        "MEETINGDASH_RELAY_RESCAN_SECONDS": "0.5",
        "MEETINGDASH_RELAY_LEASE_SECONDS": "3",
        "MEETINGDASH_METRICS_TOKEN": METRICS_TOKEN,
        "PYTHONUNBUFFERED": "1",
    }
    manage(["migrate", "--noinput", "-v", "0"], env)
    manage(
        [
            "shell",
            "-c",
            "from django.contrib.auth.models import User; User.objects.create_user('alice')",
        ],
        env,
    )
    token = manage(["create_api_token", "alice"], env).strip().splitlines()[-1].split()[-1]
    relays = [RelayProcess(env), RelayProcess(env)]
    port = free_port()
    try:
        with run_server(
            ["manage.py", "serve", "--port", str(port)], port=port, ready_path="/healthz", env=env
        ) as server:
            stack = RelayStack(server, simulator_server, token, env, tmp_path / "unused")
            session_ids = [stack.new_session() for _ in range(6)]
            readers = {sid: [Reader(stack, sid), Reader(stack, sid)] for sid in session_ids}
            for group in readers.values():
                for reader in group:
                    reader.start()
            for group in readers.values():
                for reader in group:
                    assert reader.first.wait(15), reader.error
            for sid in session_ids:
                stack.wait_upstream_streams(sid)

            # Half-way through, one relay stops; the other takes its sessions over.
            for sid in session_ids:
                for step in STEPS[:3]:
                    simulator_server.control.emit(sid, **step)
            _wait_stored_everywhere(readers, 4)
            holders = _lease_holders(redis_url, env["MEETINGDASH_CHANNEL_PREFIX"], session_ids)
            assert set(holders.values()) <= {relay.owner for relay in relays}
            assert len(holders) == len(session_ids)
            stopping = next(r for r in relays if r.owner in holders.values())
            taken_over = [sid for sid, owner in holders.items() if owner == stopping.owner]
            assert stopping.stop() == 0
            for sid in session_ids:
                stack.wait_upstream_streams(sid, seconds=15)
            for sid in session_ids:
                for step in STEPS[3:]:
                    simulator_server.control.emit(sid, **step)
            for sid, group in readers.items():
                for reader in group:
                    reader.join(20)
                    assert reader.error is None
                    # A hand-over leaves a window no relay streamed: it is marked, once.
                    gaps = [e for e in reader.events if e["event"] == "gap"]
                    events = [e for e in reader.events if e["event"] != "gap"]
                    assert len(gaps) == (1 if sid in taken_over else 0), gaps
                    assert shape(events) == EXPECTED
                    assert len(events) == len(EXPECTED)

            stats = simulator_server.control.stats()
            health = httpx.get(
                server.base_url + "/healthz", headers=STAFF_HEALTH, timeout=10
            ).json()
    finally:
        logs = [relay.log.read_text() for relay in relays]
        for relay in relays:
            relay.stop()
            relay.log.unlink(missing_ok=True)

    # Never two relays on one session at once: at most one connection before the stop
    # (relay 0's) and one after (relay 1 took over or already had it).
    for sid in session_ids:
        expected_connections = 2 if sid in taken_over else 1
        assert stats["stream_connections_total"][sid] == expected_connections, (sid, stats, logs)
    assert sum(stats["open_streams"].values()) == 0
    assert health["relay"]["mode"] == "scaled" and health["relay"]["relays"] >= 1


def _lease_holders(redis_url: str, prefix: str, session_ids: list[str]) -> dict[str, str]:
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        values = {sid: client.get(f"{prefix}:relay-lease:{sid}") for sid in session_ids}
    finally:
        client.close()
    return {sid: value.decode() for sid, value in values.items() if isinstance(value, bytes)}


def _wait_stored_everywhere(readers: dict[str, list[Reader]], count: int) -> None:
    deadline = time.monotonic() + 15
    while any(len(r.events) < count for group in readers.values() for r in group):
        assert time.monotonic() < deadline, "events did not reach every subscriber"
        time.sleep(0.05)
