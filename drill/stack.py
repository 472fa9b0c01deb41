"""A scaled MeetingDash deployment as separate processes: the simulator, N `serve`, M
`runrelay`, on given PostgreSQL and Redis URLs (optionally nginx in front of the serves)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from drill.services import free_port, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
METRICS_TOKEN = "drill-metrics-token"


@dataclass
class Process:
    name: str
    args: list[str]
    env: dict[str, str]
    port: int | None = None
    metrics_port: int | None = None
    log: Path = field(default_factory=lambda: Path(tempfile.mkstemp(suffix=".log")[1]))
    popen: subprocess.Popen[bytes] | None = None

    def start(self, ready: str | None = None, seconds: float = 40) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                [sys.executable, *self.args],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + seconds
        if self.port is not None:
            wait_for_port(self.port, seconds)
        while ready is not None and ready not in self.log.read_text(errors="replace"):
            if self.popen.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start:\n{self.tail()}")
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """kill -9: no cleanup at all."""
        if self.alive():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def terminate(self, seconds: float = 20) -> float:
        """SIGTERM; returns how long it took to exit (kills it past `seconds`)."""
        if not self.alive():
            return 0.0
        assert self.popen is not None
        started = time.monotonic()
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(seconds)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
            return float("inf")
        return time.monotonic() - started

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Deployment:
    def __init__(
        self,
        *,
        database_url: str,
        redis_url: str,
        web: int = 2,
        relays: int = 2,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.database_url = database_url
        self.redis_url = redis_url
        self.prefix = f"drill{uuid.uuid4().hex[:6]}"
        sim_port = free_port()
        self.simulator_url = f"http://127.0.0.1:{sim_port}"
        base = {k: v for k, v in os.environ.items() if not k.startswith("MEETINGDASH_")}
        self.env = {
            **base,
            "DJANGO_DEBUG": "1",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "MEETINGDASH_CHANNEL_PREFIX": self.prefix,
            "MEETINGBUDDY_API_URL": self.simulator_url,
            "MEETINGDASH_DISCOVERY_SECONDS": "1",
            "MEETINGDASH_KEEPALIVE_SECONDS": "1",
            "MEETINGDASH_UPSTREAM_STALL_SECONDS": "4",
            "MEETINGDASH_RELAY_RESCAN_SECONDS": "0.5",
            "MEETINGDASH_RELAY_LEASE_SECONDS": "3",
            "MEETINGDASH_METRICS_TOKEN": METRICS_TOKEN,
            "MEETINGDASH_MAX_STREAMS_PER_TOKEN": "10000",
            "MEETINGDASH_MAX_STREAMS_PER_USER": "10000",
            "DJANGO_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        self.simulator = Process(
            "simulator",
            [
                "manage.py",
                "simulate_upstream",
                "--port",
                str(sim_port),
                "--sessions",
                "0",
                "--no-arrivals",
                "--control",
                "--keepalive",
                "1",
            ],
            self.env,
            port=sim_port,
        )
        self.webs = [self._web(free_port()) for _ in range(web)]
        self.relays = [self._relay(i) for i in range(relays)]
        self.token = ""

    def _relay(self, index: int) -> Process:
        port = free_port()
        env = {**self.env, "MEETINGDASH_RELAY_METRICS_PORT": str(port)}
        process = Process(f"relay{index}", ["manage.py", "runrelay"], env)
        process.metrics_port = port
        return process

    def write_queues(self) -> int:
        """Writes the relays still hold for the database (from their /metrics)."""
        total = 0
        for relay in self.relays:
            if not relay.alive():
                continue
            text = httpx.get(f"http://127.0.0.1:{relay.metrics_port}/metrics", timeout=5).text
            for line in text.splitlines():
                if line.startswith("meetingdash_db_write_queue "):
                    total += int(float(line.split()[1]))
        return total

    def _web(self, port: int) -> Process:
        return Process(
            f"web:{port}", ["manage.py", "serve", "--port", str(port)], self.env, port=port
        )

    def manage(self, *args: str) -> str:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {args[0]}: {result.stdout}\n{result.stderr}")
        return result.stdout

    def start(self) -> None:
        self.manage("migrate", "--noinput", "-v", "0")
        self.manage(
            "shell",
            "-c",
            "from django.contrib.auth.models import User; User.objects.create_user('drill')",
        )
        self.token = self.manage("create_api_token", "drill").strip().split()[-1]
        self.simulator.start()
        for web in self.webs:
            web.start()
        for relay in self.relays:
            relay.start(ready="running")

    def stop(self) -> dict[str, float]:
        """SIGTERM everything; returns each process's exit time in seconds."""
        times = {}
        for process in [*self.relays, *self.webs, self.simulator]:
            times[process.name] = process.terminate()
        return times

    # -- looking inside ------------------------------------------------------------------------

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def health(self, web: Process) -> dict[str, Any]:
        response = httpx.get(
            f"http://127.0.0.1:{web.port}/healthz",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
            timeout=5,
        )
        return dict(response.json())

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(method, self.simulator_url + path, json=body, timeout=10)
        response.raise_for_status()
        return response.json() if response.content else None

    def lease_owners(self) -> dict[str, str]:
        import redis

        client = redis.Redis.from_url(self.redis_url, socket_timeout=2, decode_responses=True)
        try:
            owners = {}
            for key in client.scan_iter(match=f"{self.prefix}:relay-lease:*"):
                value = client.get(key)
                if value:
                    owners[str(key).rsplit(":", 1)[1]] = str(value)
            return owners
        finally:
            client.close()

    def relay_owner(self, relay: Process) -> str:
        text = relay.log.read_text(errors="replace")
        return text.split("Relay ", 1)[1].split()[0] if "Relay " in text else ""

    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.database_url, connect_timeout=5) as connection:
            return list(connection.execute(sql, params).fetchall())

    def metrics(self, web: Process) -> str:
        response = httpx.get(
            f"http://127.0.0.1:{web.port}/metrics",
            headers={"Authorization": f"Bearer {METRICS_TOKEN}"},
            timeout=5,
        )
        return response.text


def wait_until(check: Any, seconds: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + seconds
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            last = check()
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(
        f"{what} did not happen within {seconds} s (last: {json.dumps(last, default=str)[:300]})"
    )
