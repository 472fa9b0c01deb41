"""Relay throughput: events per second recorded end to end on SQLite.

    python bench/relay.py [--sessions 10] [--events 300]

A simulator process serves `--sessions` scripted sessions; each script waits 2 s (so the
relay is connected), then fires `--events` participant joins and a `completed` at once.
The relay runs in this process exactly as `serve` runs it (embedded, in-memory layer,
temp SQLite file in WAL mode): follow_status → record_event (one transaction per event:
row lock, seq, event row, presence row) → broadcast → hub. A hub subscriber per session
counts what was broadcast. Printed: events stored and broadcast per second (first to last
broadcast), the relay process's CPU per event, and the end-to-end lag of the last event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TMP = Path(tempfile.mkdtemp(prefix="bench-relay-"))
os.environ.update(
    {
        "DJANGO_SETTINGS_MODULE": "meetingdash.settings",
        "DATABASE_URL": f"sqlite:///{TMP / 'db.sqlite3'}",
        "REDIS_URL": "",
        "DJANGO_LOG_LEVEL": "WARNING",
        # Production-like: DEBUG=1 also records every SQL query in memory.
        "DJANGO_DEBUG": os.environ.get("DJANGO_DEBUG", "0"),
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY", "bench-relay-not-secret"),
        "DJANGO_SECURE_SSL_REDIRECT": "0",
    }
)

import django  # noqa: E402

django.setup()

import httpx  # noqa: E402
from django.core.management import call_command  # noqa: E402

from sessions_monitor.hub import Hub  # noqa: E402
from sessions_monitor.relay.worker import Relay  # noqa: E402


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


async def run(base: str, sessions: int, events: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as control:
        for _ in range(100):
            try:
                await control.get("/_control/stats")
                break
            except httpx.TransportError:
                await asyncio.sleep(0.1)
        relay = Relay(upstream_url=base, discovery_seconds=0, rescan_seconds=3600)
        await relay.start()
        hub = Hub()
        session_ids = [f"mbsess_bench{uuid.uuid4().hex[:8]}" for _ in range(sessions)]
        script = [{"after": 2.0, "status": "active"}]
        script += [{"after": 0, "join": f"p{k}"} for k in range(events)]
        script += [{"after": 0, "status": "completed"}]
        subscriptions = []
        for session_id in session_ids:
            subscriptions.append(await hub.subscribe(session_id, maxsize=100_000))
        for session_id in session_ids:
            response = await control.post(
                "/_control/sessions", json={"session_id": session_id, "script": script}
            )
            response.raise_for_status()
            await relay.watch(session_id)
        fired_at = time.monotonic() + 2.0  # approximately: the scripts' first step

        first: float | None = None
        cpu_start = 0.0
        counts = 0

        async def drain(subscription) -> None:
            nonlocal first, cpu_start, counts
            async for message in subscription:
                if message.kind != "event":
                    continue
                if first is None and message.data["kind"] == "joined":
                    first, cpu_start = time.monotonic(), cpu_seconds()
                if message.data["kind"] in ("status", "joined", "close"):
                    counts += 1
                if message.data["kind"] == "close":
                    return

        await asyncio.wait_for(asyncio.gather(*(drain(s) for s in subscriptions)), 600)
        last = time.monotonic()
        cpu = cpu_seconds() - cpu_start
        await relay.stop()
    assert first is not None
    total = sessions * (events + 1)  # joins + completed, timed from the first join
    print(f"sessions × events: {sessions} × {events} (+ status/close), SQLite WAL")
    print(f"stored + broadcast: {total / (last - first):,.0f} events/s")
    print(f"relay CPU per event: {cpu * 1e6 / total:,.0f} µs")
    print(f"lag of the last event after the scripts fired: {last - fired_at:.2f} s")
    print(f"events received by hub subscribers: {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--events", type=int, default=300)
    args = parser.parse_args()
    call_command("migrate", "--noinput", verbosity=0)
    port = free_port()
    simulator = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "simulate_upstream",
            "--port",
            str(port),
            "--sessions",
            "0",
            "--no-arrivals",
            "--control",
            "--keepalive",
            "15",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        asyncio.run(run(f"http://127.0.0.1:{port}", args.sessions, args.events))
    finally:
        simulator.send_signal(signal.SIGTERM)
        simulator.wait(10)


if __name__ == "__main__":
    main()
