"""Fan-out benchmark: our stream on one `serve` process vs a bare asyncio SSE server.

    python bench/fanout.py [--subscribers 100 1000] [--events 12] [--interval 0.5]

For each target and each N, in this same run:
1. start the target server (a child process); for MeetingDash also a simulator process
   (the upstream) and a temp SQLite database, so the path measured is the real one:
   simulator → relay (httpx) → SQLite → channel layer → hub → N SSE responses;
2. a separate load-client process (raw asyncio sockets, one regex per read) opens N
   subscriptions and reports when all got their response headers;
3. the server's RSS is sampled idle and with the N subscribers (KB per idle subscriber);
4. `--events` events are published `--interval` s apart (MeetingDash: a participant join
   emitted on the simulator; baseline: POST /publish); each publish's monotonic time is
   kept, each receipt's too (CLOCK_MONOTONIC is system-wide), per subscriber;
5. printed: p50 / p99 publish → receipt, events lost (missing or duplicated deliveries),
   server CPU µs per delivery (user+sys over the publish window / deliveries), KB per
   idle subscriber.

MeetingDash's latency includes the upstream hop and the SQLite write per event (stored
before broadcast), which the baseline does not have: that is the cost of the product.
Client and servers share the machine's cores, so compare ratios, not absolutes.

To add a row (e.g. the dashboard's live channel), write a `Target` with `start()` returning
a running `TargetProcess` (pid, subscribe request bytes, publish callable) and add it to
`TARGETS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

MARK = re.compile(rb'"participant_name":"p(\d+)"|class="event-summary">p(\d+) joined<')
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- process measurements ---------------------------------------------------------------------


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer")


@contextlib.contextmanager
def child(args: list[str], env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.NamedTemporaryFile(prefix="bench-", suffix=".log", delete=False)  # noqa: SIM115
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()
        Path(log.name).unlink(missing_ok=True)


# -- targets ----------------------------------------------------------------------------------


@dataclass
class TargetProcess:
    pid: int
    host: str
    port: int
    request: bytes  # the raw HTTP request one subscriber sends
    publish: Callable[[int], None]  # publish event k (its payload carries "p<k>")


@dataclass
class SimulatedDeployment:
    """A simulator child, the environment of a `serve` that follows it (SQLite, embedded
    relay), and one manual session on the simulator that the bench publishes to."""

    tmp: Path
    sim: str
    port: int
    session_id: str
    env: dict[str, str]
    control: httpx.Client

    def manage(self, *args: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    def publish(self, k: int) -> None:
        """Publish event k (a join whose name carries "p<k>")."""
        self.control.post(
            f"/_control/sessions/{self.session_id}/emit", json={"join": f"p{k}"}
        ).raise_for_status()


@contextlib.contextmanager
def simulated_deployment(prefix: str) -> Iterator[SimulatedDeployment]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{prefix}-"))
    sim_port, port = free_port(), free_port()
    sim_args = ["manage.py", "simulate_upstream", "--port", str(sim_port)]
    sim_args += ["--sessions", "0", "--no-arrivals", "--control", "--keepalive", "15"]
    # The simulator stands in for the upstream (it is not what is measured): development mode.
    with child(sim_args, env={"DJANGO_DEBUG": "1"}):
        sim = f"http://127.0.0.1:{sim_port}"
        wait_http(sim + "/_control/stats")
        env = {
            "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
            "REDIS_URL": "",
            "MEETINGBUDDY_API_URL": sim,
            "MEETINGDASH_DISCOVERY_SECONDS": "0",
            "DJANGO_DEBUG": "0",
            "DJANGO_SECRET_KEY": "bench-" + uuid.uuid4().hex,
            "DJANGO_SECURE_SSL_REDIRECT": "0",
            "DJANGO_LOG_LEVEL": "WARNING",
            # One load client holds every connection: lift the per-client limits.
            "MEETINGDASH_MAX_STREAMS_PER_TOKEN": "100000",
            "MEETINGDASH_MAX_STREAMS_PER_USER": "100000",
            "MEETINGDASH_MAX_PAGES_PER_USER": "100000",
            "MEETINGDASH_MAX_WIDGETS_PER_TOKEN": "100000",
        }
        session_id = f"mbsess_{prefix}{uuid.uuid4().hex[:8]}"
        with httpx.Client(base_url=sim, timeout=10) as control:
            deployment = SimulatedDeployment(tmp, sim, port, session_id, env, control)
            deployment.manage("migrate", "--noinput", "-v", "0")
            control.post(
                "/_control/sessions", json={"session_id": session_id, "manual": True}
            ).raise_for_status()
            yield deployment


class MeetingDashStream:
    """Our stream on one `serve` process (embedded relay, SQLite, simulator upstream)."""

    name = "MeetingDash /v1/.../stream (serve, daphne)"

    @contextlib.contextmanager
    def start(self) -> Iterator[TargetProcess]:
        with simulated_deployment("bench") as deployment:
            port, session_id = deployment.port, deployment.session_id
            deployment.manage(
                "shell",
                "-c",
                "from django.contrib.auth.models import User; User.objects.create_user('bench')",
            )
            token = deployment.manage("create_api_token", "bench").strip().split()[-1]
            with child(["manage.py", "serve", "--port", str(port)], deployment.env) as server:
                wait_http(f"http://127.0.0.1:{port}/healthz")
                # Warm-up: one subscription makes the session known, watched and followed,
                # so the idle RSS below excludes one-time costs (imports, relay task, feed).
                with httpx.stream(
                    "GET",
                    f"http://127.0.0.1:{port}/v1/meeting-buddy/sessions/{session_id}/stream",
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=10,
                ) as warm:
                    assert warm.status_code == 200, warm.read()
                    next(warm.iter_bytes())
                request = (
                    f"GET /v1/meeting-buddy/sessions/{session_id}/stream HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{port}\r\nAuthorization: Bearer {token}\r\n"
                    "Accept: text/event-stream\r\n\r\n"
                ).encode()
                yield TargetProcess(server.pid, "127.0.0.1", port, request, deployment.publish)


class BareAsyncio:
    """The floor: a raw asyncio server, one writer list, no framework."""

    name = "bare asyncio SSE server (baseline)"

    @contextlib.contextmanager
    def start(self) -> Iterator[TargetProcess]:
        port = free_port()
        with child([str(Path(__file__)), "--baseline-server", str(port)]) as server:
            wait_http(f"http://127.0.0.1:{port}/ready")
            control = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

            def publish(k: int) -> None:
                control.post(f"/publish?k={k}").raise_for_status()

            request = f"GET /stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
            try:
                yield TargetProcess(server.pid, "127.0.0.1", port, request, publish)
            finally:
                control.close()


TARGETS: list[Any] = [BareAsyncio(), MeetingDashStream()]


async def baseline_server(port: int) -> None:
    writers: set[asyncio.StreamWriter] = set()
    headers = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        line = request.split(b"\r\n", 1)[0]
        if line.startswith(b"GET /stream"):
            writer.write(headers)
            writers.add(writer)
            with contextlib.suppress(Exception):
                await reader.read()
            writers.discard(writer)
            return
        if line.startswith(b"POST /publish"):
            k = int(line.split(b"k=")[1].split()[0])
            data = json.dumps(
                {
                    "session_id": "mbsess_bench",
                    "participant_name": f"p{k}",
                    "event": "joined",
                    "timestamp": "2026-01-01T00:00:00Z",
                },
                separators=(",", ":"),
            ).encode()
            frame = b"id: %d\nevent: status\ndata: %s\n\n" % (k, data)
            chunk = b"%x\r\n%s\r\n" % (len(frame), frame)
            for target in tuple(writers):
                target.write(chunk)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


# -- load client (a separate process) ---------------------------------------------------------


async def load_client(host: str, port: int, request: bytes, n: int, events: int) -> None:
    """Open n subscriptions; print READY; record receipts; print them as JSON at the end."""
    receipts: list[dict[int, list[int]]] = [{} for _ in range(n)]
    connected = 0
    all_connected = asyncio.Event()
    done = asyncio.Event()
    finished = 0

    async def subscriber(index: int) -> None:
        nonlocal connected, finished
        reader, writer = await asyncio.open_connection(host, port)
        # Bytes after the request head (a WebSocket hello frame) go out once the response
        # head is in: servers do not read frames pipelined with the upgrade.
        request_head, separator, first_frame = request.partition(b"\r\n\r\n")
        writer.write(request_head + separator)
        head = await reader.readuntil(b"\r\n\r\n")
        if not re.search(rb" (200|101) ", head.split(b"\r\n", 1)[0]):
            raise RuntimeError(head.decode(errors="replace"))
        if first_frame:
            writer.write(first_frame)
        connected += 1
        if connected == n:
            all_connected.set()
        mine = receipts[index]
        tail = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            now = time.monotonic_ns()
            data = tail + chunk
            end = 0
            for match in MARK.finditer(data):
                mine.setdefault(int(match.group(1) or match.group(2)), []).append(now)
                end = match.end()
            tail = data[max(end, len(data) - 64) :]
            if len(mine) >= events and index not in seen_all:
                seen_all.add(index)
                finished += 1
                if finished == n:
                    done.set()
        writer.close()

    seen_all: set[int] = set()
    tasks = []
    for index in range(n):
        tasks.append(asyncio.create_task(subscriber(index)))
        if index % 50 == 49:
            await asyncio.sleep(0.05)  # do not SYN-flood the accept queue
    await asyncio.wait_for(all_connected.wait(), 120)
    print("READY", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    deadline = float(line.strip() or "10")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), deadline)
    for task in tasks:
        task.cancel()
    print(json.dumps([{str(k): v for k, v in r.items()} for r in receipts]), flush=True)


# -- one run ----------------------------------------------------------------------------------


def measure(target: Any, n: int, events: int, interval: float) -> dict[str, Any]:
    with target.start() as running:
        time.sleep(1.0)
        idle_kb = rss_kb(running.pid)
        client = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__)),
                "--load-client",
                running.host,
                str(running.port),
                str(n),
                str(events),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        env_request = running.request.decode("latin-1")  # a WebSocket frame is not UTF-8
        client.stdin.write(env_request.replace("\r\n", "\\r\\n") + "\n")  # type: ignore[union-attr]
        client.stdin.flush()  # type: ignore[union-attr]
        assert client.stdout.readline().strip() == "READY"  # type: ignore[union-attr]
        time.sleep(1.0)
        loaded_kb = rss_kb(running.pid)
        cpu_before = cpu_seconds(running.pid)
        published: dict[int, int] = {}
        for k in range(1, events + 1):
            published[k] = time.monotonic_ns()
            running.publish(k)
            time.sleep(interval)
        client.stdin.write("10\n")  # type: ignore[union-attr]
        client.stdin.flush()  # type: ignore[union-attr]
        receipts = json.loads(client.stdout.readline())  # type: ignore[union-attr]
        cpu_after = cpu_seconds(running.pid)
        client.wait(30)
    latencies = []
    lost = duplicated = 0
    for subscriber in receipts:
        for k in range(1, events + 1):
            times = subscriber.get(str(k), [])
            if not times:
                lost += 1
                continue
            duplicated += len(times) - 1
            latencies.append((times[0] - published[k]) / 1e6)
    deliveries = len(latencies)
    latencies.sort()
    return {
        "target": target.name,
        "n": n,
        "p50_ms": statistics.median(latencies) if latencies else float("nan"),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        if latencies
        else float("nan"),
        "lost": lost,
        "duplicated": duplicated,
        "cpu_us_per_delivery": (cpu_after - cpu_before) * 1e6 / max(1, deliveries),
        "kb_per_subscriber": (loaded_kb - idle_kb) / n,
    }


# == The dashboard's live channel (DASH) =======================================================
#
# The same `serve` + simulator path as MeetingDashStream, but the subscribers are the detail
# page's WebSocket (`/ws/sessions/<id>/`, logged-in session cookie): each delivery is the
# server-rendered HTML frame (event row + re-rendered regions), rendered once per process per
# event and shared by every viewer. The raw request is the HTTP upgrade followed by the page's
# hello frame (`{"after": <last stored seq>}`, what a freshly rendered page sends), masked as a
# browser would send it.


def _ws_text_frame(payload: bytes) -> bytes:
    """A client→server text frame (a zero mask key is valid and keeps the bytes readable)."""
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\x00\x00\x00\x00" + payload


def _stored_events(db_path: Path, session_id: str) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as db:
        query = "SELECT count(*) FROM sessions_monitor_sessionevent WHERE session_id = ?"
        return int(db.execute(query, (session_id,)).fetchone()[0])


def _last_seq(db_path: Path, session_id: str) -> int:
    import sqlite3

    with contextlib.closing(sqlite3.connect(db_path, timeout=10)) as db:
        query = "SELECT max(seq) FROM sessions_monitor_sessionevent WHERE session_id = ?"
        return int(db.execute(query, (session_id,)).fetchone()[0] or 0)


class DashboardLiveChannel:
    name = "MeetingDash dashboard live channel (ws, HTML)"

    @contextlib.contextmanager
    def start(self) -> Iterator[TargetProcess]:
        with simulated_deployment("dash") as deployment:
            port, session_id = deployment.port, deployment.session_id
            db_path = deployment.tmp / "db.sqlite3"
            session_key = deployment.manage(
                "shell",
                "-c",
                "from django.contrib import auth; "
                "from django.contrib.auth.models import User; "
                "from django.contrib.sessions.backends.db import SessionStore; "
                "u = User.objects.create_user('bench'); s = SessionStore(); "
                "s[auth.SESSION_KEY] = str(u.pk); "
                "s[auth.BACKEND_SESSION_KEY] = 'django.contrib.auth.backends.ModelBackend'; "
                "s[auth.HASH_SESSION_KEY] = u.get_session_auth_hash(); s.create(); "
                "print(s.session_key)",
            ).split()[-1]  # `shell` may print its auto-import note first
            deployment.manage("watch_session", session_id)
            with child(["manage.py", "serve", "--port", str(port)], deployment.env) as server:
                base = f"http://127.0.0.1:{port}"
                wait_http(base + "/healthz")
                deadline = time.monotonic() + 30
                while not _stored_events(db_path, session_id):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the relay never stored the session's first event")
                    time.sleep(0.2)
                request = (
                    f"GET /ws/sessions/{session_id}/ HTTP/1.1\r\n"
                    f"Host: 127.0.0.1:{port}\r\nOrigin: {base}\r\n"
                    "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    "Sec-WebSocket-Key: bWVldGluZ2Rhc2hiZW5jaA==\r\nSec-WebSocket-Version: 13\r\n"
                    f"Cookie: sessionid={session_key}\r\n\r\n"
                ).encode()
                # The page's watermark: a freshly rendered page holds everything stored so far.
                after = _last_seq(db_path, session_id)
                request += _ws_text_frame(b'{"after": %d}' % after)
                yield TargetProcess(server.pid, "127.0.0.1", port, request, deployment.publish)


TARGETS.append(DashboardLiveChannel())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subscribers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--events", type=int, default=12)
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load-client", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        asyncio.run(baseline_server(args.baseline_server))
        return
    if args.load_client:
        host, port, n, events = args.load_client
        request = sys.stdin.readline().rstrip("\n").replace("\\r\\n", "\r\n").encode("latin-1")
        asyncio.run(load_client(host, int(port), request, int(n), int(events)))
        return
    print(
        f"{'target':<44} {'N':>5} {'p50 ms':>8} {'p99 ms':>8} {'lost':>5} {'dup':>4} {'CPU µs/deliv':>12} {'KB/sub':>7}"
    )
    for n in args.subscribers:
        for target in TARGETS:
            r = measure(target, n, args.events, args.interval)
            print(
                f"{r['target']:<44} {r['n']:>5} {r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['lost']:>5}"
                f" {r['duplicated']:>4} {r['cpu_us_per_delivery']:>12.0f} {r['kb_per_subscriber']:>7.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
